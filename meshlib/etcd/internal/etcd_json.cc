#include "meshlib/etcd/internal/etcd_json.h"

#include <climits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace meshlib::etcd_internal {
namespace {

using json = nlohmann::json;

// Nesting deeper than any etcd message is refused before parsing.
constexpr size_t kMaxDepth = 64;

// The gateway writes proto field names (snake_case); lowerCamelCase is what
// other gateway settings write. Both are read.
const json* Member(const json& obj, absl::string_view snake) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(std::string(snake));
  if (it != obj.end()) return &*it;
  if (snake.find('_') == absl::string_view::npos) return nullptr;
  std::string camel;
  bool upper = false;
  for (char c : snake) {
    if (c == '_') {
      upper = true;
      continue;
    }
    camel.push_back(upper ? absl::ascii_toupper(static_cast<unsigned char>(c)) : c);
    upper = false;
  }
  it = obj.find(camel);
  return it == obj.end() ? nullptr : &*it;
}

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\": ", what));
}

absl::StatusOr<bool> BoolField(const json& obj, absl::string_view name) {
  const json* v = Member(obj, name);
  if (v == nullptr || v->is_null()) return false;
  if (!v->is_boolean()) return Bad(name, absl::StrCat("expected a boolean, got ", v->type_name()));
  return v->get<bool>();
}

absl::StatusOr<std::string> BytesField(const json& obj, absl::string_view name, bool required) {
  const json* v = Member(obj, name);
  if (v == nullptr || v->is_null()) {
    if (required) return Bad(name, "missing");
    return std::string();
  }
  if (!v->is_string()) return Bad(name, absl::StrCat("expected base64, got ", v->type_name()));
  std::string out;
  if (!absl::Base64Unescape(v->get_ref<const std::string&>(), &out)) {
    return Bad(name, "not valid base64");
  }
  return out;
}

absl::StatusCode CodeForHttpStatus(int status) {
  if (status >= 500) {
    return status == 504 ? absl::StatusCode::kDeadlineExceeded : absl::StatusCode::kUnavailable;
  }
  switch (status) {
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 408:
      return absl::StatusCode::kDeadlineExceeded;
    case 409:
      return absl::StatusCode::kAborted;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    default:
      return status >= 400 ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kUnknown;
  }
}

std::string Excerpt(absl::string_view text) {
  constexpr size_t kMax = 200;
  std::string out = absl::CHexEscape(text.substr(0, kMax));
  if (text.size() > kMax) absl::StrAppend(&out, "...");
  return out;
}

}  // namespace

std::string Base64(absl::string_view bytes) { return absl::Base64Escape(bytes); }

absl::StatusOr<int64_t> Int64Field(const json& obj, absl::string_view name) {
  const json* v = Member(obj, name);
  if (v == nullptr || v->is_null()) return 0;
  if (v->is_string()) {
    const std::string& s = v->get_ref<const std::string&>();
    int64_t out;
    bool digits = !s.empty() && s.size() <= 20 &&
                  (absl::ascii_isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-');
    if (!digits || !absl::SimpleAtoi(s, &out)) {
      return Bad(name, absl::StrCat("expected an int64, got \"", Excerpt(s), "\""));
    }
    return out;
  }
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return Bad(name, "int64 out of range");
    }
    return v->get<int64_t>();
  }
  return Bad(name, absl::StrCat("expected an int64, got ", v->type_name()));
}

absl::StatusOr<json> ParseJson(absl::string_view text, absl::string_view what) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not valid JSON: \"", Excerpt(text), "\""));
  }
  return j;
}

absl::StatusOr<etcd::KeyValue> ParseKeyValue(const json& kv) {
  if (!kv.is_object()) return Bad("kv", absl::StrCat("expected an object, got ", kv.type_name()));
  etcd::KeyValue out;
  auto key = BytesField(kv, "key", /*required=*/true);
  if (!key.ok()) return key.status();
  out.key = *std::move(key);
  auto value = BytesField(kv, "value", /*required=*/false);
  if (!value.ok()) return value.status();
  out.value = *std::move(value);
  for (auto [name, field] : {std::make_pair("create_revision", &out.create_revision),
                             std::make_pair("mod_revision", &out.mod_revision),
                             std::make_pair("version", &out.version),
                             std::make_pair("lease", &out.lease)}) {
    auto n = Int64Field(kv, name);
    if (!n.ok()) return n.status();
    *field = *n;
  }
  return out;
}

absl::StatusOr<etcd::RangeResponse> ParseRangeResponse(const json& body) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("range response: expected an object, got ", body.type_name()));
  }
  etcd::RangeResponse out;
  const json* header = Member(body, "header");
  if (header == nullptr || !header->is_object()) return Bad("header", "missing");
  auto rev = Int64Field(*header, "revision");
  if (!rev.ok()) return rev.status();
  if (*rev <= 0) return Bad("header.revision", "missing");
  out.revision = *rev;
  const json* kvs = Member(body, "kvs");
  if (kvs != nullptr && !kvs->is_null()) {
    if (!kvs->is_array()) return Bad("kvs", absl::StrCat("expected a list, got ", kvs->type_name()));
    out.kvs.reserve(kvs->size());
    for (const json& kv : *kvs) {
      auto parsed = ParseKeyValue(kv);
      if (!parsed.ok()) return parsed.status();
      out.kvs.push_back(*std::move(parsed));
    }
  }
  return out;
}

