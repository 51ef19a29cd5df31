// What a Mesh and its Clients share: runtime, control loop, configuration,
// discovery cache, connection pool, and the stacks being retired
// (meshlib::mesh internals).
#ifndef MESHLIB_MESH_INTERNAL_MESH_CORE_H_
#define MESHLIB_MESH_INTERNAL_MESH_CORE_H_

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/config/config.h"
#include "meshlib/core/log.h"
#include "meshlib/discovery/resolver.h"
#include "meshlib/tls/credentials.h"
#include "meshlib/mesh/internal/connection_pool.h"
#include "meshlib/mesh/internal/stack.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/runtime/event_loop.h"
#include "nlohmann/json.hpp"

namespace meshlib::mesh::internal {

struct MeshCore {
  MeshOptions options;
  std::shared_ptr<runtime::Runtime> runtime;
  std::shared_ptr<runtime::EventLoop> control;

  std::mutex apply_mu;  // one Apply or Client build at a time
  mutable std::mutex mu;
  std::shared_ptr<const config::MeshConfig> config;  // guarded by mu
  ReloadStats reload;                                // guarded by mu
  std::map<std::string, std::weak_ptr<mesh::Client>> clients;  // guarded by mu
  std::map<std::string, std::shared_ptr<Counters>> counters;   // guarded by mu

  struct DiscoveryEntry {
    nlohmann::json source;
    std::shared_ptr<discovery::Discovery> discovery;
  };
  std::mutex discovery_mu;
  std::map<std::string, DiscoveryEntry> discoveries;  // guarded by discovery_mu

  const std::shared_ptr<ConnectionPool> pool = std::make_shared<ConnectionPool>();

  // TLS credentials by their settings, shared by the services (and the
  // reloads) that use the same ones: one file watcher, one session cache.
  std::mutex tls_mu;
  std::map<std::string, std::weak_ptr<tls::CredentialsWatcher>> tls_watchers;  // guarded by tls_mu

  absl::StatusOr<std::shared_ptr<tls::CredentialsWatcher>> TlsFor(const tls::TlsOptions& o,
                                                                  const std::string& path) {
    std::string key = absl::StrCat(o.ca_file, "\n", o.cert_file, "\n", o.key_file, "\n",
                                   o.server_name, "\n", absl::StrJoin(o.identities, ","), "\n",
                                   absl::FormatDuration(o.handshake_timeout), "\n",
                                   absl::FormatDuration(o.reload_interval));
    std::lock_guard<std::mutex> lock(tls_mu);
    if (auto w = tls_watchers[key].lock()) return w;
    auto made = tls::CredentialsWatcher::Start(o, tls::Role::kClient);
    if (!made.ok()) {
      std::string m(made.status().message());
      if (m.rfind("tls.", 0) == 0) m = absl::StrCat(path, ".", m.substr(4));
      return absl::Status(made.status().code(), m);
    }
    tls_watchers[key] = *made;
    return *made;
  }

  // Stacks replaced by a reload (or whose Client went away), closed on the
  // control loop once no call holds them, or when the mesh's drain_timeout
  // passes (their calls then end with CANCELLED).
  struct Retiring {
    std::shared_ptr<const Stack> stack;
    absl::Time deadline;
    bool owns_channels;  // false: a newer stack shares them (AddInterceptor)
  };
  std::mutex retire_mu;
  std::vector<Retiring> retiring;  // guarded by retire_mu
  runtime::TimerId reap_timer;     // guarded by retire_mu
  bool closing = false;            // guarded by retire_mu
  // Set by Close(): calls fail at once, nothing new is built.
  std::atomic<bool> closed{false};

  ~MeshCore() {
    Close();
    control->RunAndWait([this] {
      std::lock_guard<std::mutex> lock(retire_mu);
      control->Cancel(reap_timer);
    });
    retiring.clear();
    discoveries.clear();
  }

  absl::Status Apply(config::MeshConfig config);  // Mesh::Apply
  void Rejected(absl::Status status);              // a document that did not parse

