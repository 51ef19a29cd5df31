#include "meshlib/etcd/http_parser.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace meshlib::etcd {
namespace {

// At most this many 1xx heads before the final one.
constexpr int kMaxInformational = 8;
// A chunk size has at most this many significant hex digits (< 2^60), so
// that sums of sizes never overflow.
constexpr int kMaxChunkSizeDigits = 15;

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed HTTP response: ", what));
}

// For messages: a bounded, escaped excerpt of what was received.
std::string Quote(absl::string_view s) {
  constexpr size_t kMax = 80;
  std::string out = absl::StrCat("\"", absl::CHexEscape(s.substr(0, kMax)), "\"");
  if (s.size() > kMax) absl::StrAppend(&out, "...");
  return out;
}

bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return absl::string_view("!#$%&'*+-.^_`|~").find(c) != absl::string_view::npos;
}

// Field values and reason phrases: HTAB, SP, VCHAR and obs-text.
bool IsFieldChar(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

absl::string_view TrimOws(absl::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

absl::Status ParseHeaderLine(absl::string_view line, const char* where,
                             std::vector<HttpHeader>* out) {
  if (line.front() == ' ' || line.front() == '\t') {
    return Malformed(absl::StrCat("obsolete line folding in ", where, ": ", Quote(line)));
  }
  size_t colon = line.find(':');
  if (colon == absl::string_view::npos) {
    return Malformed(absl::StrCat(where, " line without a colon: ", Quote(line)));
  }
  absl::string_view name = line.substr(0, colon);
  if (name.empty()) return Malformed(absl::StrCat("empty field name in ", where, ": ", Quote(line)));
  if (name.back() == ' ' || name.back() == '\t') {
    return Malformed(absl::StrCat("whitespace before the colon in ", where, ": ", Quote(line)));
  }
  if (!std::all_of(name.begin(), name.end(), IsTokenChar)) {
    return Malformed(absl::StrCat("invalid character in field name in ", where, ": ", Quote(line)));
  }
  absl::string_view value = TrimOws(line.substr(colon + 1));
  if (!std::all_of(value.begin(), value.end(), IsFieldChar)) {
    return Malformed(absl::StrCat("control character in the value of ", where, " field ",
                                  Quote(name)));
  }
  out->push_back(HttpHeader{std::string(name), std::string(value)});
  return absl::OkStatus();
}

// Splits a comma-separated field value into trimmed, non-empty elements.
std::vector<absl::string_view> ListElements(absl::string_view value) {
  std::vector<absl::string_view> out;
  for (absl::string_view e : absl::StrSplit(value, ',')) {
    e = TrimOws(e);
    if (!e.empty()) out.push_back(e);
  }
  return out;
}

// Appends bytes of `*data` to `*buf` up to the end of a CRLF-terminated line
// (`block` false) or of a block of lines ended by an empty line (`block`
// true; a block may be just the empty line). Rejects bare CR and LF. Sets
// `*done` when the end was reached; consumes exactly what it appended.
absl::Status Collect(absl::string_view* data, std::string* buf, bool block, size_t limit,
                     absl::string_view what, bool* done) {
  *done = false;
  size_t i = 0;
  absl::Status st;
  for (; i < data->size(); ++i) {
    const char c = (*data)[i];
    const char prev = buf->empty() ? '\0' : buf->back();
    if (prev == '\r' && c != '\n') {
      st = Malformed(absl::StrCat("bare CR in ", what));
      break;
    }
    if (c == '\n' && prev != '\r') {
      st = Malformed(absl::StrCat("bare LF in ", what));
      break;
    }
    if (buf->size() >= limit) {
      st = absl::ResourceExhaustedError(
          absl::StrCat("HTTP response ", what, " longer than ", limit, " bytes"));
      break;
    }
    buf->push_back(c);
    if (c != '\n') continue;
    if (!block || buf->size() == 2 ||
        (buf->size() >= 4 && buf->compare(buf->size() - 4, 4, "\r\n\r\n") == 0)) {
      *done = true;
      ++i;
      break;
    }
  }
  data->remove_prefix(i);
  return st;
}

}  // namespace

HttpResponseParser::HttpResponseParser(HttpParserLimits limits) : limits_(limits) {}

absl::Status HttpResponseParser::Fail(absl::Status s) {
  state_ = State::kError;
  error_ = std::move(s);
  buf_.clear();
  return error_;
}

const std::string* HttpResponseParser::FindHeader(absl::string_view name) const {
  for (const HttpHeader& h : headers_) {
    if (absl::EqualsIgnoreCase(h.name, name)) return &h.value;
  }
  return nullptr;
}

absl::Status HttpResponseParser::Feed(absl::string_view data, std::string* body) {
  while (!data.empty()) {
    switch (state_) {
      case State::kError:
        return error_;
      case State::kComplete:
        return Fail(Malformed(absl::StrCat(data.size(),
                                           " unexpected bytes after the end of the response: ",
                                           Quote(data))));
      case State::kHead: {
        // Garbage is recognised at its first byte, not after 64 KiB of it.
        const size_t before = buf_.size();
        static constexpr absl::string_view kMagic = "HTTP/";
        for (size_t i = 0; before + i < kMagic.size() && i < data.size(); ++i) {
          if (data[i] != kMagic[before + i]) {
            return Fail(Malformed(absl::StrCat("does not start with \"HTTP/\": ",
                                               Quote(absl::StrCat(buf_, data)))));
          }
        }
        bool done;
        absl::Status st = Collect(&data, &buf_, /*block=*/true, limits_.max_head_bytes,
                                  "head", &done);
        if (!st.ok()) return Fail(std::move(st));
        if (!done) return absl::OkStatus();
        std::string head = std::move(buf_);
        buf_.clear();
        head.resize(head.size() - 4);  // the empty line
        if (st = ParseHead(head); !st.ok()) return Fail(std::move(st));
        if (status_code_ < 200 && status_code_ != 101) {
          // Informational: the real response follows.
          if (++informational_ > kMaxInformational) {
            return Fail(Malformed(absl::StrCat("more than ", kMaxInformational,
                                               " informational (1xx) responses")));
          }
          headers_.clear();
          state_ = State::kHead;
          break;
        }
        head_done_ = true;
        if (st = StartBody(); !st.ok()) return Fail(std::move(st));
        break;
      }
      case State::kLength: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, data.size()));
        if (auto st = AppendBody(data.substr(0, n), body); !st.ok()) return st;
        data.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kComplete;
        break;
      }
      case State::kChunkSize: {
        bool done;
        absl::Status st = Collect(&data, &buf_, /*block=*/false, limits_.max_chunk_line_bytes,
                                  "chunk-size line", &done);
        if (!st.ok()) return Fail(std::move(st));
        if (!done) return absl::OkStatus();
        std::string line = std::move(buf_);
        buf_.clear();
        line.resize(line.size() - 2);
        if (st = ParseChunkSizeLine(line); !st.ok()) return Fail(std::move(st));
        break;
      }
      case State::kChunkData: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, data.size()));
        if (auto st = AppendBody(data.substr(0, n), body); !st.ok()) return st;
        data.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) {
          state_ = State::kChunkDataEnd;
          crlf_seen_ = 0;
        }
        break;
      }
      case State::kChunkDataEnd: {
        while (crlf_seen_ < 2 && !data.empty()) {
          if (data.front() != "\r\n"[crlf_seen_]) {
            return Fail(Malformed(absl::StrCat("chunk data not followed by CRLF (got ",
                                               Quote(data.substr(0, 8)), ")")));
          }
          ++crlf_seen_;
          data.remove_prefix(1);
        }
        if (crlf_seen_ == 2) state_ = State::kChunkSize;
        break;
      }
      case State::kTrailers: {
        bool done;
        absl::Status st = Collect(&data, &buf_, /*block=*/true, limits_.max_head_bytes,
                                  "trailer section", &done);
        if (!st.ok()) return Fail(std::move(st));
        if (!done) return absl::OkStatus();
        std::string block = std::move(buf_);
        buf_.clear();
        if (st = ParseTrailers(block); !st.ok()) return Fail(std::move(st));
        state_ = State::kComplete;
        break;
      }
      case State::kUntilClose: {
        if (auto st = AppendBody(data, body); !st.ok()) return st;
        data = {};
        break;
      }
    }
  }
  return state_ == State::kError ? error_ : absl::OkStatus();
}

