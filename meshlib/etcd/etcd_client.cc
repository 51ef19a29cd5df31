#include "meshlib/etcd/etcd_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/etcd/http_client.h"
#include "meshlib/etcd/internal/etcd_json.h"
#include "meshlib/transport/socket.h"
#include "nlohmann/json.hpp"

namespace meshlib::etcd {

using json = nlohmann::json;
using etcd_internal::Base64;
using etcd_internal::ErrorFromBody;
using etcd_internal::Int64Field;
using etcd_internal::ParseJson;

namespace {

// What an error response body may hold before it is cut (it only feeds a
// message).
constexpr size_t kMaxErrorBody = 64 * 1024;

bool Retryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded;
}

absl::Status Prefix(const absl::Status& st, absl::string_view endpoint, absl::string_view path) {
  return absl::Status(st.code(), absl::StrCat("etcd ", endpoint, path, ": ", st.message()));
}

absl::Status MalformedResponse(absl::string_view endpoint, absl::string_view path,
                               const absl::Status& st) {
  return absl::UnavailableError(
      absl::StrCat("etcd ", endpoint, path, ": malformed response: ", st.message()));
}

}  // namespace

absl::Status EtcdClientOptions::Validate() const {
  if (endpoints.empty()) return absl::InvalidArgumentError("endpoints: must not be empty");
  for (size_t i = 0; i < endpoints.size(); ++i) {
    if (auto a = transport::ParseHostPort(endpoints[i]); !a.ok() || a->port() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "endpoints[", i, "]: ", a.ok() ? "port must be between 1 and 65535" : a.status().message()));
    }
  }
  if (dial_timeout < absl::Milliseconds(1) || dial_timeout > absl::Minutes(1)) {
    return absl::InvalidArgumentError("dial_timeout: must be between 1ms and 1m");
  }
  if (request_timeout < absl::Milliseconds(1) || request_timeout > absl::Minutes(10)) {
    return absl::InvalidArgumentError("request_timeout: must be between 1ms and 10m");
  }
  if (max_response_bytes < 1024) {
    return absl::InvalidArgumentError("max_response_bytes: must be at least 1024");
  }
  return absl::OkStatus();
}