  // Ends every call in flight on every stack (CANCELLED), closes the pooled
  // connections (which ends blocking calls too) and refuses what comes
  // after. Any thread, including a call's callback; waits for nothing.
  void Close() {
    std::vector<std::shared_ptr<const Stack>> stacks;
    {
      std::lock_guard<std::mutex> lock(retire_mu);
      if (closing) return;
      closing = true;
      closed.store(true, std::memory_order_release);
      control->Cancel(reap_timer);
      for (Retiring& r : retiring) {
        if (r.owns_channels) stacks.push_back(r.stack);
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto& [name, weak] : clients) {
        if (auto c = weak.lock()) stacks.push_back(c->stack());
      }
    }
    for (const auto& s : stacks) s->CloseChannels("mesh closed");
    pool->Shutdown();
  }

  // The service's Discovery for `source`: the existing one when the
  // source is unchanged (a reload then does not restart it), else a new one.
  absl::StatusOr<std::shared_ptr<discovery::Discovery>> DiscoveryFor(const std::string& service,
                                                                    const nlohmann::json& source) {
    std::lock_guard<std::mutex> lock(discovery_mu);
    auto it = discoveries.find(service);
    if (it != discoveries.end() && it->second.source == source) return it->second.discovery;
    auto d = discovery::Discovery::Create(service, source, control.get(),
                                          absl::StrCat("services.", service, ".discovery"));
    if (!d.ok()) return d.status();
    std::shared_ptr<discovery::Discovery> shared = runtime::ShareOffLoop(std::move(*d));
    discoveries[service] = {source, shared};
    return shared;
  }

  std::shared_ptr<Counters> CountersFor(const std::string& service) {
    std::lock_guard<std::mutex> lock(mu);
    auto& c = counters[service];
    if (c == nullptr) c = std::make_shared<Counters>();
    return c;
  }

  void Retire(std::shared_ptr<const Stack> stack, bool owns_channels = true) {
    if (stack == nullptr) return;
    std::lock_guard<std::mutex> lock(retire_mu);
    if (closing) return;  // Close() ended its calls
    absl::Duration drain =
        stack->mesh_config != nullptr ? stack->mesh_config->mesh.drain_timeout : absl::ZeroDuration();
    retiring.push_back({std::move(stack), absl::Now() + drain, owns_channels});
    if (!reap_timer.valid()) {
      reap_timer = control->RunAfter(absl::Milliseconds(50), [this] { Reap(); });
    }
  }

  // Control loop: closes retired stacks no call holds any longer. A stack
  // still busy when its drain_timeout passes has its calls ended
  // (CANCELLED), as documented for drain_timeout.
  void Reap() {
    std::vector<std::shared_ptr<const Stack>> done, expired;
    {
      std::lock_guard<std::mutex> lock(retire_mu);
      reap_timer = {};
      absl::Time now = absl::Now();
      for (auto it = retiring.begin(); it != retiring.end();) {
        if (it->stack.use_count() == 1) {
          done.push_back(std::move(it->stack));
          it = retiring.erase(it);
          continue;
        }
        if (now >= it->deadline) {
          if (it->owns_channels) expired.push_back(it->stack);
          it->deadline = absl::InfiniteFuture();
        }
        ++it;
      }
      if (!retiring.empty() && !closing) {
        reap_timer = control->RunAfter(absl::Milliseconds(50), [this] { Reap(); });
      }
    }
    for (auto& s : expired) {
      core::Log(core::LogLevel::kWarning,
                absl::StrCat("mesh: a replaced configuration of ",
                             s->service ? s->service->name : "a service",
                             " still had calls in flight after its drain_timeout; they end now"));
      s->CloseChannels("configuration replaced and drain_timeout passed");
    }
    for (auto& s : done) AddToRetiredTotals(*s);
    done.clear();  // channels close here (or, if a call still holds one, after it)
  }

  static void AddToRetiredTotals(const Stack& s) {
    // A stack that shares its channels with a newer one (AddInterceptor)
    // leaves their counters to it.
    if (s.counters == nullptr || s.all == nullptr || s.all.use_count() > 1) return;
    ClientStats add;
    s.AddChannelCounters(&add);
    std::lock_guard<std::mutex> lock(s.counters->mu);
    AddCounters(add, &s.counters->retired);  }
};

}  // namespace meshlib::mesh::internal

#endif  // MESHLIB_MESH_INTERNAL_MESH_CORE_H_
