#include "meshlib/admin/http_request.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace meshlib::admin {
namespace {

bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

}  // namespace

HttpRequestParser::State HttpRequestParser::Fail(int status, std::string message) {
  state_ = kError;
  error_status_ = status;
  error_ = std::move(message);
  buffer_.clear();
  return state_;
}

HttpRequestParser::State HttpRequestParser::Feed(absl::string_view bytes) {
  if (state_ != kNeedMore) return state_;
  // Look for the end of the head in what is new (and the 3 bytes before).
  const size_t scan_from = buffer_.size() >= 3 ? buffer_.size() - 3 : 0;
  // Never more than the limit and its terminator: buffer_ holds at most
  // kMaxHead bytes here (a longer head failed already).
  buffer_.append(bytes.data(), std::min(bytes.size(), kMaxHead + 4 - buffer_.size()));
  const size_t end = buffer_.find("\r\n\r\n", scan_from);
  if (end == std::string::npos) {
    if (buffer_.size() > kMaxHead) {
      return Fail(431, absl::StrCat("request head longer than ", kMaxHead, " bytes"));
    }
    return kNeedMore;
  }
  if (end + 4 > kMaxHead) {
    return Fail(431, absl::StrCat("request head longer than ", kMaxHead, " bytes"));
  }
  // Bytes after the head (a pipelined request) are ignored, as they would
  // be had they arrived later: one request per connection, and the verdict
  // never depends on how the bytes were split.
  State s = ParseHead(absl::string_view(buffer_).substr(0, end));
  buffer_.clear();
  return s;
}

HttpRequestParser::State HttpRequestParser::ParseHead(absl::string_view head) {
  for (char c : head) {
    if (c == '\0') return Fail(400, "NUL byte in the request head");
  }
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  for (absl::string_view line : lines) {
    if (line.find('\n') != absl::string_view::npos || line.find('\r') != absl::string_view::npos) {
      return Fail(400, "bare CR or LF in the request head: lines end with CRLF");
    }
  }
  // The request line: METHOD SP TARGET SP VERSION.
  std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  if (parts.size() != 3) {
    return Fail(400, "malformed request line: want METHOD TARGET HTTP/1.x");
  }
  if (!IsToken(parts[0])) return Fail(400, "malformed method");
  if (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
    if (absl::StartsWith(parts[2], "HTTP/")) {
      return Fail(505, absl::StrCat("HTTP version ", parts[2], " not supported"));
    }
    return Fail(400, "malformed HTTP version");
  }
  if (parts[1].size() > kMaxTarget) {
    return Fail(414, absl::StrCat("request target longer than ", kMaxTarget, " bytes"));
  }
  if (parts[1].empty() || parts[1][0] != '/') {
    return Fail(400, "request target must be a path starting with '/'");
  }
  for (char c : parts[1]) {
    if (c <= 0x20 || c >= 0x7f) return Fail(400, "request target has a non-printable byte");
  }
  request_.method = std::string(parts[0]);
  request_.target = std::string(parts[1]);
  request_.version = std::string(parts[2]);
  const size_t q = request_.target.find('?');
  request_.path = request_.target.substr(0, q);
  request_.query = q == std::string::npos ? "" : request_.target.substr(q + 1);

  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (line.empty()) return Fail(400, "empty header line");
    if (line[0] == ' ' || line[0] == '\t') return Fail(400, "folded header lines not accepted");
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) return Fail(400, "header line without ':'");
    absl::string_view name = line.substr(0, colon);
    if (!IsToken(name)) return Fail(400, "malformed header name");
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    for (char c : value) {
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
        return Fail(400, "control byte in a header value");
      }
    }
    if (request_.headers.size() >= kMaxHeaders) {
      return Fail(431, absl::StrCat("more than ", kMaxHeaders, " headers"));
    }
    std::string lower = absl::AsciiStrToLower(name);
    if (lower == "content-length" && value != "0") {
      return Fail(400, "a request body is not accepted");
    }
    if (lower == "transfer-encoding") return Fail(400, "a request body is not accepted");
    request_.headers.emplace_back(std::move(lower), std::string(value));
  }
  if (request_.method != "GET" && request_.method != "HEAD") {
    return Fail(405, absl::StrCat("method ", request_.method, " not allowed: GET or HEAD"));
  }
  state_ = kDone;
  return state_;
}

}  // namespace meshlib::admin
