#include "meshlib/client/layers/fault_layer.h"

#include "absl/strings/str_cat.h"

namespace meshlib::client {

std::string FaultLayer::Describe() const {
  if (!fault_.enabled()) return "none";
  std::string f;
  if (fault_.delay_percent > 0) {
    absl::StrAppend(&f, "delay ", fault_.delay_percent, "% of calls by ",
                    absl::FormatDuration(fault_.delay));
  }
  if (fault_.abort_percent > 0) {
    absl::StrAppend(&f, f.empty() ? "" : "; ", "abort ", fault_.abort_percent, "% with ",
                    absl::StatusCodeToString(fault_.abort_code));
  }
  return f;
}

}  // namespace meshlib::client
