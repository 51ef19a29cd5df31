// The C ABI over meshlib::mesh (see meshlib.h for its rules). Every entry
// point checks its arguments, catches whatever the C++ side could throw
// (allocation failure), and turns every failure into a meshlib_error_t.
#include "meshlib/capi/meshlib.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "meshlib/config/config.h"
#include "meshlib/mesh/mesh.h"
#include "nlohmann/json.hpp"

struct meshlib_error {
  meshlib_code_t code;
  std::string message;
};

struct meshlib_reply {
  std::string payload;
  std::string endpoint;
  std::vector<std::pair<std::string, std::string>> metadata;
};

struct meshlib_mesh {
  std::mutex mu;
  std::unique_ptr<meshlib::mesh::Mesh> mesh;  // guarded by mu; null once closed
};

struct meshlib_client {
  std::shared_ptr<meshlib::mesh::Client> client;
};

struct meshlib_call {
  meshlib::client::CallHandle handle;
};

namespace {

// What a queue handle and the calls completing into it share: the queue
// outlives its handle while calls are still to complete into it.
struct QueueState {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<meshlib_completion_t> items;  // guarded by mu
  bool closed = false;                      // guarded by mu: the handle is freed
  int fd = -1;  // eventfd: counter 1 while `items` is not empty, else 0

  ~QueueState() {
    for (meshlib_completion_t& c : items) {
      delete c.reply;
      delete c.error;
    }
    if (fd >= 0) close(fd);
  }
  // A completion arrives (any thread).
  void Push(meshlib_completion_t c) {
    std::lock_guard<std::mutex> lock(mu);
    if (closed) {
      delete c.reply;
      delete c.error;
      return;
    }
    try {
      items.push_back(c);
    } catch (...) {  // out of memory: the completion cannot be kept
      delete c.reply;
      delete c.error;
      return;
    }
    if (items.size() == 1) {
      uint64_t one = 1;
      // Cannot fail short of a full counter, which one write per empty
      // queue rules out.
      ssize_t ignored = write(fd, &one, sizeof one);
      (void)ignored;
    }
    cv.notify_all();
  }
};

}  // namespace

struct meshlib_queue {
  std::shared_ptr<QueueState> state;
};

namespace {

using meshlib::client::CallOptions;
using meshlib::client::CallResult;

meshlib_error_t* Error(meshlib_code_t code, std::string message) {
  try {
    return new meshlib_error{code, std::move(message)};
  } catch (...) {
    // Out of memory while reporting an error: a static one would have to be
    // freed too, so the caller sees a null status only if even this fails.
    return nullptr;
  }
}

meshlib_error_t* FromStatus(const absl::Status& s) {
  if (s.ok()) return nullptr;
  return Error(static_cast<meshlib_code_t>(s.code()), std::string(s.message()));
}

meshlib_error_t* Null(const char* what) {
  return Error(MESHLIB_INVALID_ARGUMENT, absl::StrCat(what, " is NULL"));
}

// Runs `fn` (which returns a meshlib_error_t*), turning any exception into
// an INTERNAL error.
template <typename Fn>
meshlib_error_t* Guard(const char* function, Fn fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return Error(MESHLIB_RESOURCE_EXHAUSTED, absl::StrCat(function, ": out of memory"));
  } catch (const std::exception& e) {
    return Error(MESHLIB_INTERNAL, absl::StrCat(function, ": ", e.what()));
  } catch (...) {
    return Error(MESHLIB_INTERNAL, absl::StrCat(function, ": unexpected failure"));
  }
}

char* CopyString(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out == nullptr) throw std::bad_alloc();
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  return out;
}

// The call's options, or the error that makes them unusable.
meshlib_error_t* ToOptions(const meshlib_call_options_t* in, CallOptions* out) {
  if (in == nullptr) return nullptr;
  // Read only the fields the caller's struct has (an older header's
  // struct is shorter); the rest keep their defaults.
  meshlib_call_options_t o;
  std::memset(&o, 0, sizeof(o));
  if (in->struct_size < sizeof(uint32_t)) {
    return Error(MESHLIB_INVALID_ARGUMENT,
                 "options.struct_size: set it to sizeof(meshlib_call_options_t)");
  }
  std::memcpy(&o, in, std::min<size_t>(in->struct_size, sizeof(o)));
  if (o.timeout_ns < 0) {
    return Error(MESHLIB_INVALID_ARGUMENT,
                 absl::StrCat("options.timeout_ns: must be >= 0 (got ", o.timeout_ns, ")"));
  }
  out->timeout = absl::Nanoseconds(o.timeout_ns);
  out->idempotent = o.idempotent != 0;
  out->has_hash_key = o.has_hash_key != 0;
  out->hash_key = o.hash_key;
  if (o.metadata_count > 0 && o.metadata == nullptr) return Null("options.metadata");
  for (size_t i = 0; i < o.metadata_count; ++i) {
    const meshlib_metadata_entry_t& e = o.metadata[i];
    if (e.key == nullptr || e.value == nullptr) {
      return Error(MESHLIB_INVALID_ARGUMENT,
                   absl::StrCat("options.metadata[", i, "]: key and value must not be NULL"));
    }
    out->metadata.emplace_back(e.key, e.value);
  }
  return nullptr;
}

