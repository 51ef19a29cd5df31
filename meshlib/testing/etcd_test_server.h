// A real, single-member etcd for tests: /usr/bin/etcd (Debian's
// etcd-server) on free loopback ports with a fresh data directory, plus
// synchronous helpers that read and write it through the JSON gateway.
//
//   testing::EtcdTestServer etcd;           // fails the test if etcd cannot start
//   ASSERT_TRUE(etcd.ok());
//   ASSERT_TRUE(etcd.Put("/svc/127.0.0.1:1", "{...}").ok());
//   etcd.Kill();                          // SIGKILL: as a crash
//   ASSERT_TRUE(etcd.Restart());          // same ports and data: the same cluster
//
// etcd logs to a file in its data directory (never to a pipe that could
// fill up); failures print its tail.
//
// Threading: one test thread.
#ifndef MESHLIB_TESTING_ETCD_TEST_SERVER_H_
#define MESHLIB_TESTING_ETCD_TEST_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "meshlib/etcd/etcd_client.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::testing {

class EtcdTestServer {
 public:
  static constexpr const char* kEtcd = "/usr/bin/etcd";
  static constexpr const char* kEtcdctl = "/usr/bin/etcdctl";

  // Starts etcd and waits until it serves requests; on failure the test
  // fails (ADD_FAILURE, with etcd's log) and ok() is false.
  EtcdTestServer();
  ~EtcdTestServer();

  bool ok() const { return ready_; }
  // "127.0.0.1:PORT", the client port.
  const std::string& endpoint() const { return endpoint_; }
  // SIGKILL and reap (a crash: no clean shutdown).
  void Kill();
  // Starts again on the same ports and data directory and waits until ready.
  bool Restart();
  // The last part of etcd's log, for failure messages.
  std::string LogTail() const;

  // Through the JSON gateway, waiting for the answer (at most 30s).
  absl::StatusOr<int64_t> Put(const std::string& key, const std::string& value,
                              int64_t lease = 0);
  absl::StatusOr<int64_t> Delete(const std::string& key);
  absl::StatusOr<etcd::RangeResponse> GetPrefix(const std::string& prefix);
  absl::StatusOr<int64_t> Compact(int64_t revision);
  absl::StatusOr<etcd::Lease> Grant(int64_t ttl_seconds);
  absl::Status Revoke(int64_t lease);
  // The current revision of the store.
  absl::StatusOr<int64_t> Revision();

  // Runs etcdctl against this server; returns its stdout and sets `*rc`.
  std::string Etcdctl(std::vector<std::string> args, int* rc = nullptr);

 private:
  bool Launch();
  bool WaitReady(absl::Duration timeout);
  template <typename T, typename StartFn>
  absl::StatusOr<T> Sync(StartFn start);

  int client_port_ = 0;
  int peer_port_ = 0;
  std::string dir_;
  std::string endpoint_;
  bool ready_ = false;
  std::unique_ptr<testing::Subprocess> proc_;
  std::unique_ptr<runtime::EventLoop> loop_;
  std::unique_ptr<etcd::EtcdClient> client_;
};

}  // namespace meshlib::testing

#endif  // MESHLIB_TESTING_ETCD_TEST_SERVER_H_
