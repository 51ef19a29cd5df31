// Stub<Req, Resp>: typed calls to one method, over any client::Caller (a
// Channel to one endpoint, a ServiceChannel over a discovered service, a
// mesh Client). A codec (see codec.h) turns the request into bytes and the
// reply's bytes back into a Resp; everything else — balancing, retries,
// deadlines — is the caller's.
//
//   struct Point { int x = 0; int y = 0; };
//   NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Point, x, y)   // so Point travels as JSON
//
//   std::shared_ptr<client::Caller> echo = ...;      // e.g. a ServiceChannel
//   stub::Stub<Point, Point> move(echo, "Geo/Move");
//
//   absl::StatusOr<Point> p = move.Call({1, 2}, stub::CallOptionsBuilder()
//                                                   .Timeout(absl::Milliseconds(250))
//                                                   .Idempotent());
//   if (p.ok()) Use(*p);
//
//   move.Call({1, 2}, {}, [](absl::StatusOr<Point> p) { ... });   // on a reactor thread
//   std::future<absl::StatusOr<Point>> f = move.CallFuture({1, 2});
//   stub::TypedResult<Point> r = move.CallWithDetails({1, 2});    // + metadata, endpoint
//
// Errors. A failed call's status passes through unchanged (the Caller's or
// the server's code and message). A request the codec cannot encode fails
// with INVALID_ARGUMENT ("Geo/Move: cannot encode request: <reason>") and is
// not sent. A reply the codec cannot decode fails with INTERNAL ("Geo/Move:
// cannot decode reply from 127.0.0.1:7001: <reason>"). Nothing throws.
//
// Threading: a Stub is immutable after construction: share it between
// threads, copy it freely (copies share the caller). Callbacks and the
// reply's decoding run where the Caller completes the call — a reactor
// thread, or the calling thread when the call fails before it is sent (an
// encode error included) — so callbacks must not block, and a codec slow
// enough to matter there belongs in the blocking or future calls.
#ifndef MESHLIB_STUB_STUB_H_
#define MESHLIB_STUB_STUB_H_

#include <cassert>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/client/call_types.h"
#include "meshlib/client/caller.h"
#include "meshlib/stub/codec.h"

namespace meshlib::stub {

// A typed call's outcome with the details of its reply.
template <typename Resp>
struct TypedResult {
  // OK, the call's own failure unchanged, INVALID_ARGUMENT when the request
  // could not be encoded, or INTERNAL when the reply could not be decoded.
  absl::Status status;
  // The decoded reply when status is OK; a default-constructed Resp
  // otherwise.
  Resp value{};
  // Response metadata sent by the server (present on failures it answered
  // too, e.g. a retry pushback).
  client::Metadata metadata;
  // Address of the endpoint that answered; empty when no reply was received
  // (connect failure, deadline, cancellation, request not encoded).
  std::string endpoint;

  bool ok() const { return status.ok(); }
  // Value of a response metadata key (the first, if repeated), or "" when
  // absent.
  absl::string_view MetadataValue(absl::string_view key) const {
    for (const auto& [k, v] : metadata) {
      if (k == key) return v;
    }
    return {};
  }
};

// Builds client::CallOptions one setting at a time, for call sites:
//
//   stub.Call(req, stub::CallOptionsBuilder().Timeout(absl::Seconds(1))
//                      .AddMetadata("tenant", "a"));
//
// Converts to client::CallOptions (a copy); Build() says so explicitly.
class CallOptionsBuilder {
 public:
  CallOptionsBuilder() = default;
  // Starts from existing options, e.g. a service's defaults.
  explicit CallOptionsBuilder(client::CallOptions base) : options_(std::move(base)) {}

  // See client::CallOptions for what each setting means.
  CallOptionsBuilder& Timeout(absl::Duration timeout) {
    options_.timeout = timeout;
    return *this;
  }
  CallOptionsBuilder& Deadline(absl::Time deadline) {
    options_.deadline = deadline;
    return *this;
  }
  CallOptionsBuilder& Idempotent(bool idempotent = true) {
    options_.idempotent = idempotent;
    return *this;
  }
  // Sets hash_key and has_hash_key.
  CallOptionsBuilder& HashKey(uint64_t key) {
    options_.hash_key = key;
    options_.has_hash_key = true;
    return *this;
  }
  // Appends one request metadata pair (keys may repeat).
  CallOptionsBuilder& AddMetadata(std::string key, std::string value) {
    options_.metadata.emplace_back(std::move(key), std::move(value));
    return *this;
  }

  const client::CallOptions& options() const { return options_; }
  client::CallOptions Build() const { return options_; }
  // By value, so that `const client::CallOptions& o = CallOptionsBuilder()...`
  // binds to a copy that lives as long as `o`, not to a dead builder.
  operator client::CallOptions() const { return options_; }

 private:
  client::CallOptions options_;
};

// Typed calls to `method` over a Caller, with ReqCodec encoding requests
// and RespCodec decoding replies (by default the types' Codec<T>; see
// codec.h). Resp must be default-constructible and movable.
template <typename Req, typename Resp, typename ReqCodec = Codec<Req>,
          typename RespCodec = Codec<Resp>>
class Stub {
  static_assert(IsCodecFor<ReqCodec, Req>::value,
                "ReqCodec must have static absl::Status Encode(const Req&, std::string*) and "
                "Decode(absl::string_view, Req*)");
  static_assert(IsCodecFor<RespCodec, Resp>::value,
                "RespCodec must have static absl::Status Encode(const Resp&, std::string*) and "
                "Decode(absl::string_view, Resp*)");
  static_assert(std::is_default_constructible_v<Resp>,
                "Resp must be default-constructible: replies are decoded into a fresh Resp");

