// Plain values of the etcd v3 API, as EtcdClient returns them.
//
// Threading: plain structs.
#ifndef MESHLIB_ETCD_ETCD_TYPES_H_
#define MESHLIB_ETCD_ETCD_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

namespace meshlib::etcd {

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

struct RangeResponse {
  int64_t revision = 0;  // the store's revision when the range was read
  std::vector<KeyValue> kvs;
};

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // for a delete: the key and mod_revision (the deletion's)
};

struct WatchResponse {
  int64_t revision = 0;  // header.revision (0 when etcd leaves it out)
  bool created = false;
  bool canceled = false;
  // Non-zero: the requested start revision was compacted away; the watch
  // is canceled and the caller must read the range again.
  int64_t compact_revision = 0;
  std::string cancel_reason;
  std::vector<WatchEvent> events;
};

struct Lease {
  int64_t id = 0;
  int64_t ttl_seconds = 0;  // as granted (etcd may raise it to its minimum)
};

}  // namespace meshlib::etcd

#endif  // MESHLIB_ETCD_ETCD_TYPES_H_
