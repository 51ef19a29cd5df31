/*
 * meshlib.h: the C ABI of meshlib, for C programs and for other languages'
 * bindings (the Python package in meshlib/python is one).
 *
 *   meshlib_mesh_t* mesh = NULL;
 *   meshlib_error_t* err = meshlib_mesh_new_json(json, strlen(json), &mesh);
 *   if (err) { fprintf(stderr, "%s\n", meshlib_error_message(err)); meshlib_error_free(err); }
 *   meshlib_client_t* echo = NULL;
 *   err = meshlib_mesh_client(mesh, "echo", &echo);
 *   meshlib_reply_t* reply = NULL;
 *   err = meshlib_client_call(echo, "Echo/Say", "hi", 2, NULL, &reply);
 *   ... meshlib_reply_payload(reply, &len) ...
 *   meshlib_reply_free(reply);
 *   meshlib_client_free(echo);
 *   meshlib_mesh_free(mesh);
 *
 * THE RULES
 *
 * Errors. Every function that can fail returns a meshlib_error_t*: NULL
 * means success; anything else is an error object that the caller owns and
 * frees with meshlib_error_free. meshlib_error_code gives its code, one of
 * the MESHLIB_* codes below (the same set and numbers as gRPC's and
 * absl::StatusCode; codes are only ever added), and meshlib_error_message
 * a readable message naming what was wrong (for a configuration, the field
 * path: "services.echo.retry.max_attempts: must be >= 1"). Bad arguments
 * (a NULL handle, a NULL required pointer, a closed mesh) are errors with
 * MESHLIB_INVALID_ARGUMENT or MESHLIB_FAILED_PRECONDITION, never a crash.
 * Out parameters are written only on success. No C++ exception crosses
 * this boundary.
 *
 * Ownership. Every object a function hands out is the caller's, freed with
 * the function named for it: meshlib_error_free, meshlib_reply_free,
 * meshlib_call_free, meshlib_client_free, meshlib_mesh_free,
 * meshlib_queue_free, meshlib_server_free, and meshlib_free for strings
 * (char*) the library returns. A server call handed to a handler is freed
 * by meshlib_server_call_finish. Pointers into an
 * object (a reply's payload, an error's message) live as long as the
 * object. Buffers the caller passes in are copied before the function
 * returns, unless stated otherwise.
 *
 * Threads. Every function is thread-safe, and handles may be shared between
 * threads and freed on any thread. Completion callbacks run on one of
 * meshlib's reactor threads: they must return quickly and must not block
 * (no blocking call, no waiting on a lock held across a meshlib call); a
 * blocking call made there fails at once with MESHLIB_FAILED_PRECONDITION.
 * A callback may free the objects it is given, and any handle. Server
 * handlers run on the server's own handler threads instead, and may block.
 *
 * Calls in flight. Each asynchronous call completes exactly once: its
 * callback runs once, with a reply or an error. Cancelling a call, or
 * closing the mesh, completes calls not yet done with MESHLIB_CANCELLED.
 * Freeing a client lets its calls finish (bounded by their deadlines);
 * freeing or closing the mesh ends them. Freeing a call handle does not
 * cancel the call. Closing twice, or freeing NULL, does nothing.
 *
 * Symbols. Only meshlib_* symbols are exported (libmeshlib.so is linked
 * with a version script). MESHLIB_VERSION is this header's version;
 * meshlib_version() the library's, so a binding can check that they agree.
 */
#ifndef MESHLIB_CAPI_MESHLIB_H_
#define MESHLIB_CAPI_MESHLIB_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MESHLIB_API __attribute__((visibility("default")))
#else
#define MESHLIB_API
#endif

/* 0xMMmmpp: major, minor, patch. */
#define MESHLIB_VERSION_MAJOR 0
#define MESHLIB_VERSION_MINOR 1
#define MESHLIB_VERSION_PATCH 0
#define MESHLIB_VERSION                                                  \
  ((MESHLIB_VERSION_MAJOR << 16) | (MESHLIB_VERSION_MINOR << 8) | \
   MESHLIB_VERSION_PATCH)

