#include "examples/demo/fleet.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace meshlib::demo {
namespace {

constexpr char kReadyPrefix[] = "listening on ";
constexpr absl::Duration kStartTimeout = absl::Seconds(10);

// An anonymous file for a child's output: read back on failure, gone when
// the last descriptor closes, nothing to clean up.
absl::StatusOr<int> AnonymousLogFile() {
  const char* tmp = std::getenv("TMPDIR");
  std::string path =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/meshlib-demo-XXXXXX");
  int fd = mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot create a log file in ", path, ": ", std::strerror(errno)));
  }
  unlink(path.c_str());
  return fd;
}

// Waits up to `timeout` for `pid` to exit; true once it is reaped.
bool Reap(pid_t pid, absl::Duration timeout) {
  absl::Time until = absl::Now() + timeout;
  for (;;) {
    pid_t r = waitpid(pid, nullptr, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (absl::Now() >= until) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

}  // namespace

Fleet::Fleet(std::string echo_server) : echo_server_(std::move(echo_server)) {}

Fleet::~Fleet() {
  StopAll();
  for (Instance& inst : instances_) {
    if (inst.log_fd >= 0) close(inst.log_fd);
  }
}

absl::StatusOr<size_t> Fleet::Start(InstanceSpec spec) {
  Instance inst;
  inst.spec = std::move(spec);
  absl::Status st = Spawn(inst);
  if (!st.ok()) {
    if (inst.log_fd >= 0) close(inst.log_fd);
    return st;
  }
  instances_.push_back(std::move(inst));
  return instances_.size() - 1;
}

void Fleet::Kill(size_t i) {
  Instance& inst = instances_[i];
  if (inst.pid <= 0) return;
  kill(inst.pid, SIGKILL);
  Reap(inst.pid, absl::InfiniteDuration());
  inst.pid = -1;
}

absl::Status Fleet::Restart(size_t i) {
  Instance& inst = instances_[i];
  if (inst.pid > 0) return absl::OkStatus();
  return Spawn(inst);
}

void Fleet::StopAll(absl::Duration grace) {
  for (Instance& inst : instances_) {
    if (inst.pid > 0) kill(inst.pid, SIGTERM);
  }
  absl::Time until = absl::Now() + grace;
  for (Instance& inst : instances_) {
    if (inst.pid <= 0) continue;
    if (!Reap(inst.pid, std::max(absl::ZeroDuration(), until - absl::Now()))) {
      kill(inst.pid, SIGKILL);
      Reap(inst.pid, absl::InfiniteDuration());
    }
    inst.pid = -1;
  }
}

absl::Status Fleet::Spawn(Instance& inst) {
  absl::StatusOr<int> log = AnonymousLogFile();
  if (!log.ok()) return log.status();
  if (inst.log_fd >= 0) close(inst.log_fd);  // the previous run's output
  inst.log_fd = *log;

  // Everything the child needs is prepared before fork: between fork and
  // exec a multi-threaded process may only make async-signal-safe calls.
  std::vector<std::string> args = {echo_server_,       absl::StrCat("--port=", inst.port),
                                   "--host=127.0.0.1", "--name=" + inst.spec.name,
                                   "--io_threads=1",   "--drain_timeout=1s"};
  args.insert(args.end(), inst.spec.flags.begin(), inst.spec.flags.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const int log_fd = inst.log_fd;

  pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    setpgid(0, 0);                        // out of the terminal's Ctrl-C
    prctl(PR_SET_PDEATHSIG, SIGKILL);     // dies with the demo
    if (getppid() != parent) _exit(127);  // the demo died before prctl
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // the demo blocks SIGINT/SIGTERM
    int null_fd = open("/dev/null", O_RDONLY);  // nothing to read from the terminal
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  inst.pid = pid;
  all_pids_.push_back(pid);

  absl::Time until = absl::Now() + kStartTimeout;
  for (;;) {
    std::string out = ReadLog(inst);
    // Whole lines only: the last one may still be being written.
    const size_t last_newline = out.rfind('\n');
    absl::string_view complete = last_newline == std::string::npos
                                     ? absl::string_view()
                                     : absl::string_view(out).substr(0, last_newline);
    for (absl::string_view line : absl::StrSplit(complete, '\n')) {
      if (!absl::ConsumePrefix(&line, kReadyPrefix)) continue;
      inst.address = std::string(absl::StripAsciiWhitespace(line));
      absl::string_view port = inst.address;
      port.remove_prefix(port.rfind(':') + 1);
      if (!absl::SimpleAtoi(port, &inst.port)) {
        kill(pid, SIGKILL);
        Reap(pid, absl::InfiniteDuration());
        inst.pid = -1;
        return absl::InternalError(
            absl::StrCat(inst.spec.name, ": cannot read a port in \"", line, "\""));
      }
      return absl::OkStatus();
    }
    int wstatus = 0;
    if (waitpid(pid, &wstatus, WNOHANG) == pid) {
      inst.pid = -1;
      std::string why = WIFEXITED(wstatus) ? absl::StrCat("exited with ", WEXITSTATUS(wstatus))
                                           : absl::StrCat("killed by signal ", WTERMSIG(wstatus));
      if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 127 && out.empty()) {
        why += " (could not run it)";
      }
      return absl::FailedPreconditionError(absl::StrCat(inst.spec.name, " (", echo_server_, ") ",
                                                        why, out.empty() ? "" : ": ",
                                                        absl::StripTrailingAsciiWhitespace(out)));
    }
    if (absl::Now() >= until) {
      kill(pid, SIGKILL);
      Reap(pid, absl::InfiniteDuration());
      inst.pid = -1;
      return absl::DeadlineExceededError(
          absl::StrCat(inst.spec.name, " did not print \"", kReadyPrefix, "...\" within ",
                       absl::FormatDuration(kStartTimeout), "; it printed: ", out));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

std::string Fleet::ReadLog(const Instance& inst) {
  std::string out;
  char buf[4096];
  off_t offset = 0;
  for (;;) {
    ssize_t n = pread(inst.log_fd, buf, sizeof(buf), offset);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    offset += n;
    if (out.size() > 64 * 1024) break;  // enough to explain a failure
  }
  return out;
}

}  // namespace meshlib::demo
