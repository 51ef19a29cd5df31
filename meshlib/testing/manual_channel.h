// ManualChannel: an EndpointChannel whose asynchronous calls wait until
// the test answers them (Answer), or they are cancelled; for tests of the
// layers above a transport that run on fake time (testing::FakeExecutor).
//
//   auto ch = std::make_shared<testing::ManualChannel>("10.0.0.1:1");
//   ... a ServiceChannel whose channel_factory returns it makes a call ...
//   ch->Answer(0, absl::StatusCode::kOk);
//
// Threading: not thread-safe; for tests that drive everything from one
// thread (calls, answers and fake time).
#ifndef MESHLIB_TESTING_MANUAL_CHANNEL_H_
#define MESHLIB_TESTING_MANUAL_CHANNEL_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "meshlib/client/endpoint_channel.h"

namespace meshlib::testing {

// An endpoint whose calls wait until the test answers them.
class ManualChannel final : public client::EndpointChannel {
 public:
  struct Pending : client::Cancellable {
    std::string method;
    client::CallCallback done;
    bool cancelled = false;
    void Cancel() override {
      cancelled = true;
      if (done) {
        client::CallResult r;
        r.status = absl::CancelledError("cancelled");
        std::exchange(done, nullptr)(std::move(r));
      }
    }
  };
  explicit ManualChannel(std::string address) : address_(std::move(address)) {}

  client::CallHandle Call(absl::string_view method, absl::string_view, const client::CallOptions&,
                  client::CallCallback done) override {
    auto p = std::make_shared<Pending>();
    p->method = std::string(method);
    p->done = std::move(done);
    calls.push_back(p);
    return client::CallHandle(p);
  }
  client::CallResult CallBlocking(absl::string_view, absl::string_view, const client::CallOptions&) override {
    client::CallResult r;
    r.status = absl::UnimplementedError("asynchronous calls only");
    return r;
  }
  const std::string& address() const override { return address_; }
  int ReadyConnections() const override { return 1; }
  bool Unreachable() const override { return false; }
  size_t CallsOutstanding() const override { return 0; }
  void Connect() override {}

  // Answers the i-th call made here with `code`.
  void Answer(size_t i, absl::StatusCode code) {
    ASSERT_LT(i, calls.size());
    ASSERT_TRUE(calls[i]->done) << "call " << i << " to " << address_ << " already ended";
    client::CallResult r;
    r.status = absl::Status(code, code == absl::StatusCode::kOk ? "" : "failed");
    r.endpoint = address_;
    std::exchange(calls[i]->done, nullptr)(std::move(r));
  }

  std::vector<std::shared_ptr<Pending>> calls;  // the test thread only

 private:
  const std::string address_;
};

}  // namespace meshlib::testing

#endif  // MESHLIB_TESTING_MANUAL_CHANNEL_H_