/* The library's version, as MESHLIB_VERSION, and as text ("0.1.0"). */
MESHLIB_API uint32_t meshlib_version(void);
MESHLIB_API const char* meshlib_version_string(void);

/* Status codes: those of gRPC and absl::StatusCode, with the same numbers. */
typedef int32_t meshlib_code_t;
#define MESHLIB_OK 0
#define MESHLIB_CANCELLED 1
#define MESHLIB_UNKNOWN 2
#define MESHLIB_INVALID_ARGUMENT 3
#define MESHLIB_DEADLINE_EXCEEDED 4
#define MESHLIB_NOT_FOUND 5
#define MESHLIB_ALREADY_EXISTS 6
#define MESHLIB_PERMISSION_DENIED 7
#define MESHLIB_RESOURCE_EXHAUSTED 8
#define MESHLIB_FAILED_PRECONDITION 9
#define MESHLIB_ABORTED 10
#define MESHLIB_OUT_OF_RANGE 11
#define MESHLIB_UNIMPLEMENTED 12
#define MESHLIB_INTERNAL 13
#define MESHLIB_UNAVAILABLE 14
#define MESHLIB_DATA_LOSS 15
#define MESHLIB_UNAUTHENTICATED 16

/* The canonical name of a code ("UNAVAILABLE"); "UNKNOWN_CODE" for others.
 * Static storage: do not free. */
MESHLIB_API const char* meshlib_code_name(meshlib_code_t code);

/* --- errors --- */

typedef struct meshlib_error meshlib_error_t;

MESHLIB_API meshlib_code_t meshlib_error_code(const meshlib_error_t* error);
/* NUL-terminated; lives as long as the error. */
MESHLIB_API const char* meshlib_error_message(const meshlib_error_t* error);
MESHLIB_API void meshlib_error_free(meshlib_error_t* error);

/* Frees a string the library returned. */
MESHLIB_API void meshlib_free(void* p);

/* --- a mesh --- */

typedef struct meshlib_mesh meshlib_mesh_t;

/* A mesh from a mesh.json document held in memory (`len` bytes; need not
 * be NUL-terminated). */
MESHLIB_API meshlib_error_t* meshlib_mesh_new_json(const char* json, size_t len,
                                                   meshlib_mesh_t** out);
/* A mesh from a mesh.json file, which is then watched: valid changes are
 * applied, invalid ones rejected (the mesh keeps its configuration). */
MESHLIB_API meshlib_error_t* meshlib_mesh_new_file(const char* path, meshlib_mesh_t** out);
/* Ends every call in flight with MESHLIB_CANCELLED and refuses new ones;
 * handles stay valid until freed. Idempotent. */
MESHLIB_API void meshlib_mesh_close(meshlib_mesh_t* mesh);
/* Closes the mesh and frees the handle. Clients made from it fail their
 * calls with MESHLIB_CANCELLED afterwards (free them too). */
MESHLIB_API void meshlib_mesh_free(meshlib_mesh_t* mesh);

/* --- a client of one service --- */

typedef struct meshlib_client meshlib_client_t;

/* The client of `service`, which must be in the configuration
 * (MESHLIB_NOT_FOUND otherwise). */
MESHLIB_API meshlib_error_t* meshlib_mesh_client(meshlib_mesh_t* mesh, const char* service,
                                                 meshlib_client_t** out);
MESHLIB_API void meshlib_client_free(meshlib_client_t* client);
/* The client's stack, one layer per line, with its settings (free with
 * meshlib_free). */
MESHLIB_API meshlib_error_t* meshlib_client_describe(meshlib_client_t* client, char** out);
/* The client's counters and endpoints as a JSON object (free with
 * meshlib_free). */
MESHLIB_API meshlib_error_t* meshlib_client_stats_json(meshlib_client_t* client, char** out);

/* --- calls --- */

typedef struct meshlib_metadata_entry {
  const char* key;   /* NUL-terminated */
  const char* value; /* NUL-terminated */
} meshlib_metadata_entry_t;

