#include "meshlib/core/deadline_context.h"

namespace meshlib::core::internal {

thread_local absl::Time thread_deadline = absl::InfiniteFuture();

}  // namespace meshlib::core::internal
