// Fleet: the echo_server processes of the demo, started on loopback and
// always stopped again.
//
//   demo::Fleet fleet("bazel-bin/examples/echo/echo_server");
//   absl::StatusOr<size_t> i = fleet.Start({"echo-1", "slow", {"--latency_ms=250"}});
//   fleet.Kill(*i);           // SIGKILL, as a crash would
//   fleet.Restart(*i);        // same flags, same port
//   fleet.StopAll();          // SIGTERM, then SIGKILL what is left; reaps all
//
// Three things make sure no instance outlives the demo: StopAll (also run by
// the destructor, so every return path of main stops them), each child's
// PR_SET_PDEATHSIG (the kernel SIGKILLs it if the demo itself dies, even by
// SIGKILL), and each child's own process group, so a Ctrl-C on the terminal
// reaches only the demo, which then stops its children in order.
//
// Threading: not thread-safe; use from one thread. PR_SET_PDEATHSIG fires
// when the thread that started the child exits, so that thread should be
// the main one.
#ifndef MESHLIB_EXAMPLES_DEMO_FLEET_H_
#define MESHLIB_EXAMPLES_DEMO_FLEET_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace meshlib::demo {

struct InstanceSpec {
  std::string name;                // --name, shown in tables
  std::string role;                // what the demo made it: "healthy", "slow", ...
  std::vector<std::string> flags;  // extra echo_server flags
};

struct Instance {
  InstanceSpec spec;
  int port = 0;         // kept across restarts, so static discovery still lists it
  std::string address;  // "127.0.0.1:PORT"
  pid_t pid = -1;       // -1 while not running
  int log_fd = -1;      // the child's stdout and stderr (an unlinked file)
};

class Fleet {
 public:
  explicit Fleet(std::string echo_server);
  ~Fleet();  // StopAll()
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Starts an instance on a free port and waits for its "listening on" line;
  // returns its index. The error carries what the server printed.
  absl::StatusOr<size_t> Start(InstanceSpec spec);
  // SIGKILLs a running instance and reaps it.
  void Kill(size_t i);
  // Starts a stopped instance again with the same flags on the same port.
  absl::Status Restart(size_t i);
  // SIGTERM to every running instance, up to `grace` for them to drain,
  // then SIGKILL; reaps all. Idempotent.
  void StopAll(absl::Duration grace = absl::Seconds(3));

  size_t size() const { return instances_.size(); }
  const Instance& instance(size_t i) const { return instances_[i]; }
  bool running(size_t i) const { return instances_[i].pid > 0; }
  // Every pid started, including those already stopped.
  const std::vector<pid_t>& all_pids() const { return all_pids_; }

 private:
  // Spawns `inst` on inst.port and waits until it is ready.
  absl::Status Spawn(Instance& inst);
  // What the instance has printed so far.
  static std::string ReadLog(const Instance& inst);

  const std::string echo_server_;
  std::vector<Instance> instances_;
  std::vector<pid_t> all_pids_;
};

}  // namespace meshlib::demo

#endif  // MESHLIB_EXAMPLES_DEMO_FLEET_H_