/* Options of one call. Zero them (or pass NULL for all defaults) and set
 * `struct_size` to sizeof(meshlib_call_options_t): fields added later are
 * then read as their defaults by a newer library. */
typedef struct meshlib_call_options {
  uint32_t struct_size;
  /* The call's timeout in nanoseconds; 0: the service's `timeout`. */
  int64_t timeout_ns;
  /* Non-zero: the call is safe to repeat (retries, hedging). */
  int32_t idempotent;
  /* Non-zero: `hash_key` is the key for hash-based balancing. */
  int32_t has_hash_key;
  uint64_t hash_key;
  /* Request metadata. */
  const meshlib_metadata_entry_t* metadata;
  size_t metadata_count;
  /* Blocking calls (meshlib_client_call) only: when `has_interrupt_fd` is
   * non-zero, the call ends with MESHLIB_CANCELLED within about a
   * millisecond of `interrupt_fd` becoming readable (a pipe that a signal
   * handler writes to, an eventfd), so that a caller waiting for it stays
   * interruptible (e.g. a signal handler's wake-up pipe). It must be
   * non-blocking: the call first reads away what it holds (what arrived
   * before the call does not interrupt it), and reads away what
   * interrupted it. */
  int32_t has_interrupt_fd;
  int32_t interrupt_fd;
} meshlib_call_options_t;

typedef struct meshlib_reply meshlib_reply_t;

/* The reply's payload (`*len` bytes, not NUL-terminated; NULL if empty). */
MESHLIB_API const uint8_t* meshlib_reply_payload(const meshlib_reply_t* reply, size_t* len);
/* The address of the endpoint that answered. */
MESHLIB_API const char* meshlib_reply_endpoint(const meshlib_reply_t* reply);
MESHLIB_API size_t meshlib_reply_metadata_count(const meshlib_reply_t* reply);
/* The i-th reply metadata entry; NULL key and value when out of range. */
MESHLIB_API meshlib_metadata_entry_t meshlib_reply_metadata(const meshlib_reply_t* reply,
                                                            size_t i);
MESHLIB_API void meshlib_reply_free(meshlib_reply_t* reply);

/* A blocking call: waits for the reply, its deadline, or the mesh closing.
 * On success `*reply` is the caller's. */
MESHLIB_API meshlib_error_t* meshlib_client_call(meshlib_client_t* client, const char* method,
                                                 const void* request, size_t request_len,
                                                 const meshlib_call_options_t* options,
                                                 meshlib_reply_t** reply);

typedef struct meshlib_call meshlib_call_t;

/* How an asynchronous call ends: exactly one of `reply` and `error` is
 * non-NULL, and the callback owns it (free it, or keep it). Runs on a
 * reactor thread (see THE RULES), possibly before meshlib_client_call_async
 * returns. */
typedef void (*meshlib_call_callback)(void* user_data, meshlib_reply_t* reply,
                                      meshlib_error_t* error);

/* An asynchronous call. `callback` runs once, whatever happens, unless this
 * returns an error (then it never runs). `call`, if not NULL, receives a
 * handle to cancel the call with; free it with meshlib_call_free (which
 * does not cancel). */
MESHLIB_API meshlib_error_t* meshlib_client_call_async(meshlib_client_t* client,
                                                       const char* method, const void* request,
                                                       size_t request_len,
                                                       const meshlib_call_options_t* options,
                                                       meshlib_call_callback callback,
                                                       void* user_data, meshlib_call_t** call);
/* --- a completion queue, for foreign event loops --- */

/* Asynchronous calls can complete into a queue instead of a callback, so
 * that no code of the caller's runs on meshlib's threads: the caller
 * watches the queue's file descriptor in its own event loop (epoll, poll,
 * asyncio's add_reader, libuv's uv_poll) and takes completions with
 * meshlib_queue_poll on its own thread. */
typedef struct meshlib_queue meshlib_queue_t;

