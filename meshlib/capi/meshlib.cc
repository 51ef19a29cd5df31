// The C ABI over meshlib::mesh (see meshlib.h for its rules). Every entry
// point checks its arguments, catches whatever the C++ side could throw
// (allocation failure), and turns every failure into a meshlib_error_t.
#include "meshlib/capi/meshlib.h"

#include "meshlib/capi/internal.h"

#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "meshlib/config/config.h"
#include "meshlib/core/deadline_context.h"
#include "meshlib/core/trace_context.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/runtime/thread_pool.h"
#include "meshlib/server/etcd_registration.h"
#include "meshlib/server/server.h"
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

struct meshlib_server_call {
  std::shared_ptr<meshlib::server::ServerCall> call;
};

struct meshlib_server {
  // Set at creation.
  meshlib::etcd::RegistrarOptions registration;
  bool register_in_etcd = false;
  std::string name;
  int handler_threads = 4;

  std::mutex mu;
  // Both null once stopped. The pool outlives the server's shutdown, so
  // that no call is handed to a pool that is gone.
  std::unique_ptr<meshlib::server::Server> server;  // guarded by mu
  std::unique_ptr<meshlib::runtime::ThreadPool> pool;  // guarded by mu
  bool started = false;  // guarded by mu
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
      meshlib_error_free(c.error);
    }
    if (fd >= 0) close(fd);
  }
  // A completion arrives (any thread).
  void Push(meshlib_completion_t c) {
    std::lock_guard<std::mutex> lock(mu);
    if (closed) {
      delete c.reply;
      meshlib_error_free(c.error);
      return;
    }
    try {
      items.push_back(c);
    } catch (...) {  // out of memory: the completion cannot be kept
      delete c.reply;
      meshlib_error_free(c.error);
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

// The error reported when there is no memory for another: made when the
// library loads, never freed (meshlib_error_free ignores it), so that a
// failure is never reported as a success (NULL) for lack of memory.
meshlib_error_t* const kOutOfMemory =
    new meshlib_error{MESHLIB_RESOURCE_EXHAUSTED, "out of memory"};

meshlib_error_t* Error(meshlib_code_t code, std::string message) {
  try {
    return new meshlib_error{code, std::move(message)};
  } catch (...) {
    return kOutOfMemory;
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
  // Reporting the failure may itself run out of memory: then kOutOfMemory.
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    try {
      return Error(MESHLIB_RESOURCE_EXHAUSTED, absl::StrCat(function, ": out of memory"));
    } catch (...) {
      return kOutOfMemory;
    }
  } catch (const std::exception& e) {
    try {
      return Error(MESHLIB_INTERNAL, absl::StrCat(function, ": ", e.what()));
    } catch (...) {
      return kOutOfMemory;
    }
  } catch (...) {
    try {
      return Error(MESHLIB_INTERNAL, absl::StrCat(function, ": unexpected failure"));
    } catch (...) {
      return kOutOfMemory;
    }
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
  if (o.has_interrupt_fd != 0) {
    if (o.interrupt_fd < 0) {
      return Error(MESHLIB_INVALID_ARGUMENT,
                   absl::StrCat("options.interrupt_fd: not a descriptor (", o.interrupt_fd, ")"));
    }
    out->interrupt_fd = o.interrupt_fd;
  }
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

// Reads away what a non-blocking interrupt descriptor holds.
void Drain(int fd) {
  char buf[256];
  for (int i = 0; i < 16; ++i) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < static_cast<ssize_t>(sizeof buf)) return;  // empty, EAGAIN, or an error
  }
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
  // Exactly one outcome reaches the caller: should Call throw (out of
  // memory) after it took the callback, the first of the callback and the
  // error return claims the call, and the other stays silent.
  auto claimed = std::make_shared<std::atomic<bool>>(false);
  meshlib::client::CallHandle h;
  try {
    h = client->client->Call(
        method, absl::string_view(static_cast<const char*>(request), request_len), o,
        [deliver = std::move(deliver), claimed](CallResult r) mutable {
          if (claimed->exchange(true, std::memory_order_acq_rel)) return;
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
            error = kOutOfMemory;
          }
          deliver(reply, error);
        });
  } catch (...) {
    if (!claimed->exchange(true, std::memory_order_acq_rel)) throw;  // Guard reports it
    // The callback ran already: the call is complete, and a success here.
  }
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

void meshlib_error_free(meshlib_error_t* error) {
  if (error != kOutOfMemory) delete error;
}

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
    if (o.interrupt_fd >= 0) Drain(o.interrupt_fd);  // only what arrives from now on counts
    CallResult r = client->client->CallBlocking(
        method, absl::string_view(static_cast<const char*>(request), request_len), o);
    if (o.interrupt_fd >= 0 && r.status.code() == absl::StatusCode::kCancelled) {
      Drain(o.interrupt_fd);
    }
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
  if (timeout_ms != 0 && !ready()) {
    // A loopback reply often arrives within tens of microseconds: waiting
    // that long without sleeping spares the wake-up of an idle CPU, which
    // costs more than the round trip (as Channel::CallBlocking does).
    // Yielding, not spinning, so a thread sharing this CPU runs at once.
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    while (!ready() && std::chrono::steady_clock::now() < spin_until) {
      lock.unlock();
      sched_yield();
      lock.lock();
    }
  }
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
    meshlib_error_free(c.error);
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

namespace meshlib::capi {

meshlib_mesh_t* WrapMesh(std::unique_ptr<mesh::Mesh> mesh) {
  auto* handle = new meshlib_mesh;
  handle->mesh = std::move(mesh);
  return handle;
}

}  // namespace meshlib::capi

// --- the server ---

namespace {

// The server whose handler this thread is running, if any.
thread_local const meshlib_server* tls_handler_server = nullptr;

using meshlib::server::ServerCall;

// Stops `s` (leaving etcd, draining for `drain`), then waits for its
// handlers. Not on one of its handler threads.
void StopServer(meshlib_server* s, absl::Duration drain) {
  std::unique_ptr<meshlib::server::Server> server;
  std::unique_ptr<meshlib::runtime::ThreadPool> pool;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    server = std::move(s->server);
    pool = std::move(s->pool);
  }
  if (server != nullptr) server->Shutdown(drain);
  server.reset();  // no handler is handed a call after this
  pool.reset();    // waits for the handlers still running
}

}  // namespace

extern "C" {

meshlib_error_t* meshlib_server_new(const meshlib_server_options_t* options,
                                    meshlib_server_t** out) {
  return Guard("meshlib_server_new", [&]() -> meshlib_error_t* {
    if (out == nullptr) return Null("out");
    meshlib_server_options_t o;
    std::memset(&o, 0, sizeof(o));
    if (options != nullptr) {
      if (options->struct_size < sizeof(uint32_t)) {
        return Error(MESHLIB_INVALID_ARGUMENT,
                     "options.struct_size: set it to sizeof(meshlib_server_options_t)");
      }
      std::memcpy(&o, options, std::min<size_t>(options->struct_size, sizeof(o)));
    }
    if (o.handler_threads < 0 || o.handler_threads > 1024) {
      return Error(MESHLIB_INVALID_ARGUMENT,
                   absl::StrCat("options.handler_threads: must be 0..1024 (got ",
                                o.handler_threads, ")"));
    }
    if (o.io_threads < 0 || o.io_threads > 1024) {
      return Error(MESHLIB_INVALID_ARGUMENT,
                   absl::StrCat("options.io_threads: must be 0..1024 (got ", o.io_threads, ")"));
    }
    auto handle = std::make_unique<meshlib_server>();
    if (o.handler_threads > 0) handle->handler_threads = o.handler_threads;
    if (o.name != nullptr) handle->name = o.name;
    const bool has_etcd = o.etcd_endpoints != nullptr && o.etcd_endpoints[0] != '\0';
    const bool has_prefix = o.etcd_prefix != nullptr && o.etcd_prefix[0] != '\0';
    if (has_etcd != has_prefix) {
      return Error(MESHLIB_INVALID_ARGUMENT,
                   "options.etcd_endpoints and options.etcd_prefix go together");
    }
    if (has_etcd) {
      meshlib::etcd::RegistrarOptions& r = handle->registration;
      r.etcd.endpoints = absl::StrSplit(o.etcd_endpoints, ',', absl::SkipEmpty());
      if (absl::Status st = r.etcd.Validate(); !st.ok()) {
        return Error(MESHLIB_INVALID_ARGUMENT,
                     absl::StrCat("options.etcd_endpoints: ", st.message()));
      }
      r.prefix = o.etcd_prefix;
      if (o.etcd_ttl_ns < 0) {
        return Error(MESHLIB_INVALID_ARGUMENT, "options.etcd_ttl_ns: must be >= 0");
      }
      if (o.etcd_ttl_ns > 0) {
        r.ttl = absl::Nanoseconds(o.etcd_ttl_ns);
        if (r.ttl < absl::Seconds(1) || r.ttl > absl::Hours(1)) {
          return Error(MESHLIB_INVALID_ARGUMENT,
                       "options.etcd_ttl_ns: must be between 1 s and 1 h");
        }
      }
      if (o.zone != nullptr) r.endpoint.zone = o.zone;
      if (o.weight > 0) r.endpoint.weight = o.weight;
      handle->register_in_etcd = true;
    }
    meshlib::server::ServerOptions so;
    so.io_threads = o.io_threads;
    handle->server = std::make_unique<meshlib::server::Server>(so);
    handle->pool = std::make_unique<meshlib::runtime::ThreadPool>(handle->handler_threads,
                                                                  "meshlib-handler");
    *out = handle.release();
    return nullptr;
  });
}

meshlib_error_t* meshlib_server_handle(meshlib_server_t* server, const char* method,
                                       meshlib_handler handler, void* user_data) {
  return Guard("meshlib_server_handle", [&]() -> meshlib_error_t* {
    if (server == nullptr) return Null("server");
    if (method == nullptr) return Null("method");
    if (handler == nullptr) return Null("handler");
    std::lock_guard<std::mutex> lock(server->mu);
    if (server->server == nullptr) {
      return Error(MESHLIB_FAILED_PRECONDITION,
                   absl::StrCat("server stopped: cannot handle ", method));
    }
    if (server->started) {
      return Error(MESHLIB_FAILED_PRECONDITION,
                   absl::StrCat("server started: handle ", method, " before meshlib_server_start"));
    }
    // The pool outlives every call the server hands over (StopServer).
    meshlib::runtime::ThreadPool* pool = server->pool.get();
    const meshlib_server* owner = server;
    return FromStatus(server->server->RegisterAsync(
        method, [pool, owner, handler, user_data](std::shared_ptr<ServerCall> call) {
          // On the reactor: hand the call to a handler thread.
          pool->Submit([owner, handler, user_data, call = std::move(call)]() mutable {
            if (call->IsCancelled()) {
              // Its caller is gone (or the server stopped) while it waited.
              call->Finish(absl::CancelledError("call cancelled before its handler ran"));
              return;
            }
            meshlib_server_call* c = nullptr;
            try {
              c = new meshlib_server_call{call};
            } catch (...) {
              call->Finish(absl::ResourceExhaustedError("server out of memory"));
              return;
            }
            meshlib::core::ScopedDeadline deadline(call->deadline());
            const std::optional<meshlib::core::TraceContext> trace =
                meshlib::core::TraceContext::FromMetadata(call->metadata());
            meshlib::core::ScopedTrace trace_scope(trace ? &*trace : nullptr);
            tls_handler_server = owner;
            handler(user_data, c);
            tls_handler_server = nullptr;
          });
        }));
  });
}

meshlib_error_t* meshlib_server_start(meshlib_server_t* server, const char* address,
                                      char** bound) {
  return Guard("meshlib_server_start", [&]() -> meshlib_error_t* {
    if (server == nullptr) return Null("server");
    if (address == nullptr) return Null("address");
    std::lock_guard<std::mutex> lock(server->mu);
    if (server->server == nullptr) return Error(MESHLIB_FAILED_PRECONDITION, "server stopped");
    if (server->started) return Error(MESHLIB_FAILED_PRECONDITION, "server already started");
    char* bound_copy = nullptr;
    absl::StatusOr<int> port = server->server->Start(address);
    if (!port.ok()) return FromStatus(port.status());
    server->started = true;
    const std::string actual = server->server->address();
    if (server->register_in_etcd) {
      meshlib::etcd::RegistrarOptions r = server->registration;
      r.endpoint.metadata["name"] = server->name.empty() ? actual : server->name;
      // Leaves etcd at the start of Shutdown, before the drain.
      auto registrar = meshlib::server::RegisterInEtcd(*server->server, std::move(r));
      if (!registrar.ok()) return FromStatus(registrar.status());
    }
    if (bound != nullptr) {
      bound_copy = CopyString(actual);
      *bound = bound_copy;
    }
    return nullptr;
  });
}

meshlib_error_t* meshlib_server_stop(meshlib_server_t* server, int64_t drain_ns) {
  return Guard("meshlib_server_stop", [&]() -> meshlib_error_t* {
    if (server == nullptr) return Null("server");
    if (drain_ns < 0) {
      return Error(MESHLIB_INVALID_ARGUMENT,
                   absl::StrCat("drain_ns: must be >= 0 (got ", drain_ns, ")"));
    }
    if (tls_handler_server == server) {
      return Error(MESHLIB_FAILED_PRECONDITION,
                   "meshlib_server_stop: called from one of the server's own handlers");
    }
    StopServer(server, absl::Nanoseconds(drain_ns));
    return nullptr;
  });
}

void meshlib_server_free(meshlib_server_t* server) {
  if (server == nullptr) return;
  if (tls_handler_server == server) {
    // Stopping waits for this very handler to return: stop elsewhere.
    try {
      std::thread([server] {
        StopServer(server, absl::ZeroDuration());
        delete server;
      }).detach();
      return;
    } catch (...) {
      // No thread to be had: the server is leaked rather than deadlocked.
      return;
    }
  }
  StopServer(server, absl::ZeroDuration());
  delete server;
}

meshlib_error_t* meshlib_server_stats_json(meshlib_server_t* server, char** out) {
  return Guard("meshlib_server_stats_json", [&]() -> meshlib_error_t* {
    if (server == nullptr) return Null("server");
    if (out == nullptr) return Null("out");
    std::lock_guard<std::mutex> lock(server->mu);
    if (server->server == nullptr) return Error(MESHLIB_FAILED_PRECONDITION, "server stopped");
    const meshlib::server::ServerStats st = server->server->stats();
    nlohmann::json j;
    j["address"] = server->server->address();
    j["calls"] = st.calls;
    j["active_calls"] = st.active_calls;
    j["rejected_expired"] = st.rejected_expired;
    j["shed"] = st.shed;
    *out = CopyString(j.dump());
    return nullptr;
  });
}

const char* meshlib_server_call_method(const meshlib_server_call_t* call) {
  return call == nullptr ? "" : call->call->method().c_str();
}

const uint8_t* meshlib_server_call_request(const meshlib_server_call_t* call, size_t* len) {
  if (call == nullptr || call->call->request().empty()) {
    if (len != nullptr) *len = 0;
    return nullptr;
  }
  if (len != nullptr) *len = call->call->request().size();
  return reinterpret_cast<const uint8_t*>(call->call->request().data());
}

size_t meshlib_server_call_metadata_count(const meshlib_server_call_t* call) {
  return call == nullptr ? 0 : call->call->metadata().size();
}

meshlib_metadata_entry_t meshlib_server_call_metadata(const meshlib_server_call_t* call,
                                                      size_t i) {
  meshlib_metadata_entry_t e = {nullptr, nullptr};
  if (call == nullptr || i >= call->call->metadata().size()) return e;
  e.key = call->call->metadata()[i].first.c_str();
  e.value = call->call->metadata()[i].second.c_str();
  return e;
}

const char* meshlib_server_call_peer(const meshlib_server_call_t* call) {
  return call == nullptr ? "" : call->call->peer().c_str();
}

int64_t meshlib_server_call_remaining_ns(const meshlib_server_call_t* call) {
  if (call == nullptr) return 0;
  if (call->call->deadline() == absl::InfiniteFuture()) return INT64_MAX;
  return absl::ToInt64Nanoseconds(call->call->deadline() - absl::Now());
}

int32_t meshlib_server_call_cancelled(const meshlib_server_call_t* call) {
  return call != nullptr && call->call->IsCancelled() ? 1 : 0;
}

meshlib_error_t* meshlib_server_call_add_metadata(meshlib_server_call_t* call, const char* key,
                                                  const char* value) {
  return Guard("meshlib_server_call_add_metadata", [&]() -> meshlib_error_t* {
    if (call == nullptr) return Null("call");
    if (key == nullptr) return Null("key");
    if (value == nullptr) return Null("value");
    call->call->AddResponseMetadata(key, value);
    return nullptr;
  });
}

meshlib_error_t* meshlib_server_call_finish(meshlib_server_call_t* call, meshlib_code_t code,
                                            const char* message, const void* response,
                                            size_t response_len) {
  if (call == nullptr) return Null("call");
  std::unique_ptr<meshlib_server_call> owned(call);
  return Guard("meshlib_server_call_finish", [&]() -> meshlib_error_t* {
    if (code < MESHLIB_OK || code > MESHLIB_UNAUTHENTICATED) {
      owned->call->Finish(absl::UnknownError(
          absl::StrCat("the handler answered an invalid code ", code)));
      return Error(MESHLIB_INVALID_ARGUMENT,
                   absl::StrCat("code: ", code, " is not a MESHLIB_* code"));
    }
    if (response == nullptr && response_len > 0) {
      owned->call->Finish(absl::InternalError("the handler answered a NULL response"));
      return Null("response");
    }
    if (code == MESHLIB_OK) {
      owned->call->Finish(absl::OkStatus(),
                          std::string(static_cast<const char*>(response), response_len));
    } else {
      owned->call->Finish(absl::Status(static_cast<absl::StatusCode>(code),
                                       message != nullptr ? message : ""));
    }
    return nullptr;
  });
}

}  // extern "C"
