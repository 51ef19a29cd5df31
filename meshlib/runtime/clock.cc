#include "meshlib/runtime/executor.h"

namespace meshlib::runtime {
namespace {

class WallClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};

}  // namespace

Clock& RealClock() {
  static WallClock* clock = new WallClock();
  return *clock;
}

}  // namespace meshlib::runtime
