// Shared result reporting for the end-to-end echo benchmark clients.
//
// Every client (raw TCP, gRPC, meshlib) reports through this file so that
// benchmarks/run_e2e.sh can compare them line for line:
//
//   bench::RunResult result;
//   result.system = "raw_tcp";
//   result.mode = "pingpong";
//   result.calls = completed;
//   result.elapsed = absl::Nanoseconds(end_ns - start_ns);
//   result.latencies_ns = std::move(samples);
//   std::cout << bench::FormatResult(result, /*json=*/true) << std::endl;
//
// prints
//
//   {"system":"raw_tcp","mode":"pingpong","calls":181234,"qps":36246.8,
//    "p50_us":26.91,"p99_us":35.10,"p999_us":61.02,"max_us":412.33}
//
// on one line. Threading: the functions are pure and thread-safe.
#ifndef BENCHMARKS_COMMON_BENCH_STATS_H_
#define BENCHMARKS_COMMON_BENCH_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace meshlib::bench {

// Monotonic clock in nanoseconds, cheap enough to read twice per call.
int64_t NowNs();

// What one client run measured, after warmup.
struct RunResult {
  // "raw_tcp", "grpc" or "meshlib"; becomes the "system" JSON field.
  std::string system;
  // "pingpong" or "throughput".
  std::string mode;
  // Calls completed inside the measured window.
  int64_t calls = 0;
  // Length of the measured window; qps is calls / elapsed.
  absl::Duration elapsed = absl::ZeroDuration();
  // One sample per completed call (any order), in nanoseconds. May be empty,
  // in which case the percentile fields are 0.
  std::vector<int64_t> latencies_ns;
};

struct LatencySummary {
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  double max_us = 0;
};

// Nearest-rank percentiles (the smallest sample with at least p of the
// samples at or below it), so p999 of 1000 samples is the 999th, not an
// interpolation that no call ever saw. Sorts `*latencies_ns` in place.
LatencySummary SummarizeLatencies(std::vector<int64_t>* latencies_ns);

// One line, no trailing newline. With `json`, the object shown above; without,
// a human-readable line with the same numbers. Copies the samples to sort them,
// once per run, so `result` stays untouched.
std::string FormatResult(const RunResult& result, bool json);

}  // namespace meshlib::bench

#endif  // BENCHMARKS_COMMON_BENCH_STATS_H_
