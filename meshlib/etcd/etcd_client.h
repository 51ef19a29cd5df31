// EtcdClient: the etcd v3 API through etcd's JSON gateway (HTTP/1.1, as
// served by etcd 3.4 on its client port), on an EventLoop.
//
//   auto client = etcd::EtcdClient::Create(loop, {.endpoints = {"127.0.0.1:2379"}}).value();
//   // on the loop thread:
//   std::unique_ptr<etcd::EtcdCall> call = client->Range(
//       "/meshlib/services/echo/", etcd::PrefixRangeEnd("/meshlib/services/echo/"),
//       [](absl::StatusOr<etcd::RangeResponse> r) { ... });
//   call.reset();  // cancels; the callback then never runs
//
// Keys and values are bytes (base64 on the wire); revisions, lease ids and
// TTLs are int64 (JSON strings on the wire).
//
// Several endpoints (members of one cluster): a request goes to the member
// that answered last, and on a failure another member might not have
// (connect error, timeout, a broken response, HTTP 5xx, UNAVAILABLE) it is
// tried on the next one, each member once per request. Every request this
// client makes is safe to repeat (a put of the same value, a keep-alive, a
// revoke; a lease granted twice leaves an unused lease that expires by
// itself). Errors name the endpoint and the API path; when etcd answered
// with an error, its gRPC code becomes the status code.
//
// Threading: Create is thread-safe; everything else, including destroying
// an EtcdCall or the client, runs on the loop's thread. Callbacks run there
// and may destroy their own call. Destroy every call before the client.
#ifndef MESHLIB_ETCD_ETCD_CLIENT_H_
#define MESHLIB_ETCD_ETCD_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/etcd/etcd_types.h"
#include "meshlib/runtime/event_loop.h"

namespace meshlib::etcd {

struct EtcdClientOptions {
  // Members' client URLs as "host:port" (IP literals or localhost; no
  // scheme: plain HTTP). Required, non-empty.
  std::vector<std::string> endpoints;
  // TCP connect to one member. Default 2s; 1ms to 1min.
  absl::Duration dial_timeout = absl::Seconds(2);
  // One request to one member, from connect to the whole response (for a
  // watch: to its response head). Default 5s; 1ms to 10min.
  absl::Duration request_timeout = absl::Seconds(5);
  // Largest response body, and largest single watch message. Default 16 MiB.
  uint64_t max_response_bytes = 16 * 1024 * 1024;

  absl::Status Validate() const;  // errors name the field
};

// The end of the range of every key starting with `prefix`: the prefix with
// its last byte below 0xff incremented (and what follows dropped); "\0"
// (every key) for an empty prefix or one of 0xff bytes only.
std::string PrefixRangeEnd(absl::string_view prefix);

// A request in progress. Destroying it cancels it.
class EtcdCall {
 public:
  virtual ~EtcdCall() = default;
};

class EtcdClient {
 public:
  template <typename T>
  using Callback = absl::AnyInvocable<void(absl::StatusOr<T>)>;

  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(runtime::EventLoop* loop,
                                                            EtcdClientOptions options);
  ~EtcdClient();

  // Keys in [key, range_end) (range_end empty: just `key`).
  std::unique_ptr<EtcdCall> Range(std::string key, std::string range_end,
                                  Callback<RangeResponse> done);
  // Returns the revision of the put. `lease` 0 = none.
  std::unique_ptr<EtcdCall> Put(std::string key, std::string value, int64_t lease,
                                Callback<int64_t> done);
  // Returns how many keys were deleted.
  std::unique_ptr<EtcdCall> DeleteRange(std::string key, std::string range_end,
                                        Callback<int64_t> done);
  // Drops history before `revision` (physical: waits until it is gone).
  std::unique_ptr<EtcdCall> Compact(int64_t revision, Callback<int64_t> done);
  std::unique_ptr<EtcdCall> LeaseGrant(int64_t ttl_seconds, Callback<Lease> done);
  // One keep-alive; returns the lease's new TTL in seconds, 0 when etcd no
  // longer knows the lease (expired or revoked).
  std::unique_ptr<EtcdCall> LeaseKeepAlive(int64_t id, Callback<int64_t> done);
  // Revokes the lease and deletes its keys. A lease etcd does not know
  // (already expired) counts as revoked: OK.
  std::unique_ptr<EtcdCall> LeaseRevoke(int64_t id, absl::AnyInvocable<void(absl::Status)> done);

  // Watches [key, range_end) from `start_revision` (0 = from now), with
  // progress notifications. `on_response` runs for every message (the
  // first has created=true); `on_end` runs once, last, when the stream
  // fails or ends, always with an error. A message etcd sends as an error,
  // or one that is not valid JSON or not shaped as a watch response, ends
  // the stream.
  struct WatchRequest {
    std::string key;
    std::string range_end;
    int64_t start_revision = 0;
  };
  std::unique_ptr<EtcdCall> Watch(WatchRequest request,
                                  std::function<void(const WatchResponse&)> on_response,
                                  absl::AnyInvocable<void(absl::Status)> on_end);

  // The member requests go to first.
  const std::string& preferred_endpoint() const { return options_.endpoints[preferred_]; }
  const EtcdClientOptions& options() const { return options_; }
  runtime::EventLoop* loop() const { return loop_; }

  class UnaryOp;
  class WatchOp;

 private:
  EtcdClient(runtime::EventLoop* loop, EtcdClientOptions options)
      : loop_(loop), options_(std::move(options)) {}

  friend class UnaryOp;
  friend class WatchOp;

  runtime::EventLoop* const loop_;
  const EtcdClientOptions options_;
  size_t preferred_ = 0;  // loop thread only
};

}  // namespace meshlib::etcd

#endif  // MESHLIB_ETCD_ETCD_CLIENT_H_
