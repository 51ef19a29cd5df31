#include "meshlib/grpc/wire.h"

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace meshlib::grpc {

namespace {

uint32_t ReadBigEndian32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

}  // namespace

void AppendMessage(std::string* out, absl::string_view payload) {
  const uint32_t n = static_cast<uint32_t>(payload.size());
  const char prefix[kMessagePrefix] = {0, static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                                       static_cast<char>(n >> 8), static_cast<char>(n)};
  out->append(prefix, kMessagePrefix);
  out->append(payload.data(), payload.size());
}

bool MessagePrefixComplete(absl::string_view body, uint32_t* declared) {
  if (body.size() < kMessagePrefix) return false;
  *declared = ReadBigEndian32(body.data() + 1);
  return body.size() >= kMessagePrefix + *declared;
}

absl::StatusOr<std::string> ParseUnaryMessage(absl::string_view body, size_t max_size) {
  if (body.empty()) return absl::InternalError("gRPC response has no message");
  if (body.size() < kMessagePrefix) {
    return absl::InternalError(
        absl::StrCat("gRPC message prefix truncated: ", body.size(), " of 5 bytes"));
  }
  const uint8_t flag = static_cast<uint8_t>(body[0]);
  if (flag == 1) {
    return absl::InternalError("gRPC message is compressed, but no compression was negotiated");
  }
  if (flag != 0) {
    return absl::InternalError(absl::StrCat("gRPC message has an invalid flag byte ", flag));
  }
  const uint32_t n = ReadBigEndian32(body.data() + 1);
  if (n > max_size) {
    return absl::ResourceExhaustedError(
        absl::StrCat("gRPC message of ", n, " bytes exceeds the limit of ", max_size));
  }
  if (body.size() - kMessagePrefix < n) {
    return absl::InternalError(absl::StrCat("gRPC message truncated: ",
                                            body.size() - kMessagePrefix, " of ", n, " bytes"));
  }
  if (body.size() - kMessagePrefix > n) {
    return absl::InternalError("gRPC unary call carries more than one message");
  }
  return std::string(body.substr(kMessagePrefix));
}

std::string EncodeTimeout(absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) return "1n";
  constexpr int64_t kMax = 99999999;  // 8 digits
  struct Unit {
    absl::Duration size;
    char name;
  };
  static constexpr Unit kUnits[] = {
      {absl::Nanoseconds(1), 'n'}, {absl::Microseconds(1), 'u'}, {absl::Milliseconds(1), 'm'},
      {absl::Seconds(1), 'S'},     {absl::Minutes(1), 'M'},      {absl::Hours(1), 'H'},
  };
  for (const Unit& u : kUnits) {
    // Rounded up: the server must not see less time than there is.
    absl::Duration rem;
    const int64_t n = absl::IDivDuration(timeout + u.size - absl::Nanoseconds(1), u.size, &rem);
    if (n <= kMax) return absl::StrCat(n, std::string(1, u.name));
  }
  return absl::StrCat(kMax, "H");
}

absl::StatusOr<absl::Duration> ParseTimeout(absl::string_view value) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("grpc-timeout \"", absl::CHexEscape(value),
                     "\" is not 1-8 digits followed by H, M, S, m, u or n"));
  };
  if (value.size() < 2 || value.size() > 9) return bad();
  const absl::string_view digits = value.substr(0, value.size() - 1);
  for (char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return bad();
  }
  int64_t n = 0;
  if (!absl::SimpleAtoi(digits, &n)) return bad();
  switch (value.back()) {
    case 'H': return absl::Hours(n);
    case 'M': return absl::Minutes(n);
    case 'S': return absl::Seconds(n);
    case 'm': return absl::Milliseconds(n);
    case 'u': return absl::Microseconds(n);
    case 'n': return absl::Nanoseconds(n);
    default: return bad();
  }
}

