#include "meshlib/testing/etcd_test_server.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/core/sync.h"

namespace meshlib::testing {

EtcdTestServer::EtcdTestServer() {
  if (access(kEtcd, X_OK) != 0) {
    ADD_FAILURE() << kEtcd << " not found: these tests need a real etcd "
                  << "(apt-get install etcd-server etcd-client)";
    return;
  }
  client_port_ = testing::PickFreePort();
  peer_port_ = testing::PickFreePort();
  while (peer_port_ == client_port_) peer_port_ = testing::PickFreePort();
  dir_ = testing::MakeTempDir("etcd");
  endpoint_ = absl::StrCat("127.0.0.1:", client_port_);
  loop_ = runtime::EventLoop::Create("etcd-test").value();
  etcd::EtcdClientOptions o;
  o.endpoints = {endpoint_};
  o.dial_timeout = absl::Seconds(1);
  o.request_timeout = absl::Seconds(10);
  client_ = etcd::EtcdClient::Create(loop_.get(), o).value();
  ready_ = Launch() && WaitReady(absl::Seconds(30));
}

EtcdTestServer::~EtcdTestServer() {
  if (loop_) loop_->RunAndWait([this] { client_.reset(); });
  Kill();
}

bool EtcdTestServer::Launch() {
  std::string client_url = absl::StrCat("http://127.0.0.1:", client_port_);
  std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port_);
  proc_ = std::make_unique<testing::Subprocess>(std::vector<std::string>{
      kEtcd,
      "--name=meshlib-test",
      "--data-dir=" + dir_ + "/data",
      "--listen-client-urls=" + client_url,
      "--advertise-client-urls=" + client_url,
      "--listen-peer-urls=" + peer_url,
      "--initial-advertise-peer-urls=" + peer_url,
      "--initial-cluster=meshlib-test=" + peer_url,
      "--initial-cluster-state=new",
      // A single member elects itself after one election timeout: keep it short.
      "--heartbeat-interval=25",
      "--election-timeout=250",
      "--logger=zap",
      "--log-outputs=" + dir_ + "/etcd.log",
  });
  return proc_->pid() > 0;
}

bool EtcdTestServer::WaitReady(absl::Duration timeout) {
  absl::Time give_up = absl::Now() + timeout;
  absl::Status last;
  while (absl::Now() < give_up) {
    if (!proc_->Running()) {
      ADD_FAILURE() << "etcd exited while starting; stderr: " << proc_->err()
                    << "\nlog:\n" << LogTail();
      return false;
    }
    auto r = Revision();
    if (r.ok()) return true;
    last = r.status();
    absl::SleepFor(absl::Milliseconds(50));
  }
  ADD_FAILURE() << "etcd not ready at " << endpoint_ << " within " << timeout << ": " << last
                << "\nlog:\n" << LogTail();
  return false;
}

void EtcdTestServer::Kill() {
  if (!proc_) return;
  proc_->Signal(SIGKILL);
  proc_->Wait(absl::Seconds(10));
  proc_.reset();
  ready_ = false;
}

bool EtcdTestServer::Restart() {
  Kill();
  ready_ = Launch() && WaitReady(absl::Seconds(30));
  return ready_;
}

std::string EtcdTestServer::LogTail() const {
  std::ifstream f(dir_ + "/etcd.log");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  constexpr size_t kTail = 4000;
  return s.size() > kTail ? s.substr(s.size() - kTail) : s;
}

template <typename T, typename StartFn>
absl::StatusOr<T> EtcdTestServer::Sync(StartFn start) {
  if (!client_) return absl::FailedPreconditionError("etcd test server not set up");
  auto done = std::make_shared<core::Notification>();
  auto out = std::make_shared<absl::StatusOr<T>>(absl::UnknownError("no answer"));
  std::unique_ptr<etcd::EtcdCall> call;
  loop_->RunAndWait([&] {
    call = start([done, out](absl::StatusOr<T> r) {
      *out = std::move(r);
      done->Notify();
    });
  });
  bool finished = done->WaitForNotificationWithTimeout(absl::Seconds(30));
  loop_->RunAndWait([&] { call.reset(); });
  if (!finished) return absl::DeadlineExceededError("etcd test request: no answer in 30s");
  return *out;
}

absl::StatusOr<int64_t> EtcdTestServer::Put(const std::string& key, const std::string& value,
                                            int64_t lease) {
  return Sync<int64_t>([&](etcd::EtcdClient::Callback<int64_t> cb) {
    return client_->Put(key, value, lease, std::move(cb));
  });
}

absl::StatusOr<int64_t> EtcdTestServer::Delete(const std::string& key) {
  return Sync<int64_t>([&](etcd::EtcdClient::Callback<int64_t> cb) {
    return client_->DeleteRange(key, "", std::move(cb));
  });
}

absl::StatusOr<etcd::RangeResponse> EtcdTestServer::GetPrefix(const std::string& prefix) {
  return Sync<etcd::RangeResponse>([&](etcd::EtcdClient::Callback<etcd::RangeResponse> cb) {
    return client_->Range(prefix, etcd::PrefixRangeEnd(prefix), std::move(cb));
  });
}

absl::StatusOr<int64_t> EtcdTestServer::Compact(int64_t revision) {
  return Sync<int64_t>([&](etcd::EtcdClient::Callback<int64_t> cb) {
    return client_->Compact(revision, std::move(cb));
  });
}

absl::StatusOr<etcd::Lease> EtcdTestServer::Grant(int64_t ttl_seconds) {
  return Sync<etcd::Lease>([&](etcd::EtcdClient::Callback<etcd::Lease> cb) {
    return client_->LeaseGrant(ttl_seconds, std::move(cb));
  });
}

absl::Status EtcdTestServer::Revoke(int64_t lease) {
  return Sync<bool>([&](etcd::EtcdClient::Callback<bool> cb) {
           return client_->LeaseRevoke(lease, [cb = std::move(cb)](absl::Status st) mutable {
             if (!st.ok()) return cb(st);
             cb(true);
           });
         })
      .status();
}

absl::StatusOr<int64_t> EtcdTestServer::Revision() {
  auto r = Sync<etcd::RangeResponse>([&](etcd::EtcdClient::Callback<etcd::RangeResponse> cb) {
    return client_->Range("/meshlib-test-server/ready", "", std::move(cb));
  });
  if (!r.ok()) return r.status();
  return r->revision;
}

std::string EtcdTestServer::Etcdctl(std::vector<std::string> args, int* rc) {
  std::vector<std::string> argv = {kEtcdctl, "--endpoints=http://" + endpoint_};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::Subprocess p(std::move(argv));
  int code = p.Wait(absl::Seconds(30));
  if (rc != nullptr) *rc = code;
  if (code != 0 && rc == nullptr) ADD_FAILURE() << "etcdctl failed (" << code << "): " << p.err();
  return p.out();
}

}  // namespace meshlib::testing
