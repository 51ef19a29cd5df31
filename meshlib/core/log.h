// Minimal logging: one line per event, to stderr by default.
//
//   core::Log(core::LogLevel::kWarning,
//             absl::StrCat("closing connection from ", peer, ": ", status.ToString()));
//
// Tests and embedding applications can redirect lines with SetLogSink.
// Threading: all functions are thread-safe.
#ifndef MESHLIB_CORE_LOG_H_
#define MESHLIB_CORE_LOG_H_

#include <functional>

#include "absl/strings/string_view.h"

namespace meshlib::core {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void Log(LogLevel level, absl::string_view message);

// Lines below `level` are dropped. Default: kInfo, or MESHLIB_LOG_LEVEL
// (debug|info|warning|error) from the environment.
void SetMinLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// Replaces the sink (nullptr restores stderr). Returns the previous sink.
using LogSink = std::function<void(LogLevel, absl::string_view)>;
LogSink SetLogSink(LogSink sink);

}  // namespace meshlib::core

#endif  // MESHLIB_CORE_LOG_H_