std::string PrefixRangeEnd(absl::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    unsigned char last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

// One request/response API call, tried on each member in turn.
class EtcdClient::UnaryOp final : public EtcdCall {
 public:
  // Gets the answer and the endpoint that gave it (for messages).
  using Done = absl::AnyInvocable<void(absl::StatusOr<json>, const std::string& endpoint)>;

  // `stream_body`: the API is a stream (lease keep-alive) whose body holds
  // {"result": ...} or {"error": ...} messages; the first is the answer.
  UnaryOp(EtcdClient* client, std::string path, std::string body, bool stream_body, Done done)
      : client_(client),
        path_(std::move(path)),
        body_(std::move(body)),
        stream_body_(stream_body),
        first_(client->preferred_),
        done_(std::move(done)) {}

  void Attempt() {
    const auto& endpoints = client_->options_.endpoints;
    const size_t index = (first_ + attempts_++) % endpoints.size();
    HttpRequest req;
    req.target = path_;
    req.body = body_;
    HttpCallOptions o;
    o.connect_timeout = client_->options_.dial_timeout;
    o.head_timeout = client_->options_.request_timeout;
    o.total_timeout = client_->options_.request_timeout;
    o.limits.max_body_bytes = client_->options_.max_response_bytes;
    http_ = HttpFetch(client_->loop_, endpoints[index], std::move(req), o,
                      [this, index](absl::StatusOr<HttpResponse> r) {
                        OnResponse(index, std::move(r));
                      });
  }

 private:
  void OnResponse(size_t index, absl::StatusOr<HttpResponse> r) {
    const auto& endpoints = client_->options_.endpoints;
    absl::Status st;
    json body;
    if (!r.ok()) {
      st = r.status();  // the HTTP client's message names the endpoint
    } else {
      absl::string_view text = r->body;
      std::vector<std::string> messages;
      if (stream_body_ && r->status >= 200 && r->status < 300) {
        etcd_internal::JsonStreamSplitter splitter(client_->options_.max_response_bytes);
        absl::Status split = splitter.Append(r->body, &messages);
        if (split.ok() && messages.empty()) split = absl::InvalidArgumentError("empty stream");
        if (split.ok()) text = messages[0];
        else st = MalformedResponse(endpoints[index], path_, split);
      }
      if (st.ok()) {
        absl::StatusOr<json> j = ParseJson(text, "response body");
        st = ErrorFromBody(r->status, j.ok() ? &*j : nullptr, text);
        if (st.ok() && !j.ok()) st = absl::UnavailableError(j.status().message());
        if (st.ok() && stream_body_) {
          const json* result = j->is_object() && j->contains("result") ? &(*j)["result"] : nullptr;
          if (result == nullptr) {
            st = absl::UnavailableError("stream message without \"result\"");
          } else {
            body = *result;
          }
        } else if (st.ok()) {
          body = *std::move(j);
        }
        if (!st.ok()) st = Prefix(st, endpoints[index], path_);
      }
    }
    if (st.ok()) {
      client_->preferred_ = index;
      auto done = std::move(done_);
      done(std::move(body), endpoints[index]);  // may destroy this op: nothing after
      return;
    }
    errors_.push_back(std::string(st.message()));
    const bool server_error = r.ok() && r->status >= 500;
    if ((Retryable(st.code()) || server_error) && attempts_ < endpoints.size()) {
      client_->preferred_ = (index + 1) % endpoints.size();
      Attempt();  // replaces http_, which is finished
      return;
    }
    if (errors_.size() > 1) {
      st = absl::Status(st.code(), absl::StrCat("etcd: ", errors_.size(), " endpoints failed on ",
                                                path_, ": ", absl::StrJoin(errors_, "; ")));
    }
    auto done = std::move(done_);
    done(std::move(st), endpoints[index]);
  }

  EtcdClient* const client_;
  const std::string path_;
  const std::string body_;
  const bool stream_body_;
  const size_t first_;
  Done done_;
  size_t attempts_ = 0;
  std::vector<std::string> errors_;
  std::unique_ptr<HttpCall> http_;
};

// A watch stream: tried on each member until one accepts it, then read
// message by message until it breaks.
class EtcdClient::WatchOp final : public EtcdCall {
 public:
  WatchOp(EtcdClient* client, std::string body,
          std::function<void(const WatchResponse&)> on_response,
          absl::AnyInvocable<void(absl::Status)> on_end)
      : client_(client),
        body_(std::move(body)),
        first_(client->preferred_),
        on_response_(std::move(on_response)),
        on_end_(std::move(on_end)),
        alive_(std::make_shared<bool>(true)) {}
  ~WatchOp() override { *alive_ = false; }

  void Attempt() {
    const auto& endpoints = client_->options_.endpoints;
    index_ = (first_ + attempts_++) % endpoints.size();
    http_status_ = 0;
    error_body_.clear();
    splitter_ = std::make_unique<etcd_internal::JsonStreamSplitter>(
        client_->options_.max_response_bytes);
    HttpRequest req;
    req.target = "/v3/watch";
    req.body = body_;
    HttpCallOptions o;
    o.connect_timeout = client_->options_.dial_timeout;
    o.head_timeout = client_->options_.request_timeout;
    o.total_timeout = absl::InfiniteDuration();
    o.limits.max_body_bytes = 0;  // the splitter bounds each message
    HttpCall::Handlers h;
    h.on_head = [this](const HttpResponseParser& p) { http_status_ = p.status_code(); };
    h.on_body = [this](absl::string_view bytes) { OnBody(bytes); };
    h.on_done = [this](absl::Status st) { OnDone(std::move(st)); };
    http_ = HttpCall::Start(client_->loop_, endpoints[index_], std::move(req), o, std::move(h));
  }

 private:
  const std::string& endpoint() const { return client_->options_.endpoints[index_]; }
  bool streaming() const { return http_status_ >= 200 && http_status_ < 300; }

  void OnBody(absl::string_view bytes) {
    if (!streaming()) {
      size_t room = kMaxErrorBody - std::min(kMaxErrorBody, error_body_.size());
      error_body_.append(bytes.data(), std::min(room, bytes.size()));
      return;
    }
    std::vector<std::string> messages;
    absl::Status st = splitter_->Append(bytes, &messages);
    // Messages that arrived before a broken one still count.
    for (const std::string& m : messages) {
      absl::StatusOr<json> j = ParseJson(m, "watch message");
      if (!j.ok()) return End(Prefix(absl::UnavailableError(j.status().message()), endpoint(),
                                     "/v3/watch"));
      if (absl::Status err = ErrorFromBody(200, &*j, m); !err.ok()) {
        return End(Prefix(err, endpoint(), "/v3/watch"));
      }
      auto result = j->find("result");
      if (result == j->end()) {
        return End(Prefix(absl::UnavailableError("watch message without \"result\""), endpoint(),
                          "/v3/watch"));
      }
      absl::StatusOr<WatchResponse> resp = etcd_internal::ParseWatchResponse(*result);
      if (!resp.ok()) {
        return End(Prefix(absl::UnavailableError(absl::StrCat("malformed watch message: ",
                                                              resp.status().message())),
                          endpoint(), "/v3/watch"));
      }
      if (resp->created) client_->preferred_ = index_;
      std::shared_ptr<bool> alive = alive_;
      auto cb = on_response_;  // the callback may destroy this op, and itself with it
      cb(*resp);
      if (!*alive || ended_) return;
    }
    if (!st.ok()) End(Prefix(absl::Status(st.code() == absl::StatusCode::kInvalidArgument
                                              ? absl::StatusCode::kUnavailable
                                              : st.code(),
                                          absl::StrCat("watch stream: ", st.message())),
                             endpoint(), "/v3/watch"));
  }

  void OnDone(absl::Status st) {
    if (ended_) return;
    const auto& endpoints = client_->options_.endpoints;
    if (!streaming()) {
      // Refused before any message: maybe another member does better.
      if (st.ok()) {
        absl::StatusOr<json> j = ParseJson(error_body_, "error body");
        st = ErrorFromBody(http_status_, j.ok() ? &*j : nullptr, error_body_);
        if (st.ok()) st = absl::UnavailableError("empty response");
        st = Prefix(st, endpoint(), "/v3/watch");
      }
      errors_.push_back(std::string(st.message()));
      if ((Retryable(st.code()) || http_status_ >= 500) && attempts_ < endpoints.size()) {
        client_->preferred_ = (index_ + 1) % endpoints.size();
        Attempt();
        return;
      }
      if (errors_.size() > 1) {
        st = absl::Status(st.code(), absl::StrCat("etcd: ", errors_.size(),
                                                  " endpoints failed on /v3/watch: ",
                                                  absl::StrJoin(errors_, "; ")));
      }
      return End(std::move(st));
    }
    // A stream that was flowing broke: the next watch starts elsewhere.
    if (endpoints.size() > 1) client_->preferred_ = (index_ + 1) % endpoints.size();
    if (st.ok()) {
      st = Prefix(absl::UnavailableError("etcd ended the watch stream"), endpoint(), "/v3/watch");
    }
    End(std::move(st));
  }

  // Last: may destroy this op.
  void End(absl::Status st) {
    ended_ = true;
    http_.reset();  // stops reading (we may be inside its handler: it copes)
    auto cb = std::move(on_end_);
    cb(std::move(st));
  }

  EtcdClient* const client_;
  const std::string body_;
  const size_t first_;
  std::function<void(const WatchResponse&)> on_response_;
  absl::AnyInvocable<void(absl::Status)> on_end_;
  std::shared_ptr<bool> alive_;
  size_t attempts_ = 0;
  size_t index_ = 0;
  int http_status_ = 0;
  bool ended_ = false;
  std::string error_body_;
  std::vector<std::string> errors_;
  std::unique_ptr<etcd_internal::JsonStreamSplitter> splitter_;
  std::unique_ptr<HttpCall> http_;
};

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(runtime::EventLoop* loop,
                                                               EtcdClientOptions options) {
  if (loop == nullptr) return absl::InvalidArgumentError("etcd client needs an event loop");
  if (absl::Status st = options.Validate(); !st.ok()) return st;
  return std::unique_ptr<EtcdClient>(new EtcdClient(loop, std::move(options)));
}

EtcdClient::~EtcdClient() = default;

namespace {

// Starts a unary op whose JSON result `convert` turns into a T.
template <typename T, typename Convert>
std::unique_ptr<EtcdCall> StartUnary(EtcdClient* client, std::string path, json body,
                                     bool stream_body, EtcdClient::Callback<T> done,
                                     Convert convert) {
  auto op = std::make_unique<EtcdClient::UnaryOp>(
      client, path, body.dump(), stream_body,
      [path, done = std::move(done), convert](absl::StatusOr<json> r,
                                              const std::string& endpoint) mutable {
        if (!r.ok()) return done(r.status());
        absl::StatusOr<T> out = convert(*r);
        if (!out.ok()) return done(MalformedResponse(endpoint, path, out.status()));
        done(*std::move(out));
      });
  op->Attempt();
  return op;
}

absl::StatusOr<int64_t> HeaderRevision(const json& body) {
  auto h = body.find("header");
  if (h == body.end() || !h->is_object()) return absl::InvalidArgumentError("no header");
  return Int64Field(*h, "revision");
}

}  // namespace

std::unique_ptr<EtcdCall> EtcdClient::Range(std::string key, std::string range_end,
                                            Callback<RangeResponse> done) {
  json body = {{"key", Base64(key)}};
  if (!range_end.empty()) body["range_end"] = Base64(range_end);
  return StartUnary<RangeResponse>(this, "/v3/kv/range", std::move(body), false, std::move(done),
                                   [](const json& j) { return etcd_internal::ParseRangeResponse(j); });
}

std::unique_ptr<EtcdCall> EtcdClient::Put(std::string key, std::string value, int64_t lease,
                                          Callback<int64_t> done) {
  json body = {{"key", Base64(key)}, {"value", Base64(value)}};
  if (lease != 0) body["lease"] = absl::StrCat(lease);
  return StartUnary<int64_t>(this, "/v3/kv/put", std::move(body), false, std::move(done),
                             HeaderRevision);
}

std::unique_ptr<EtcdCall> EtcdClient::DeleteRange(std::string key, std::string range_end,
                                                  Callback<int64_t> done) {
  json body = {{"key", Base64(key)}};
  if (!range_end.empty()) body["range_end"] = Base64(range_end);
  return StartUnary<int64_t>(this, "/v3/kv/deleterange", std::move(body), false, std::move(done),
                             [](const json& j) { return Int64Field(j, "deleted"); });
}

std::unique_ptr<EtcdCall> EtcdClient::Compact(int64_t revision, Callback<int64_t> done) {
  json body = {{"revision", absl::StrCat(revision)}, {"physical", true}};
  return StartUnary<int64_t>(this, "/v3/kv/compaction", std::move(body), false, std::move(done),
                             HeaderRevision);
}

std::unique_ptr<EtcdCall> EtcdClient::LeaseGrant(int64_t ttl_seconds, Callback<Lease> done) {
  json body = {{"TTL", absl::StrCat(ttl_seconds)}};
  return StartUnary<Lease>(this, "/v3/lease/grant", std::move(body), false, std::move(done),
                           [](const json& j) -> absl::StatusOr<Lease> {
                             auto id = Int64Field(j, "ID");
                             if (!id.ok()) return id.status();
                             auto ttl = Int64Field(j, "TTL");
                             if (!ttl.ok()) return ttl.status();
                             if (*id == 0) return absl::InvalidArgumentError("no lease ID");
                             return Lease{*id, *ttl};
                           });
}

std::unique_ptr<EtcdCall> EtcdClient::LeaseKeepAlive(int64_t id, Callback<int64_t> done) {
  json body = {{"ID", absl::StrCat(id)}};
  return StartUnary<int64_t>(this, "/v3/lease/keepalive", std::move(body), true, std::move(done),
                             [](const json& j) { return Int64Field(j, "TTL"); });
}

std::unique_ptr<EtcdCall> EtcdClient::LeaseRevoke(int64_t id,
                                                  absl::AnyInvocable<void(absl::Status)> done) {
  json body = {{"ID", absl::StrCat(id)}};
  return StartUnary<bool>(this, "/v3/lease/revoke", std::move(body), false,
                          [done = std::move(done)](absl::StatusOr<bool> r) mutable {
                            if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) {
                              return done(r.status());
                            }
                            done(absl::OkStatus());
                          },
                          [](const json&) -> absl::StatusOr<bool> { return true; });
}

std::unique_ptr<EtcdCall> EtcdClient::Watch(WatchRequest request,
                                            std::function<void(const WatchResponse&)> on_response,
                                            absl::AnyInvocable<void(absl::Status)> on_end) {
  json create = {{"key", Base64(request.key)}, {"progress_notify", true}};
  if (!request.range_end.empty()) create["range_end"] = Base64(request.range_end);
  if (request.start_revision > 0) create["start_revision"] = absl::StrCat(request.start_revision);
  json body = {{"create_request", std::move(create)}};
  auto op = std::make_unique<WatchOp>(this, body.dump(), std::move(on_response), std::move(on_end));
  op->Attempt();
  return op;
}

}  // namespace meshlib::etcd
