#include "meshlib/core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "meshlib/core/sync.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace meshlib::core {
namespace {

LogLevel LevelFromEnv() {
  const char* env = std::getenv("MESHLIB_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  if (std::strcmp(env, "debug") == 0) return LogLevel::kDebug;
  if (std::strcmp(env, "warning") == 0) return LogLevel::kWarning;
  if (std::strcmp(env, "error") == 0) return LogLevel::kError;
  return LogLevel::kInfo;
}

std::atomic<int>& MinLevel() {
  static std::atomic<int> level{static_cast<int>(LevelFromEnv())};
  return level;
}

core::Mutex& SinkMutex() {
  static core::Mutex* mu = new core::Mutex();
  return *mu;
}

LogSink& Sink() {
  static LogSink* sink = new LogSink();
  return *sink;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "D";
    case LogLevel::kInfo: return "I";
    case LogLevel::kWarning: return "W";
    case LogLevel::kError: return "E";
  }
  return "?";
}

}  // namespace

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >= MinLevel().load(std::memory_order_relaxed);
}

void SetMinLogLevel(LogLevel level) {
  MinLevel().store(static_cast<int>(level), std::memory_order_relaxed);
}

void Log(LogLevel level, absl::string_view message) {
  if (!LogEnabled(level)) return;
  core::MutexLock lock(&SinkMutex());
  if (Sink()) {
    Sink()(level, message);
    return;
  }
  std::string ts = absl::FormatTime("%H:%M:%E6S", absl::Now(), absl::LocalTimeZone());
  std::fprintf(stderr, "%s %s meshlib: %.*s\n", LevelName(level), ts.c_str(),
               static_cast<int>(message.size()), message.data());
}

LogSink SetLogSink(LogSink sink) {
  core::MutexLock lock(&SinkMutex());
  LogSink old = std::move(Sink());
  Sink() = std::move(sink);
  return old;
}

}  // namespace meshlib::core