 public:
  using Request = Req;
  using Response = Resp;
  using Callback = absl::AnyInvocable<void(absl::StatusOr<Resp>)>;
  using DetailsCallback = absl::AnyInvocable<void(TypedResult<Resp>)>;

  // Does not own `caller`, which must outlive the stub and its calls.
  Stub(client::Caller& caller, std::string method)
      : caller_(&caller), method_(std::make_shared<const std::string>(std::move(method))) {}
  // Shares ownership of `caller` (not null); a std::unique_ptr<Channel>
  // converts. The stub keeps it alive, but not its calls' callbacks: a
  // callback never destroys the Caller that runs it.
  Stub(std::shared_ptr<client::Caller> caller, std::string method)
      : owner_(std::move(caller)),
        caller_(owner_.get()),
        method_(std::make_shared<const std::string>(std::move(method))) {
    assert(caller_ != nullptr && "Stub: null caller");
  }

  // Blocking: makes the call and waits for its result.
  absl::StatusOr<Resp> Call(const Req& request, const client::CallOptions& options = {}) const {
    return ToStatusOr(CallWithDetails(request, options));
  }

  // Callback: starts the call; `done` runs exactly once with its result (see
  // the threading note above). The handle cancels the call.
  client::CallHandle Call(const Req& request, const client::CallOptions& options,
                          Callback done) const {
    return Start(request, options, [done = std::move(done)](TypedResult<Resp> r) mutable {
      done(ToStatusOr(std::move(r)));
    });
  }

  // Future: starts the call; the future becomes ready with its result.
  // Waiting on it from a callback (a reactor thread) would deadlock.
  std::future<absl::StatusOr<Resp>> CallFuture(const Req& request,
                                               const client::CallOptions& options = {}) const {
    std::promise<absl::StatusOr<Resp>> promise;
    std::future<absl::StatusOr<Resp>> future = promise.get_future();
    Start(request, options, [promise = std::move(promise)](TypedResult<Resp> r) mutable {
      promise.set_value(ToStatusOr(std::move(r)));
    });
    return future;
  }

  // Blocking, with the reply's metadata and endpoint.
  TypedResult<Resp> CallWithDetails(const Req& request,
                                    const client::CallOptions& options = {}) const {
    std::string bytes;
    if (absl::Status st = Encode(request, &bytes); !st.ok()) return Failed(std::move(st));
    return Complete(caller_->CallBlocking(*method_, bytes, options), *method_);
  }

  // Callback, with the reply's metadata and endpoint.
  client::CallHandle CallWithDetails(const Req& request, const client::CallOptions& options,
                                     DetailsCallback done) const {
    return Start(request, options, std::move(done));
  }

  const std::string& method() const { return *method_; }
  client::Caller& caller() const { return *caller_; }

 private:
  // Encodes and starts the call; `on_result(TypedResult<Resp>)` runs once.
  template <typename OnResult>
  client::CallHandle Start(const Req& request, const client::CallOptions& options,
                           OnResult on_result) const {
    std::string bytes;
    if (absl::Status st = Encode(request, &bytes); !st.ok()) {
      on_result(Failed(std::move(st)));  // on this thread, as for calls failed before sending
      return client::CallHandle();
    }
    // The callback holds the method's name (for its messages), never the
    // stub or the caller.
    return caller_->Call(*method_, bytes, options,
                         [method = method_, on_result = std::move(on_result)](
                             client::CallResult r) mutable {
                           on_result(Complete(std::move(r), *method));
                         });
  }

  absl::Status Encode(const Req& request, std::string* bytes) const {
    absl::Status st = stub_internal::SafeEncode<ReqCodec>(request, bytes);
    if (st.ok()) return st;
    return absl::InvalidArgumentError(
        absl::StrCat(*method_, ": cannot encode request: ", st.message()));
  }

  static TypedResult<Resp> Failed(absl::Status status) {
    TypedResult<Resp> r;
    r.status = std::move(status);
    return r;
  }

  static TypedResult<Resp> Complete(client::CallResult result, absl::string_view method) {
    TypedResult<Resp> r;
    r.metadata = std::move(result.metadata);
    r.endpoint = std::move(result.endpoint);
    if (!result.status.ok()) {
      r.status = std::move(result.status);
      return r;
    }
    absl::Status st = stub_internal::SafeDecode<RespCodec>(result.payload, &r.value);
    if (!st.ok()) {
      r.status = absl::InternalError(
          absl::StrCat(method, ": cannot decode reply from ",
                       r.endpoint.empty() ? "an unknown endpoint" : r.endpoint, ": ",
                       st.message()));
      r.value = Resp();  // no half-decoded value
    }
    return r;
  }

  static absl::StatusOr<Resp> ToStatusOr(TypedResult<Resp> r) {
    if (!r.status.ok()) return std::move(r.status);
    return std::move(r.value);
  }

  std::shared_ptr<client::Caller> owner_;  // null when the stub does not own the caller
  client::Caller* caller_;
  std::shared_ptr<const std::string> method_;
};

// A stub whose request and reply travel as JSON, for any types nlohmann_json
// converts (int, std::vector<T>, ...), not only those with ADL
// to_json/from_json.
template <typename Req, typename Resp>
using JsonStub = Stub<Req, Resp, JsonCodec<Req>, JsonCodec<Resp>>;

}  // namespace meshlib::stub

#endif  // MESHLIB_STUB_STUB_H_