absl::Status HttpResponseParser::ParseHead(absl::string_view head) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  absl::string_view status = lines[0];
  // HTTP-version SP 3DIGIT [SP reason-phrase]
  static constexpr absl::string_view kVersion = "HTTP/1.";
  if (!absl::StartsWith(status, kVersion) || status.size() < kVersion.size() + 1) {
    return Malformed(absl::StrCat("unsupported HTTP version in status line ", Quote(status)));
  }
  char minor = status[kVersion.size()];
  if (minor != '0' && minor != '1') {
    return Malformed(absl::StrCat("unsupported HTTP version in status line ", Quote(status)));
  }
  minor_version_ = minor - '0';
  absl::string_view rest = status.substr(kVersion.size() + 1);
  if (rest.size() < 4 || rest[0] != ' ' || !absl::ascii_isdigit(rest[1]) ||
      !absl::ascii_isdigit(rest[2]) || !absl::ascii_isdigit(rest[3]) ||
      (rest.size() > 4 && rest[4] != ' ')) {
    return Malformed(absl::StrCat("bad status line ", Quote(status),
                                  " (expected \"HTTP/1.x NNN reason\")"));
  }
  status_code_ = (rest[1] - '0') * 100 + (rest[2] - '0') * 10 + (rest[3] - '0');
  if (status_code_ < 100 || status_code_ > 599) {
    return Malformed(absl::StrCat("status code ", status_code_, " out of range 100-599"));
  }
  absl::string_view reason = rest.size() > 4 ? rest.substr(5) : absl::string_view();
  if (!std::all_of(reason.begin(), reason.end(), IsFieldChar)) {
    return Malformed(absl::StrCat("control character in the reason phrase of ", Quote(status)));
  }
  reason_ = std::string(reason);
  headers_.clear();
  for (size_t i = 1; i < lines.size(); ++i) {
    if (headers_.size() >= limits_.max_headers) {
      return absl::ResourceExhaustedError(
          absl::StrCat("HTTP response has more than ", limits_.max_headers, " header fields"));
    }
    if (auto st = ParseHeaderLine(lines[i], "header", &headers_); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status HttpResponseParser::StartBody() {
  if (status_code_ == 101) {
    return Malformed("101 Switching Protocols was not asked for");
  }
  if (status_code_ == 204 || status_code_ == 304) {
    state_ = State::kComplete;  // never a body, whatever the fields say
    return absl::OkStatus();
  }
  std::string transfer_encoding;
  bool has_te = false, has_length = false;
  uint64_t length = 0;
  for (const HttpHeader& h : headers_) {
    if (absl::EqualsIgnoreCase(h.name, "transfer-encoding")) {
      has_te = true;
      absl::StrAppend(&transfer_encoding, transfer_encoding.empty() ? "" : ", ", h.value);
    } else if (absl::EqualsIgnoreCase(h.name, "content-length")) {
      std::vector<absl::string_view> values = ListElements(h.value);
      if (values.empty()) return Malformed("empty Content-Length");
      for (absl::string_view v : values) {
        // 19 digits always fit in 64 bits.
        if (v.size() > 19 || !std::all_of(v.begin(), v.end(), [](char c) {
              return c >= '0' && c <= '9';
            })) {
          return Malformed(absl::StrCat("bad Content-Length ", Quote(h.value)));
        }
        uint64_t n = 0;
        for (char c : v) n = n * 10 + static_cast<uint64_t>(c - '0');
        if (has_length && n != length) {
          return Malformed(absl::StrCat("conflicting Content-Length values ", length, " and ", n));
        }
        has_length = true;
        length = n;
      }
    }
  }
  if (has_te) {
    if (minor_version_ == 0) return Malformed("Transfer-Encoding in an HTTP/1.0 response");
    if (has_length) return Malformed("both Content-Length and Transfer-Encoding");
    std::vector<absl::string_view> codings = ListElements(transfer_encoding);
    if (codings.size() != 1 || !absl::EqualsIgnoreCase(codings[0], "chunked")) {
      return Malformed(absl::StrCat("unsupported Transfer-Encoding ", Quote(transfer_encoding),
                                    " (only \"chunked\")"));
    }
    state_ = State::kChunkSize;
    return absl::OkStatus();
  }
  if (has_length) {
    if (limits_.max_body_bytes != 0 && length > limits_.max_body_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("HTTP response body of ", length,
                                                       " bytes exceeds the limit of ",
                                                       limits_.max_body_bytes));
    }
    remaining_ = length;
    state_ = length == 0 ? State::kComplete : State::kLength;
    return absl::OkStatus();
  }
  state_ = State::kUntilClose;
  return absl::OkStatus();
}

absl::Status HttpResponseParser::AppendBody(absl::string_view data, std::string* body) {
  if (limits_.max_body_bytes != 0 && body_bytes_ + data.size() > limits_.max_body_bytes) {
    return Fail(absl::ResourceExhaustedError(absl::StrCat(
        "HTTP response body exceeds the limit of ", limits_.max_body_bytes, " bytes")));
  }
  body_bytes_ += data.size();
  body->append(data.data(), data.size());
  return absl::OkStatus();
}

absl::Status HttpResponseParser::ParseChunkSizeLine(absl::string_view line) {
  size_t i = 0;
  uint64_t size = 0;
  int significant = 0;
  for (; i < line.size() && absl::ascii_isxdigit(static_cast<unsigned char>(line[i])); ++i) {
    unsigned char c = static_cast<unsigned char>(line[i]);
    int digit = absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10;
    if (size != 0 || digit != 0) ++significant;
    if (significant > kMaxChunkSizeDigits) {
      return Malformed(absl::StrCat("chunk size too large: ", Quote(line)));
    }
    size = size * 16 + static_cast<uint64_t>(digit);
  }
  if (i == 0) return Malformed(absl::StrCat("bad chunk size line ", Quote(line)));
  absl::string_view rest = TrimOws(line.substr(i));
  if (!rest.empty()) {
    if (rest.front() != ';' || !std::all_of(rest.begin(), rest.end(), IsFieldChar)) {
      return Malformed(absl::StrCat("bad chunk size line ", Quote(line)));
    }
  }
  if (size == 0) {
    state_ = State::kTrailers;
    return absl::OkStatus();
  }
  if (limits_.max_body_bytes != 0 && body_bytes_ + size > limits_.max_body_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("HTTP response body exceeds the limit of ",
                                                     limits_.max_body_bytes, " bytes (chunk of ",
                                                     size, " after ", body_bytes_, ")"));
  }
  remaining_ = size;
  state_ = State::kChunkData;
  return absl::OkStatus();
}