typedef struct meshlib_completion {
  uint64_t tag;           /* as given to meshlib_client_call_queued */
  meshlib_reply_t* reply; /* exactly one of reply and error is non-NULL; */
  meshlib_error_t* error; /* the caller owns it */
} meshlib_completion_t;

MESHLIB_API meshlib_error_t* meshlib_queue_new(meshlib_queue_t** out);
/* Readable while the queue holds completions, and only then (level-
 * triggered: it stays readable until they are all taken). Owned by the
 * queue: do not read, write or close it. -1 for a NULL queue. */
MESHLIB_API int meshlib_queue_fd(const meshlib_queue_t* queue);
/* Takes up to `max` completions into `out`, waiting up to `timeout_ms` for
 * the first (0: do not wait; negative: until one arrives). Returns how
 * many it took. Any thread; a queue is usually polled by one. */
MESHLIB_API size_t meshlib_queue_poll(meshlib_queue_t* queue, meshlib_completion_t* out,
                                      size_t max, int32_t timeout_ms);
/* Frees the queue and the completions in it. Calls still to complete into
 * it complete all the same; their replies are freed unseen. */
MESHLIB_API void meshlib_queue_free(meshlib_queue_t* queue);

/* An asynchronous call that completes into `queue` with `tag`. As
 * meshlib_client_call_async otherwise. */
MESHLIB_API meshlib_error_t* meshlib_client_call_queued(meshlib_client_t* client,
                                                        const char* method, const void* request,
                                                        size_t request_len,
                                                        const meshlib_call_options_t* options,
                                                        meshlib_queue_t* queue, uint64_t tag,
                                                        meshlib_call_t** call);

/* Completes the call with MESHLIB_CANCELLED if it has not completed, and
 * cancels its attempts on their servers. */
MESHLIB_API void meshlib_call_cancel(meshlib_call_t* call);
MESHLIB_API void meshlib_call_free(meshlib_call_t* call);

/* --- a server: a service written in C (or another language) in the mesh --- */

/* A server answers meshlib calls by method name with the caller's handlers,
 * and can register itself in etcd as echo_server does (docs/discovery.md),
 * so that a mesh's clients find it:
 *
 *   meshlib_server_t* server = NULL;
 *   meshlib_server_new(NULL, &server);
 *   meshlib_server_handle(server, "Echo/Say", on_say, NULL);
 *   char* address = NULL;
 *   meshlib_server_start(server, "127.0.0.1:0", &address);   (free with meshlib_free)
 *   ...
 *   meshlib_server_stop(server, 1000000000);   (drain for up to 1 s)
 *   meshlib_server_free(server);
 *
 * Handlers run on the server's handler threads, which may block. A
 * handler owns the call it is given until it finishes it with
 * meshlib_server_call_finish, exactly once, before it returns or later from
 * any thread; a call never finished is answered only when its caller gives
 * up, and its handle leaks. A call whose caller has gone (cancelled, out of
 * time, disconnected) can still be finished: the answer goes nowhere.
 * Methods nobody handles are answered MESHLIB_UNIMPLEMENTED. */
typedef struct meshlib_server meshlib_server_t;
typedef struct meshlib_server_call meshlib_server_call_t;

/* Zero it (or pass NULL for all defaults) and set `struct_size` to
 * sizeof(meshlib_server_options_t). */
typedef struct meshlib_server_options {
  uint32_t struct_size;
  /* Threads that run handlers; 0: 4. */
  int32_t handler_threads;
  /* Reactor (I/O) threads; 0: one per CPU. */
  int32_t io_threads;
  /* Registration in etcd: "HOST:PORT[,HOST:PORT...]" (members of one
   * cluster), or NULL for none. With it, `etcd_prefix` is required
   * ("/meshlib/services/echo/"); the key is the prefix and the bound
   * address, the value the endpoint (address, weight, zone, and the
   * metadata "name"), on a lease of `etcd_ttl_ns` (0: 10 s) kept alive
   * while the server runs and revoked when it stops. */
  const char* etcd_endpoints;
  const char* etcd_prefix;
  int64_t etcd_ttl_ns;
  /* The endpoint's zone ("" or NULL: none), weight (0: 1) and name (NULL:
   * the bound address). */
  const char* zone;
  uint32_t weight;
  const char* name;
} meshlib_server_options_t;