meshlib_reply_t* ToReply(CallResult r) {
  auto* reply = new meshlib_reply;
  reply->payload = std::move(r.payload);
  reply->endpoint = std::move(r.endpoint);
  reply->metadata = std::move(r.metadata);
  return reply;
}

meshlib_error_t* NewMesh(absl::StatusOr<std::unique_ptr<meshlib::mesh::Mesh>> m,
                         meshlib_mesh_t** out) {
  if (!m.ok()) return FromStatus(m.status());
  auto* handle = new meshlib_mesh;
  handle->mesh = *std::move(m);
  *out = handle;
  return nullptr;
}

// The common part of meshlib_client_call_async and _queued: checks the
// arguments, starts the call, and hands its outcome to `deliver` as a
// reply or an error (exactly one; the receiver owns it).
template <typename Deliver>
meshlib_error_t* StartAsync(meshlib_client_t* client, const char* method, const void* request,
                            size_t request_len, const meshlib_call_options_t* options,
                            meshlib_call_t** call, Deliver deliver) {
  if (client == nullptr) return Null("client");
  if (method == nullptr) return Null("method");
  if (request == nullptr && request_len > 0) return Null("request");
  CallOptions o;
  if (meshlib_error_t* bad = ToOptions(options, &o)) return bad;
  // Allocated before the call starts, so that nothing can fail after it.
  std::unique_ptr<meshlib_call> handle(call != nullptr ? new meshlib_call : nullptr);
  meshlib::client::CallHandle h = client->client->Call(
      method, absl::string_view(static_cast<const char*>(request), request_len), o,
      [deliver = std::move(deliver)](CallResult r) mutable {
        meshlib_reply_t* reply = nullptr;
        meshlib_error_t* error = nullptr;
        try {
          if (r.status.ok()) {
            reply = ToReply(std::move(r));
          } else {
            error = FromStatus(r.status);
          }
        } catch (...) {
          delete reply;
          reply = nullptr;
          error = Error(MESHLIB_RESOURCE_EXHAUSTED, "out of memory completing the call");
        }
        deliver(reply, error);
      });
  if (handle != nullptr) {
    handle->handle = std::move(h);
    *call = handle.release();
  }
  return nullptr;
}

}  // namespace

extern "C" {

uint32_t meshlib_version(void) { return MESHLIB_VERSION; }

#define MESHLIB_CAPI_STR2(x) #x
#define MESHLIB_CAPI_STR(x) MESHLIB_CAPI_STR2(x)

const char* meshlib_version_string(void) {
  return MESHLIB_CAPI_STR(MESHLIB_VERSION_MAJOR) "." MESHLIB_CAPI_STR(
      MESHLIB_VERSION_MINOR) "." MESHLIB_CAPI_STR(MESHLIB_VERSION_PATCH);
}

const char* meshlib_code_name(meshlib_code_t code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",         "UNKNOWN",       "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",  "UNIMPLEMENTED",    "INTERNAL",
      "UNAVAILABLE", "DATA_LOSS",       "UNAUTHENTICATED"};
  if (code < 0 || code > MESHLIB_UNAUTHENTICATED) return "UNKNOWN_CODE";
  return kNames[code];
}

meshlib_code_t meshlib_error_code(const meshlib_error_t* error) {
  return error == nullptr ? MESHLIB_OK : error->code;
}

const char* meshlib_error_message(const meshlib_error_t* error) {
  return error == nullptr ? "" : error->message.c_str();
}

void meshlib_error_free(meshlib_error_t* error) { delete error; }

void meshlib_free(void* p) { std::free(p); }

meshlib_error_t* meshlib_mesh_new_json(const char* json, size_t len, meshlib_mesh_t** out) {
  return Guard("meshlib_mesh_new_json", [&]() -> meshlib_error_t* {
    if (json == nullptr) return Null("json");
    if (out == nullptr) return Null("out");
    auto cfg = meshlib::config::ParseMeshConfig(absl::string_view(json, len));
    if (!cfg.ok()) return FromStatus(cfg.status());
    return NewMesh(meshlib::mesh::Mesh::Create(*std::move(cfg)), out);
  });
}

