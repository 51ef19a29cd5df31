#include "benchmarks/common/bench_stats.h"

#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "absl/strings/str_format.h"

namespace meshlib::bench {
namespace {

double NsToUs(int64_t ns) { return static_cast<double>(ns) / 1e3; }

// `sorted` is non-empty and ascending; p in (0, 1].
int64_t NearestRank(const std::vector<int64_t>& sorted, double p) {
  // The epsilon keeps rounding in p * n from bumping an exact rank one up
  // (p999 of 1000 samples must be the 999th, not the maximum).
  const size_t n = sorted.size();
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(n) - 1e-9));
  rank = std::clamp<size_t>(rank, 1, n);
  return sorted[rank - 1];
}

}  // namespace

int64_t NowNs() {
  // CLOCK_MONOTONIC through the vDSO: no syscall, unaffected by NTP steps.
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

LatencySummary SummarizeLatencies(std::vector<int64_t>* latencies_ns) {
  LatencySummary summary;
  if (latencies_ns->empty()) return summary;
  std::sort(latencies_ns->begin(), latencies_ns->end());
  summary.p50_us = NsToUs(NearestRank(*latencies_ns, 0.50));
  summary.p99_us = NsToUs(NearestRank(*latencies_ns, 0.99));
  summary.p999_us = NsToUs(NearestRank(*latencies_ns, 0.999));
  summary.max_us = NsToUs(latencies_ns->back());
  return summary;
}

std::string FormatResult(const RunResult& result, bool json) {
  std::vector<int64_t> samples = result.latencies_ns;
  const LatencySummary summary = SummarizeLatencies(&samples);
  const double seconds = absl::ToDoubleSeconds(result.elapsed);
  const double qps =
      seconds > 0 ? static_cast<double>(result.calls) / seconds : 0.0;
  if (json) {
    // system and mode are fixed identifiers chosen by the client, never user
    // text, so they need no JSON escaping.
    return absl::StrFormat(
        "{\"system\":\"%s\",\"mode\":\"%s\",\"calls\":%d,\"qps\":%.1f,"
        "\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f}",
        result.system, result.mode, result.calls, qps, summary.p50_us,
        summary.p99_us, summary.p999_us, summary.max_us);
  }
  return absl::StrFormat(
      "%s %s: %d calls in %.2fs = %.0f calls/s; latency p50 %.1fus "
      "p99 %.1fus p999 %.1fus max %.1fus",
      result.system, result.mode, result.calls, seconds, qps, summary.p50_us,
      summary.p99_us, summary.p999_us, summary.max_us);
}

}  // namespace meshlib::bench
