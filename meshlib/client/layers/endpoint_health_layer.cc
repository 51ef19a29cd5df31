#include "meshlib/client/layers/endpoint_health_layer.h"

#include "absl/strings/str_cat.h"

namespace meshlib::client {

bool IsEndpointFailure(const CallResult& r) {
  switch (r.status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kDeadlineExceeded:
      return true;
    default:
      return false;
  }
}

void EndpointHealthLayer::OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) {
  if (attempt.outlier == nullptr) return;
  if (result.status.code() == absl::StatusCode::kCancelled) {
    // A losing hedge says nothing of the endpoint; a probe it carried is
    // given back for another call.
    if (attempt.probe) attempt.outlier->ReleaseProbe();
    return;
  }
  if (attempt.outlier->Record(IsEndpointFailure(result))) on_outlier_signal_();
}

std::string EndpointHealthLayer::Describe() const {
  auto dur = [](absl::Duration d) { return absl::FormatDuration(d); };
  std::string out;
  if (!shared_from_.empty()) {
    absl::StrAppend(&out, "as judged for ", shared_from_, " (one verdict per endpoint)");
  } else {
    if (outliers_ != nullptr) {
      const resilience::OutlierDetectionOptions& o = outliers_->options();
      absl::StrAppend(&out, "outlier detection: ", o.consecutive_failures,
                      " failures in a row, sweep every ", dur(o.interval), ", ejection ",
                      dur(o.base_ejection_time), " growing to ", dur(o.max_ejection_time),
                      ", at most ", o.max_ejection_percent, "% out");
      if (o.success_rate.enabled) {
        absl::StrAppend(&out, ", success rate below mean - ", o.success_rate.stdev_factor,
                        " stdev");
      }
      if (o.failure_percentage.enabled) {
        absl::StrAppend(&out, ", failures >= ", o.failure_percentage.threshold, "%");
      }
    } else {
      out = "outlier detection off";
    }
    if (health_.has_value()) {
      absl::StrAppend(&out, "; health checks: ", health_->method, " every ",
                      dur(health_->interval), " (", health_->unhealthy_threshold, " down, ",
                      health_->healthy_threshold, " up)");
    } else {
      absl::StrAppend(&out, "; health checks off");
    }
  }
  absl::StrAppend(&out, "; unreachable endpoints skipped");
  return out;
}

}  // namespace meshlib::client