meshlib_error_t* meshlib_mesh_new_file(const char* path, meshlib_mesh_t** out) {
  return Guard("meshlib_mesh_new_file", [&]() -> meshlib_error_t* {
    if (path == nullptr) return Null("path");
    if (out == nullptr) return Null("out");
    return NewMesh(meshlib::mesh::Mesh::Open(path), out);
  });
}

void meshlib_mesh_close(meshlib_mesh_t* mesh) {
  if (mesh == nullptr) return;
  std::unique_ptr<meshlib::mesh::Mesh> m;
  {
    std::lock_guard<std::mutex> lock(mesh->mu);
    m = std::move(mesh->mesh);
  }
  m.reset();  // ends its calls (CANCELLED); outside the lock
}

void meshlib_mesh_free(meshlib_mesh_t* mesh) {
  if (mesh == nullptr) return;
  meshlib_mesh_close(mesh);
  delete mesh;
}

meshlib_error_t* meshlib_mesh_client(meshlib_mesh_t* mesh, const char* service,
                                     meshlib_client_t** out) {
  return Guard("meshlib_mesh_client", [&]() -> meshlib_error_t* {
    if (mesh == nullptr) return Null("mesh");
    if (service == nullptr) return Null("service");
    if (out == nullptr) return Null("out");
    std::lock_guard<std::mutex> lock(mesh->mu);
    if (mesh->mesh == nullptr) {
      return Error(MESHLIB_FAILED_PRECONDITION,
                   absl::StrCat("mesh closed: no client for ", service));
    }
    if (mesh->mesh->config()->Find(service) == nullptr) {
      return Error(MESHLIB_NOT_FOUND,
                   absl::StrCat("service ", service, " is not in the configuration"));
    }
    auto c = mesh->mesh->Client(service);
    if (!c.ok()) return FromStatus(c.status());
    *out = new meshlib_client{*std::move(c)};
    return nullptr;
  });
}

void meshlib_client_free(meshlib_client_t* client) { delete client; }

meshlib_error_t* meshlib_client_describe(meshlib_client_t* client, char** out) {
  return Guard("meshlib_client_describe", [&]() -> meshlib_error_t* {
    if (client == nullptr) return Null("client");
    if (out == nullptr) return Null("out");
    *out = CopyString(client->client->Describe());
    return nullptr;
  });
}

meshlib_error_t* meshlib_client_stats_json(meshlib_client_t* client, char** out) {
  return Guard("meshlib_client_stats_json", [&]() -> meshlib_error_t* {
    if (client == nullptr) return Null("client");
    if (out == nullptr) return Null("out");
    meshlib::mesh::ClientStats s = client->client->stats();
    nlohmann::json j;
    j["service"] = client->client->service();
    j["generation"] = s.generation;
    j["calls"] = s.calls;
    j["unrouted"] = s.unrouted;
    j["retries"] = s.retries;
    j["transparent_retries"] = s.transparent_retries;
    j["retries_denied"] = s.retries_denied;
    j["hedges"] = s.hedges;
    j["hedges_denied"] = s.hedges_denied;
    j["breaker_overflows"] = s.breaker_overflows;
    j["pushback_stops"] = s.pushback_stops;
    j["faults_delayed"] = s.faults_delayed;
    j["faults_aborted"] = s.faults_aborted;
    j["ejections"] = s.ejections;
    j["policy"] = s.policy;
    nlohmann::json endpoints = nlohmann::json::array();
    for (const auto& e : client->client->EndpointStates()) {
      endpoints.push_back({{"address", e.address},
                           {"healthy", e.healthy},
                           {"outlier", e.outlier},
                           {"connected", e.connected},
                           {"in_flight", e.in_flight},
                           {"calls", e.calls},
                           {"failures", e.failures},
                           {"latency_ewma_us", absl::ToDoubleMicroseconds(e.latency_ewma)}});
    }
    j["endpoints"] = std::move(endpoints);
    *out = CopyString(j.dump());
    return nullptr;
  });
}

const uint8_t* meshlib_reply_payload(const meshlib_reply_t* reply, size_t* len) {
  if (reply == nullptr || reply->payload.empty()) {
    if (len != nullptr) *len = 0;
    return nullptr;
  }
  if (len != nullptr) *len = reply->payload.size();
  return reinterpret_cast<const uint8_t*>(reply->payload.data());
}

const char* meshlib_reply_endpoint(const meshlib_reply_t* reply) {
  return reply == nullptr ? "" : reply->endpoint.c_str();
}

size_t meshlib_reply_metadata_count(const meshlib_reply_t* reply) {
  return reply == nullptr ? 0 : reply->metadata.size();
}