absl::StatusCode CodeForHttpStatus(int http_status) {
  switch (http_status) {
    case 400: return absl::StatusCode::kInternal;
    case 401: return absl::StatusCode::kUnauthenticated;
    case 403: return absl::StatusCode::kPermissionDenied;
    case 404: return absl::StatusCode::kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504: return absl::StatusCode::kUnavailable;
    default: return absl::StatusCode::kUnknown;
  }
}

absl::Status StatusForReset(uint32_t code, absl::string_view peer, bool* not_processed) {
  *not_processed = false;
  const std::string what = absl::StrCat(
      "stream reset by ", peer, " with HTTP/2 error ",
      nghttp2_http2_strerror(code), " (", code, ")");
  switch (code) {
    case NGHTTP2_REFUSED_STREAM:
      *not_processed = true;
      return absl::UnavailableError(absl::StrCat(what, ": the server did not process the call"));
    case NGHTTP2_CANCEL:
      return absl::CancelledError(what);
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return absl::ResourceExhaustedError(what);
    case NGHTTP2_INADEQUATE_SECURITY:
      return absl::PermissionDeniedError(what);
    default:
      return absl::InternalError(what);
  }
}

absl::StatusCode ParseStatusCode(absl::string_view value) {
  int code = 0;
  if (!absl::SimpleAtoi(value, &code) || code < 0 || code > 16) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(code);
}

std::string PercentEncode(absl::string_view message) {
  std::string out;
  out.reserve(message.size());
  for (char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u <= 0x7e && u != '%') {
      out.push_back(c);
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

std::string PercentDecode(absl::string_view message) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(message.size());
  for (size_t i = 0; i < message.size(); ++i) {
    if (message[i] == '%' && i + 2 < message.size()) {
      const int hi = hex(message[i + 1]);
      const int lo = hex(message[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(message[i]);
  }
  return out;
}

bool IsBinaryKey(absl::string_view key) { return absl::EndsWith(key, "-bin"); }

std::string EncodeBinaryValue(absl::string_view value) {
  std::string out = absl::Base64Escape(value);
  while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}

absl::StatusOr<std::string> DecodeBinaryValue(absl::string_view value) {
  std::string padded(value);
  while (!padded.empty() && padded.back() == '=') padded.pop_back();
  while (padded.size() % 4 != 0) padded.push_back('=');
  std::string out;
  if (!absl::Base64Unescape(padded, &out)) {
    return absl::InvalidArgumentError("binary metadata value is not valid base64");
  }
  return out;
}

void AddReceivedMetadata(std::vector<std::pair<std::string, std::string>>* md,
                         absl::string_view key, absl::string_view value, size_t max_entries) {
  if (md->size() >= max_entries) return;
  if (!IsBinaryKey(key)) {
    md->emplace_back(std::string(key), std::string(value));
    return;
  }
  absl::StatusOr<std::string> decoded = DecodeBinaryValue(value);
  if (decoded.ok()) md->emplace_back(std::string(key), *std::move(decoded));
}

nghttp2_option* NewSessionOptions(bool server) {
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  if (server) nghttp2_option_set_stream_reset_rate_limit(opt, /*burst=*/1000, /*rate=*/33);
  nghttp2_option_set_max_continuations(opt, 8);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_send_header_block_length(opt, 64 << 10);
  return opt;
}

bool IsReservedHeader(absl::string_view key) {
  if (!key.empty() && key[0] == ':') return true;
  return key == "content-type" || key == "te" || key == "user-agent" ||
         key == "grpc-timeout" || key == "grpc-status" || key == "grpc-message" ||
         key == "grpc-encoding" || key == "grpc-accept-encoding" ||
         key == "grpc-status-details-bin" || key == "content-length" || key == "host" ||
         key == "connection" || key == "accept-encoding" || key == "grpc-previous-rpc-attempts";
}

bool IsValidMetadataKey(absl::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                    c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace meshlib::grpc
