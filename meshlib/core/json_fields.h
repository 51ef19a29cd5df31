// Helpers for reading typed fields out of JSON configuration with errors that
// name the field's path and the rule it broke:
//
//   services.echo.discovery.dns.port: must be an integer between 1 and 65535
//
// Every section parser in meshlib (the mesh config, each discovery kind, each
// policy) uses these so that messages read the same everywhere.
//
// Threading: stateless, thread-safe.
#ifndef MESHLIB_CORE_JSON_FIELDS_H_
#define MESHLIB_CORE_JSON_FIELDS_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace meshlib::core {

// INVALID_ARGUMENT "<path>: <rule>".
absl::Status FieldError(absl::string_view path, absl::string_view rule);

// "<path>.<key>", or "<key>" when path is empty.
std::string JoinPath(absl::string_view path, absl::string_view key);

// Fails unless `j` is an object whose keys are all in `known`; the error names
// the first unknown key and lists the known ones.
absl::Status CheckObject(const nlohmann::json& j, absl::string_view path,
                         std::initializer_list<absl::string_view> known);

// Parses a duration string such as "250ms"; errors name `path`.
absl::StatusOr<absl::Duration> ParseDurationField(const nlohmann::json& j,
                                                  absl::string_view path);

// Readers for an optional member `key` of object `obj`: leave `*out` as it is
// when the key is absent, fail with a path-naming error when it has the wrong
// type or is out of range.
absl::Status OptionalDuration(const nlohmann::json& obj, absl::string_view path,
                              absl::string_view key, absl::Duration min, absl::Duration max,
                              absl::Duration* out);
absl::Status OptionalInt(const nlohmann::json& obj, absl::string_view path,
                         absl::string_view key, int64_t min, int64_t max, int64_t* out);
absl::Status OptionalDouble(const nlohmann::json& obj, absl::string_view path,
                            absl::string_view key, double min, double max, double* out);
absl::Status OptionalBool(const nlohmann::json& obj, absl::string_view path,
                          absl::string_view key, bool* out);
absl::Status OptionalString(const nlohmann::json& obj, absl::string_view path,
                            absl::string_view key, std::string* out);
// A non-empty list of non-empty strings.
absl::Status OptionalStringList(const nlohmann::json& obj, absl::string_view path,
                                absl::string_view key, std::vector<std::string>* out);

// "line L, column C" of a byte offset in `text` (for JSON syntax errors).
std::string TextPosition(absl::string_view text, size_t byte_offset);

// Parses JSON text; a syntax error names `what`, the line and the column.
absl::StatusOr<nlohmann::json> ParseJsonText(absl::string_view text, absl::string_view what);

}  // namespace meshlib::core

#endif  // MESHLIB_CORE_JSON_FIELDS_H_
