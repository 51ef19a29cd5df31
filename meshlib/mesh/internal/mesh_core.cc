#include "meshlib/mesh/internal/mesh_core.h"

#include <optional>

#include "meshlib/client/channel.h"

namespace meshlib::mesh::internal {

using client::CallResult;

void MeshCore::Rejected(absl::Status status) {
  std::lock_guard<std::mutex> lock(mu);
  ++reload.rejected;
  reload.last_error = std::move(status);
}

absl::Status MeshCore::Apply(config::MeshConfig config) {
  if (std::optional<CallResult> refused = client::RefuseBlockingOnReactor("Mesh::Apply")) {
    return refused->status;
  }
  std::lock_guard<std::mutex> apply(apply_mu);
  if (closed.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("mesh closed: configuration not applied");
  }
  auto cfg = std::make_shared<const config::MeshConfig>(std::move(config));
  std::vector<std::shared_ptr<mesh::Client>> live;
  uint64_t generation;
  std::shared_ptr<const config::MeshConfig> current;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = clients.begin(); it != clients.end();) {
      if (auto c = it->second.lock()) {
        live.push_back(std::move(c));
        ++it;
      } else {
        it = clients.erase(it);
      }
    }
    generation = reload.generation + 1;
    current = this->config;
  }
  auto reject = [&](absl::Status st, std::vector<std::shared_ptr<const Stack>>* built) {
    std::lock_guard<std::mutex> lock(mu);
    ++reload.rejected;
    reload.last_error = st;
    for (auto& b : *built) Retire(std::move(b));
    return st;
  };
  std::vector<std::shared_ptr<const Stack>> next;
  // What cannot change without a restart is refused, not silently kept.
  if (cfg->mesh.io_threads != current->mesh.io_threads) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
                      "mesh.io_threads: cannot change while the mesh runs (", current->mesh.io_threads,
                      " -> ", cfg->mesh.io_threads, "); restart to apply it")),
                  &next);
  }
  if (cfg->mesh.busy_poll != current->mesh.busy_poll) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
                      "mesh.busy_poll: cannot change while the mesh runs (",
                      absl::FormatDuration(current->mesh.busy_poll), " -> ",
                      absl::FormatDuration(cfg->mesh.busy_poll), "); restart to apply it")),
                  &next);
  }
  // Build every new stack first: a document that fails to build for one
  // service changes nothing.
  for (const auto& c : live) {
    std::shared_ptr<const Stack> old = c->stack();
    auto s = BuildStack(*this, c->service(), cfg, generation, old->interceptors, old.get());
    if (!s.ok()) return reject(s.status(), &next);
    // A stack without endpoints replaces one with endpoints only if the
    // service left the configuration: otherwise the source is not ready (or
    // broken) and the old stack keeps serving.
    if ((*s)->service != nullptr && (*s)->all->endpoint_count() == 0 && old->all != nullptr &&
        old->all->endpoint_count() > 0) {
      next.push_back(*std::move(s));
      return reject(absl::UnavailableError(absl::StrCat(
                        "services.", c->service(), ".discovery: no endpoints within ",
                        absl::FormatDuration(options.ready_timeout),
                        " of applying the new configuration; keeping the current one")),
                    &next);
    }
    next.push_back(*std::move(s));
  }
  for (size_t i = 0; i < live.size(); ++i) live[i]->Replace(std::move(next[i]), false);
  std::lock_guard<std::mutex> lock(mu);
  this->config = cfg;
  reload.generation = generation;
  ++reload.applied;
  reload.last_applied = absl::Now();
  return absl::OkStatus();
}

}  // namespace meshlib::mesh::internal