meshlib_metadata_entry_t meshlib_reply_metadata(const meshlib_reply_t* reply, size_t i) {
  meshlib_metadata_entry_t e = {nullptr, nullptr};
  if (reply == nullptr || i >= reply->metadata.size()) return e;
  e.key = reply->metadata[i].first.c_str();
  e.value = reply->metadata[i].second.c_str();
  return e;
}

void meshlib_reply_free(meshlib_reply_t* reply) { delete reply; }

meshlib_error_t* meshlib_client_call(meshlib_client_t* client, const char* method,
                                     const void* request, size_t request_len,
                                     const meshlib_call_options_t* options,
                                     meshlib_reply_t** reply) {
  return Guard("meshlib_client_call", [&]() -> meshlib_error_t* {
    if (client == nullptr) return Null("client");
    if (method == nullptr) return Null("method");
    if (request == nullptr && request_len > 0) return Null("request");
    if (reply == nullptr) return Null("reply");
    CallOptions o;
    if (meshlib_error_t* bad = ToOptions(options, &o)) return bad;
    CallResult r = client->client->CallBlocking(
        method, absl::string_view(static_cast<const char*>(request), request_len), o);
    if (!r.status.ok()) return FromStatus(r.status);
    *reply = ToReply(std::move(r));
    return nullptr;
  });
}

meshlib_error_t* meshlib_client_call_async(meshlib_client_t* client, const char* method,
                                           const void* request, size_t request_len,
                                           const meshlib_call_options_t* options,
                                           meshlib_call_callback callback, void* user_data,
                                           meshlib_call_t** call) {
  return Guard("meshlib_client_call_async", [&]() -> meshlib_error_t* {
    if (callback == nullptr) return Null("callback");
    return StartAsync(client, method, request, request_len, options, call,
                      [callback, user_data](meshlib_reply_t* reply, meshlib_error_t* error) {
                        callback(user_data, reply, error);
                      });
  });
}

meshlib_error_t* meshlib_queue_new(meshlib_queue_t** out) {
  return Guard("meshlib_queue_new", [&]() -> meshlib_error_t* {
    if (out == nullptr) return Null("out");
    auto state = std::make_shared<QueueState>();
    state->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (state->fd < 0) {
      return Error(MESHLIB_RESOURCE_EXHAUSTED,
                   absl::StrCat("meshlib_queue_new: eventfd: ", std::strerror(errno)));
    }
    *out = new meshlib_queue{std::move(state)};
    return nullptr;
  });
}

int meshlib_queue_fd(const meshlib_queue_t* queue) {
  return queue == nullptr ? -1 : queue->state->fd;
}

size_t meshlib_queue_poll(meshlib_queue_t* queue, meshlib_completion_t* out, size_t max,
                          int32_t timeout_ms) {
  if (queue == nullptr || out == nullptr || max == 0) return 0;
  QueueState& q = *queue->state;
  std::unique_lock<std::mutex> lock(q.mu);
  auto ready = [&q] { return !q.items.empty(); };
  if (timeout_ms < 0) {
    q.cv.wait(lock, ready);
  } else if (timeout_ms > 0) {
    q.cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), ready);
  }
  size_t n = 0;
  while (n < max && !q.items.empty()) {
    out[n++] = q.items.front();
    q.items.pop_front();
  }
  if (n > 0 && q.items.empty()) {
    uint64_t count;
    ssize_t ignored = read(q.fd, &count, sizeof count);  // not readable until the next one
    (void)ignored;
  }
  return n;
}

void meshlib_queue_free(meshlib_queue_t* queue) {
  if (queue == nullptr) return;
  std::deque<meshlib_completion_t> left;
  {
    std::lock_guard<std::mutex> lock(queue->state->mu);
    queue->state->closed = true;
    left.swap(queue->state->items);
  }
  for (meshlib_completion_t& c : left) {
    delete c.reply;
    delete c.error;
  }
  delete queue;
}

meshlib_error_t* meshlib_client_call_queued(meshlib_client_t* client, const char* method,
                                            const void* request, size_t request_len,
                                            const meshlib_call_options_t* options,
                                            meshlib_queue_t* queue, uint64_t tag,
                                            meshlib_call_t** call) {
  return Guard("meshlib_client_call_queued", [&]() -> meshlib_error_t* {
    if (queue == nullptr) return Null("queue");
    return StartAsync(client, method, request, request_len, options, call,
                      [state = queue->state, tag](meshlib_reply_t* reply, meshlib_error_t* error) {
                        meshlib_completion_t c;
                        c.tag = tag;
                        c.reply = reply;
                        c.error = error;
                        state->Push(c);
                      });
  });
}

void meshlib_call_cancel(meshlib_call_t* call) {
  if (call == nullptr) return;
  call->handle.Cancel();
}

void meshlib_call_free(meshlib_call_t* call) { delete call; }

}  // extern "C"