absl::Status HttpResponseParser::ParseTrailers(absl::string_view block) {
  // `block` is "\r\n" alone, or lines each ended by CRLF plus the empty line.
  block.remove_suffix(2);
  if (block.empty()) return absl::OkStatus();
  block.remove_suffix(2);
  for (absl::string_view line : absl::StrSplit(block, "\r\n")) {
    if (trailers_.size() >= limits_.max_headers) {
      return absl::ResourceExhaustedError(
          absl::StrCat("HTTP response has more than ", limits_.max_headers, " trailer fields"));
    }
    if (auto st = ParseHeaderLine(line, "trailer", &trailers_); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status HttpResponseParser::OnEof() {
  switch (state_) {
    case State::kError:
      return error_;
    case State::kComplete:
      return absl::OkStatus();
    case State::kUntilClose:
      state_ = State::kComplete;
      return absl::OkStatus();
    case State::kHead:
      return Fail(Malformed(
          buf_.empty() && informational_ == 0
              ? std::string("connection closed before any response")
              : absl::StrCat("connection closed inside the response head after ", buf_.size(),
                             " bytes")));
    case State::kLength:
      return Fail(Malformed(absl::StrCat("connection closed after ", body_bytes_, " of ",
                                         body_bytes_ + remaining_, " body bytes")));
    case State::kChunkSize:
    case State::kChunkData:
    case State::kChunkDataEnd:
    case State::kTrailers:
      return Fail(Malformed(absl::StrCat("connection closed inside a chunked body after ",
                                         body_bytes_, " body bytes")));
  }
  return absl::OkStatus();
}

}  // namespace meshlib::etcd
