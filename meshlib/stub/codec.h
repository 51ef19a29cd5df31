// Codecs: how a typed stub turns a request or reply value into the bytes a
// call carries, and back.
//
// A codec for a type T is any type C with two static functions:
//
//   static absl::Status Encode(const T& value, std::string* out);
//   static absl::Status Decode(absl::string_view bytes, T* out);
//
// Encode replaces *out with the value's bytes; Decode fills *out (a
// default-constructed T) from bytes that may come from anywhere, so it must
// reject malformed input with a status rather than crash. The message of a
// failed status is the reason, shown to the caller inside the stub's own
// error ("Echo/Say: cannot encode request: <reason>"); its code does not
// matter, the stub and the server side choose the code. Neither function
// should throw: a codec that throws anyway is caught and its exception's
// what() becomes the reason, but a codec is the place to say it clearly.
// Both are called concurrently from many threads.
//
// Codec<T> is the codec a Stub<Req, Resp> uses unless it is given another.
// meshlib provides:
//
//   Codec<std::string>     the bytes themselves (BytesCodec)
//   Codec<nlohmann::json>  JSON text (JsonCodec<nlohmann::json>)
//   Codec<T>               JSON text (JsonCodec<T>), for a T with to_json and
//                          from_json functions found by argument-dependent
//                          lookup, as nlohmann_json's own
//                          NLOHMANN_DEFINE_TYPE_* macros write them
//   JsonCodec<T>           JSON for anything nlohmann_json can convert
//                          (int, std::vector<T>, std::map, adl_serializer
//                          specializations), named explicitly
//
//   struct Point { int x = 0; int y = 0; };
//   NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Point, x, y)
//   stub::Stub<Point, Point> move(caller, "Geo/Move");   // JSON by default
//
// Plugging in another format needs no change to meshlib: specialize Codec
// for your types, or pass a codec type to the stub. Protocol Buffers, for
// example, would be (meshlib itself does not depend on protobuf):
//
//   namespace meshlib::stub {
//   template <typename T>
//   struct Codec<T, std::enable_if_t<std::is_base_of_v<google::protobuf::MessageLite, T>>> {
//     static absl::Status Encode(const T& message, std::string* out) {
//       if (!message.SerializeToString(out)) {
//         return absl::InvalidArgumentError("required fields missing");
//       }
//       return absl::OkStatus();
//     }
//     static absl::Status Decode(absl::string_view bytes, T* out) {
//       if (bytes.size() > INT_MAX ||
//           !out->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
//         return absl::InvalidArgumentError(
//             absl::StrCat("not a valid ", out->GetTypeName()));
//       }
//       return absl::OkStatus();
//     }
//   };
//   }  // namespace meshlib::stub
//
// A specialization must be visible wherever a stub for the type is used
// (put it beside the type), or different files would pick different codecs.
#ifndef MESHLIB_STUB_CODEC_H_
#define MESHLIB_STUB_CODEC_H_

#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace meshlib::stub {

// The bytes of a std::string, unchanged. Never fails.
struct BytesCodec {
  static absl::Status Encode(const std::string& value, std::string* out) {
    *out = value;
    return absl::OkStatus();
  }
  static absl::Status Decode(absl::string_view bytes, std::string* out) {
    out->assign(bytes.data(), bytes.size());
    return absl::OkStatus();
  }
};

// Compact JSON text (UTF-8) through nlohmann_json. Encoding fails when the
// value's to_json throws or puts invalid UTF-8 in a string; decoding fails
// on anything that is not one JSON document, or when from_json rejects it
// (a missing key, a wrong type). nlohmann_json's exceptions are caught and
// their text becomes the reason.
template <typename T>
struct JsonCodec {
  static absl::Status Encode(const T& value, std::string* out) {
    try {
      if constexpr (std::is_same_v<T, nlohmann::json>) {
        *out = value.dump();
      } else {
        *out = nlohmann::json(value).dump();
      }
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(e.what());
    } catch (...) {
      return absl::InvalidArgumentError("to_json threw a non-standard exception");
    }
  }
  static absl::Status Decode(absl::string_view bytes, T* out) {
    try {
      if constexpr (std::is_same_v<T, nlohmann::json>) {
        *out = nlohmann::json::parse(bytes.begin(), bytes.end());
      } else {
        nlohmann::json::parse(bytes.begin(), bytes.end()).get_to(*out);
      }
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(e.what());
    } catch (...) {
      return absl::InvalidArgumentError("from_json threw a non-standard exception");
    }
  }
};

namespace stub_internal {

template <typename T>
inline constexpr bool kAlwaysFalse = false;

// Whether to_json(json&, const T&) and from_json(const json&, T&) are found
// by argument-dependent lookup: the functions a user writes beside T. No
// function of that name is visible here, so only ADL can find one, and
// nlohmann_json's own converters (for int, std::vector, ...) are function
// objects, which ADL never finds.
template <typename T, typename = void>
struct HasAdlJson : std::false_type {};
template <typename T>
struct HasAdlJson<
    T, std::void_t<decltype(to_json(std::declval<nlohmann::json&>(), std::declval<const T&>())),
                   decltype(from_json(std::declval<const nlohmann::json&>(),
                                      std::declval<T&>()))>> : std::true_type {};

}  // namespace stub_internal

// The default codec of T; see the top of this file. The second parameter
// is for partial specializations that select a family of types with
// std::enable_if_t (as the protobuf example above does).
template <typename T, typename Enable = void>
struct Codec {
  static_assert(stub_internal::kAlwaysFalse<T>,
                "meshlib::stub::Codec<T>: no codec for this type. Give T to_json/from_json "
                "functions (JSON), specialize meshlib::stub::Codec<T>, or pass a codec type "
                "to the Stub (for example JsonCodec<T>). See meshlib/stub/codec.h.");
};

template <>
struct Codec<std::string> : BytesCodec {};

template <>
struct Codec<nlohmann::json> : JsonCodec<nlohmann::json> {};

template <typename T>
struct Codec<T, std::enable_if_t<stub_internal::HasAdlJson<T>::value &&
                                 !std::is_same_v<T, std::string> &&
                                 !std::is_same_v<T, nlohmann::json>>> : JsonCodec<T> {};

// Whether C is a codec for T (has Encode and Decode with the signatures
// above). For static_assert; naming Codec<X> for an X without a codec
// stops the build with Codec's own message.
template <typename C, typename T, typename = void>
struct IsCodecFor : std::false_type {};
template <typename C, typename T>
struct IsCodecFor<
    C, T,
    std::enable_if_t<
        std::is_same_v<decltype(C::Encode(std::declval<const T&>(), std::declval<std::string*>())),
                       absl::Status> &&
        std::is_same_v<decltype(C::Decode(std::declval<absl::string_view>(), std::declval<T*>())),
                       absl::Status>>> : std::true_type {};

namespace stub_internal {

// A codec call that never lets an exception out (the codec contract asks
// for none, but a user's codec is not ours to trust).
template <typename C, typename T>
absl::Status SafeEncode(const T& value, std::string* out) {
  try {
    return C::Encode(value, out);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("codec threw: ", e.what()));
  } catch (...) {
    return absl::InvalidArgumentError("codec threw a non-standard exception");
  }
}

template <typename C, typename T>
absl::Status SafeDecode(absl::string_view bytes, T* out) {
  try {
    return C::Decode(bytes, out);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("codec threw: ", e.what()));
  } catch (...) {
    return absl::InvalidArgumentError("codec threw a non-standard exception");
  }
}

}  // namespace stub_internal
}  // namespace meshlib::stub

#endif  // MESHLIB_STUB_CODEC_H_
