// RegisterTyped: serves a method with a typed handler, the server-side
// counterpart of Stub<Req, Resp>. The request is decoded with ReqCodec and
// the handler's reply encoded with RespCodec (by default the types'
// Codec<T>; see codec.h).
//
//   server::Server server;
//   absl::Status st = stub::RegisterTyped<Point, Point>(
//       server, "Geo/Move", [](const Point& p, server::ServerCall& call) -> absl::StatusOr<Point> {
//         if (p.x < 0) return absl::InvalidArgumentError("x must be >= 0");
//         return Point{p.x + 1, p.y + 1};
//       });
//
// The handler runs as a sync handler (server::Server::RegisterSync): on a
// worker thread, where it may block, with the call's deadline installed for
// the calls it makes. It must not throw. A request that does not decode is
// answered INVALID_ARGUMENT ("Geo/Move: cannot decode request: <reason>")
// without running the handler; a reply that does not encode is answered
// INTERNAL ("Geo/Move: cannot encode reply: <reason>"). A handler's error
// status is sent unchanged. Response metadata is added through `call`.
//
// Threading: as Server::RegisterSync (before Start). The handler runs on
// several workers at once.
#ifndef MESHLIB_STUB_TYPED_SERVER_H_
#define MESHLIB_STUB_TYPED_SERVER_H_

#include <functional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "meshlib/server/server.h"
#include "meshlib/stub/codec.h"

namespace meshlib::stub {

template <typename Req, typename Resp>
using TypedHandler = std::function<absl::StatusOr<Resp>(const Req&, server::ServerCall&)>;

// Req and Resp are named explicitly: RegisterTyped<Req, Resp>(...). Errors
// are Server::RegisterSync's, and INVALID_ARGUMENT for an empty handler.
template <typename Req, typename Resp, typename ReqCodec = Codec<Req>,
          typename RespCodec = Codec<Resp>>
absl::Status RegisterTyped(server::Server& server, std::string method,
                           TypedHandler<Req, Resp> handler) {
  static_assert(IsCodecFor<ReqCodec, Req>::value,
                "ReqCodec must have static absl::Status Encode(const Req&, std::string*) and "
                "Decode(absl::string_view, Req*)");
  static_assert(IsCodecFor<RespCodec, Resp>::value,
                "RespCodec must have static absl::Status Encode(const Resp&, std::string*) and "
                "Decode(absl::string_view, Resp*)");
  static_assert(std::is_default_constructible_v<Req>,
                "Req must be default-constructible: requests are decoded into a fresh Req");
  if (!handler) {
    return absl::InvalidArgumentError(absl::StrCat("RegisterTyped(", method, "): empty handler"));
  }
  std::string name = method;
  return server.RegisterSync(
      std::move(name),
      [method = std::move(method), handler = std::move(handler)](
          server::ServerCall& call, std::string* response) -> absl::Status {
        Req request{};
        if (absl::Status st = stub_internal::SafeDecode<ReqCodec>(call.request(), &request);
            !st.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(method, ": cannot decode request: ", st.message()));
        }
        absl::StatusOr<Resp> reply = handler(request, call);
        if (!reply.ok()) return reply.status();
        if (absl::Status st = stub_internal::SafeEncode<RespCodec>(*reply, response); !st.ok()) {
          response->clear();
          return absl::InternalError(absl::StrCat(method, ": cannot encode reply: ", st.message()));
        }
        return absl::OkStatus();
      });
}

}  // namespace meshlib::stub

#endif  // MESHLIB_STUB_TYPED_SERVER_H_
