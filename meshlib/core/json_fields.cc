#include "meshlib/core/json_fields.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace meshlib::core {

using json = nlohmann::json;

absl::Status FieldError(absl::string_view path, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(path.empty() ? "(root)" : path, ": ", rule));
}

std::string JoinPath(absl::string_view path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

absl::Status CheckObject(const json& j, absl::string_view path,
                         std::initializer_list<absl::string_view> known) {
  if (!j.is_object()) return FieldError(path, "must be an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (absl::string_view k : known) ok = ok || k == it.key();
    if (!ok) {
      return FieldError(JoinPath(path, it.key()),
                        absl::StrCat("unknown key (known: ", absl::StrJoin(known, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Duration> ParseDurationField(const json& j, absl::string_view path) {
  if (!j.is_string()) {
    return FieldError(path, "must be a duration string (examples: \"250ms\", \"1s\")");
  }
  absl::Duration d;
  if (!absl::ParseDuration(j.get<std::string>(), &d)) {
    return FieldError(path, absl::StrCat("\"", j.get<std::string>(),
                                         "\" is not a duration (examples: \"250ms\", \"1s\")"));
  }
  return d;
}

absl::Status OptionalDuration(const json& obj, absl::string_view path, absl::string_view key,
                              absl::Duration min, absl::Duration max, absl::Duration* out) {
  auto it = obj.find(std::string(key));
  if (it == obj.end()) return absl::OkStatus();
  std::string p = JoinPath(path, key);
  auto d = ParseDurationField(*it, p);
  if (!d.ok()) return d.status();
  if (*d < min || *d > max) {
    return FieldError(p, absl::StrCat("must be between ", absl::FormatDuration(min), " and ",
                                      absl::FormatDuration(max)));
  }
  *out = *d;
  return absl::OkStatus();
}

absl::Status OptionalInt(const json& obj, absl::string_view path, absl::string_view key,
                         int64_t min, int64_t max, int64_t* out) {
  auto it = obj.find(std::string(key));
  if (it == obj.end()) return absl::OkStatus();
  std::string p = JoinPath(path, key);
  if (!it->is_number_integer() ||
      (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) ||
      it->get<int64_t>() < min || it->get<int64_t>() > max) {
    return FieldError(p, absl::StrCat("must be an integer between ", min, " and ", max));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status OptionalDouble(const json& obj, absl::string_view path, absl::string_view key,
                            double min, double max, double* out) {
  auto it = obj.find(std::string(key));
  if (it == obj.end()) return absl::OkStatus();
  std::string p = JoinPath(path, key);
  if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < min ||
      it->get<double>() > max) {
    return FieldError(p, absl::StrCat("must be a number between ", min, " and ", max));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status OptionalBool(const json& obj, absl::string_view path, absl::string_view key,
                          bool* out) {
  auto it = obj.find(std::string(key));
  if (it == obj.end()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(JoinPath(path, key), "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status OptionalString(const json& obj, absl::string_view path, absl::string_view key,
                            std::string* out) {
  auto it = obj.find(std::string(key));
  if (it == obj.end()) return absl::OkStatus();
  if (!it->is_string() || it->get<std::string>().empty()) {
    return FieldError(JoinPath(path, key), "must be a non-empty string");
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status OptionalStringList(const json& obj, absl::string_view path, absl::string_view key,
                                std::vector<std::string>* out) {
  auto it = obj.find(std::string(key));
  if (it == obj.end()) return absl::OkStatus();
  std::string p = JoinPath(path, key);
  if (!it->is_array() || it->empty()) return FieldError(p, "must be a non-empty list of strings");
  std::vector<std::string> v;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& e = (*it)[i];
    if (!e.is_string() || e.get<std::string>().empty()) {
      return FieldError(absl::StrCat(p, "[", i, "]"), "must be a non-empty string");
    }
    v.push_back(e.get<std::string>());
  }
  *out = std::move(v);
  return absl::OkStatus();
}

std::string TextPosition(absl::string_view text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return absl::StrCat("line ", line, ", column ", col);
}

absl::StatusOr<json> ParseJsonText(absl::string_view text, absl::string_view what) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    // e.byte is 1-based: the position of the offending character.
    std::string detail = e.what();
    // nlohmann's message repeats its own position; keep only the reason.
    if (auto p = detail.find("syntax error"); p != std::string::npos) detail = detail.substr(p);
    return absl::InvalidArgumentError(absl::StrCat(
        what, " is not valid JSON at ", TextPosition(text, e.byte > 0 ? e.byte - 1 : 0), ": ",
        detail));
  }
}

}  // namespace meshlib::core