/* The handler of a method: `call` is the handler's (see above). */
typedef void (*meshlib_handler)(void* user_data, meshlib_server_call_t* call);

MESHLIB_API meshlib_error_t* meshlib_server_new(const meshlib_server_options_t* options,
                                                meshlib_server_t** out);
/* Handles `method` with `handler`, before meshlib_server_start.
 * MESHLIB_ALREADY_EXISTS for a method handled already. */
MESHLIB_API meshlib_error_t* meshlib_server_handle(meshlib_server_t* server, const char* method,
                                                   meshlib_handler handler, void* user_data);
/* Listens on `address` ("HOST:PORT"; port 0 picks a free one) and serves;
 * with etcd options, registers in the background (an unreachable etcd is
 * retried, never an error here). `bound`, if not NULL, receives the
 * address bound ("127.0.0.1:41234"; free with meshlib_free). Once. */
MESHLIB_API meshlib_error_t* meshlib_server_start(meshlib_server_t* server, const char* address,
                                                  char** bound);
/* Leaves etcd, stops accepting, tells clients to go elsewhere, waits up to
 * `drain_ns` for calls in flight, then closes every connection; waits for
 * handlers still running to return. Blocking. Not from a handler of this
 * server (MESHLIB_FAILED_PRECONDITION). Stopping twice does nothing. */
MESHLIB_API meshlib_error_t* meshlib_server_stop(meshlib_server_t* server, int64_t drain_ns);
/* Stops the server (no drain) if it runs, and frees it. From one of its own
 * handlers, the stop happens on another thread once the handler returns. */
MESHLIB_API void meshlib_server_free(meshlib_server_t* server);
/* Counters as a JSON object (free with meshlib_free): calls,
 * active_calls, rejected_expired, shed. */
MESHLIB_API meshlib_error_t* meshlib_server_stats_json(meshlib_server_t* server, char** out);

/* What a call carries. Pointers live as long as the call handle. */
MESHLIB_API const char* meshlib_server_call_method(const meshlib_server_call_t* call);
MESHLIB_API const uint8_t* meshlib_server_call_request(const meshlib_server_call_t* call,
                                                       size_t* len);
MESHLIB_API size_t meshlib_server_call_metadata_count(const meshlib_server_call_t* call);
MESHLIB_API meshlib_metadata_entry_t meshlib_server_call_metadata(
    const meshlib_server_call_t* call, size_t i);
/* The caller's address. */
MESHLIB_API const char* meshlib_server_call_peer(const meshlib_server_call_t* call);
/* Nanoseconds until the caller stops waiting; INT64_MAX when it set no
 * deadline, <= 0 once it passed. */
MESHLIB_API int64_t meshlib_server_call_remaining_ns(const meshlib_server_call_t* call);
/* Non-zero once the caller cancelled, its deadline passed, or it
 * disconnected: a handler doing long work should stop. */
MESHLIB_API int32_t meshlib_server_call_cancelled(const meshlib_server_call_t* call);
/* Adds reply metadata, before meshlib_server_call_finish. */
MESHLIB_API meshlib_error_t* meshlib_server_call_add_metadata(meshlib_server_call_t* call,
                                                              const char* key, const char* value);
/* Answers the call and frees its handle, in every case. `code`
 * MESHLIB_OK sends `response` (`response_len` bytes); any other code is
 * the caller's error, with `message` (NULL: none). An invalid code
 * answers MESHLIB_UNKNOWN and returns MESHLIB_INVALID_ARGUMENT. */
MESHLIB_API meshlib_error_t* meshlib_server_call_finish(meshlib_server_call_t* call,
                                                        meshlib_code_t code, const char* message,
                                                        const void* response,
                                                        size_t response_len);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MESHLIB_CAPI_MESHLIB_H_ */
