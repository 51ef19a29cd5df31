// Test helpers for real processes: spawn a child with its output captured,
// wait for a line it prints, signal it, reap it; pick a free loopback port;
// make a scratch directory; wait for a condition.
//
//   testing::Subprocess dns({"/usr/sbin/dnsmasq", "--no-daemon", ...});
//   std::string line = p.WaitForLine("listening on ", absl::Seconds(10));
//   p.Signal(SIGTERM);
//   int rc = p.Wait(absl::Seconds(5));
//
// Threading: one thread per Subprocess.
#ifndef MESHLIB_TESTING_SUBPROCESS_H_
#define MESHLIB_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace meshlib::testing {

class Subprocess {
 public:
  // argv[0] is a path (no PATH search). Spawn failures are test failures.
  explicit Subprocess(std::vector<std::string> argv);
  // SIGKILLs the child if it is still running, and reaps it.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Reads stdout (or stderr) until a line starting with `prefix` (or
  // containing `prefix`, for WaitForText) appears; returns the line, or ""
  // on timeout or EOF.
  std::string WaitForLine(absl::string_view prefix, absl::Duration timeout);
  std::string WaitForStderrText(absl::string_view text, absl::Duration timeout);

  // Waits for exit; returns the exit code, -1 on timeout or death by signal.
  int Wait(absl::Duration timeout);
  bool Running();  // false once exited (reaps)
  void Signal(int sig);
  pid_t pid() const { return pid_; }
  // What was read so far (Wait drains the rest).
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  static bool Pump(int fd, std::string* into, absl::Time until);
  void Drain();

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  bool exited_ = false;
  std::string out_;
  std::string err_;
};

// A TCP (and UDP) port on 127.0.0.1 that was free a moment ago.
int PickFreePort();

// A fresh directory under TEST_TMPDIR (or /tmp).
std::string MakeTempDir(absl::string_view prefix);

// Polls `pred` every 5ms until it holds (true) or `timeout` passes (false).
bool Eventually(const std::function<bool()>& pred, absl::Duration timeout = absl::Seconds(10));

// Path of a runfile of this workspace, e.g. "examples/echo/echo_server".
std::string Runfile(absl::string_view path);

}  // namespace meshlib::testing

#endif  // MESHLIB_TESTING_SUBPROCESS_H_