absl::StatusOr<etcd::WatchResponse> ParseWatchResponse(const json& result) {
  if (!result.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("watch response: expected an object, got ", result.type_name()));
  }
  etcd::WatchResponse out;
  if (const json* header = Member(result, "header"); header != nullptr && !header->is_null()) {
    if (!header->is_object()) return Bad("header", "expected an object");
    auto rev = Int64Field(*header, "revision");
    if (!rev.ok()) return rev.status();
    out.revision = *rev;
  }
  auto created = BoolField(result, "created");
  if (!created.ok()) return created.status();
  out.created = *created;
  auto canceled = BoolField(result, "canceled");
  if (!canceled.ok()) return canceled.status();
  out.canceled = *canceled;
  auto compact = Int64Field(result, "compact_revision");
  if (!compact.ok()) return compact.status();
  out.compact_revision = *compact;
  if (const json* reason = Member(result, "cancel_reason"); reason != nullptr) {
    if (!reason->is_string()) return Bad("cancel_reason", "expected a string");
    out.cancel_reason = reason->get<std::string>();
  }
  const json* events = Member(result, "events");
  if (events != nullptr && !events->is_null()) {
    if (!events->is_array()) return Bad("events", "expected a list");
    for (const json& e : *events) {
      if (!e.is_object()) return Bad("events[]", "expected an object");
      etcd::WatchEvent ev;
      const json* type = Member(e, "type");
      if (type == nullptr || type->is_null() || *type == "PUT" || *type == 0) {
        ev.type = etcd::WatchEvent::Type::kPut;  // the default, which the gateway leaves out
      } else if (*type == "DELETE" || *type == 1) {
        ev.type = etcd::WatchEvent::Type::kDelete;
      } else {
        return Bad("events[].type", absl::StrCat("unknown event type ", Excerpt(type->dump())));
      }
      const json* kv = Member(e, "kv");
      if (kv == nullptr) return Bad("events[].kv", "missing");
      auto parsed = ParseKeyValue(*kv);
      if (!parsed.ok()) return parsed.status();
      ev.kv = *std::move(parsed);
      out.events.push_back(std::move(ev));
    }
  }
  return out;
}

absl::Status ErrorFromBody(int http_status, const json* body, absl::string_view text) {
  const bool ok_status = http_status >= 200 && http_status < 300;
  const json* error = body != nullptr ? Member(*body, "error") : nullptr;
  if (error != nullptr && !error->is_null()) {
    std::string message;
    int64_t code = 0;
    const json* detail = error->is_object() ? error : body;
    if (const json* m = Member(*detail, "message"); m != nullptr && m->is_string()) {
      message = m->get<std::string>();
    } else if (error->is_string()) {
      message = error->get<std::string>();
    } else {
      message = Excerpt(error->dump());
    }
    const json* c = Member(*detail, error->is_object() ? "grpc_code" : "code");
    if (c != nullptr && c->is_number_integer()) code = c->get<int64_t>();
    absl::StatusCode sc = code > 0 && code <= 16 ? static_cast<absl::StatusCode>(code)
                          : ok_status            ? absl::StatusCode::kUnknown
                                                 : CodeForHttpStatus(http_status);
    if (message.empty()) message = "error without a message";
    if (!ok_status) message = absl::StrCat("HTTP ", http_status, ": ", message);
    return absl::Status(sc, message);
  }
  if (ok_status) return absl::OkStatus();
  return absl::Status(CodeForHttpStatus(http_status),
                      absl::StrCat("HTTP ", http_status, ": ", Excerpt(text)));
}

absl::Status JsonStreamSplitter::Append(absl::string_view data, std::vector<std::string>* out) {
  if (!error_.ok()) return error_;
  size_t start = 0;  // of the part of `data` that belongs to the current object
  for (size_t i = 0; i < data.size(); ++i) {
    const char c = data[i];
    if (closers_.empty()) {
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
        start = i + 1;
        continue;
      }
      if (c != '{') {
        error_ = absl::InvalidArgumentError(
            absl::StrCat("unexpected \"", absl::CHexEscape(absl::string_view(&c, 1)),
                         "\" between JSON messages of a stream"));
        return error_;
      }
      start = i;
      closers_.push_back('}');
      continue;
    }
    // Checked at every byte, so that which error wins never depends on
    // how the stream was cut into pieces.
    if (buf_.size() + (i + 1 - start) > max_) {
      error_ = absl::ResourceExhaustedError(
          absl::StrCat("JSON message longer than ", max_, " bytes"));
      return error_;
    }
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      continue;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      if (closers_.size() >= kMaxDepth) {
        error_ = absl::InvalidArgumentError(
            absl::StrCat("JSON message nested deeper than ", kMaxDepth, " levels"));
        return error_;
      }
      closers_.push_back(c == '{' ? '}' : ']');
    } else if (c == '}' || c == ']') {
      if (c != closers_.back()) {
        error_ = absl::InvalidArgumentError(absl::StrCat(
            "\"", std::string(1, c), "\" closes a \"", closers_.back() == '}' ? "{" : "[",
            "\" in a JSON message of a stream"));
        return error_;
      }
      closers_.pop_back();
      if (closers_.empty()) {
        buf_.append(data.data() + start, i + 1 - start);
        out->push_back(std::move(buf_));
        buf_.clear();
        start = i + 1;
      }
    }
  }
  if (!closers_.empty()) buf_.append(data.data() + start, data.size() - start);
  return absl::OkStatus();
}

}  // namespace meshlib::etcd_internal
