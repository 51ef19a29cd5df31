#include "meshlib/testing/subprocess.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace meshlib::testing {

Subprocess::Subprocess(std::vector<std::string> argv) {
  int out[2], err[2];
  EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
  EXPECT_EQ(pipe2(err, O_CLOEXEC), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
  EXPECT_EQ(rc, 0) << "cannot start " << argv[0] << ": " << strerror(rc);
  if (rc != 0) {
    pid_ = -1;
    exited_ = true;
  }
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    Wait(absl::Seconds(5));
  }
  close(out_fd_);
  close(err_fd_);
}

std::string Subprocess::WaitForLine(absl::string_view prefix, absl::Duration timeout) {
  absl::Time give_up = absl::Now() + timeout;
  for (;;) {
    size_t pos = 0;
    while (pos < out_.size()) {
      size_t nl = out_.find('\n', pos);
      if (nl == std::string::npos) break;
      std::string line = out_.substr(pos, nl - pos);
      if (absl::StartsWith(line, prefix)) return line;
      pos = nl + 1;
    }
    if (absl::Now() >= give_up || !Pump(out_fd_, &out_, give_up)) return "";
  }
}

std::string Subprocess::WaitForStderrText(absl::string_view text, absl::Duration timeout) {
  absl::Time give_up = absl::Now() + timeout;
  for (;;) {
    size_t pos = err_.find(std::string(text));
    if (pos != std::string::npos) {
      size_t start = err_.rfind('\n', pos);
      start = start == std::string::npos ? 0 : start + 1;
      size_t end = err_.find('\n', pos);
      return err_.substr(start, end == std::string::npos ? std::string::npos : end - start);
    }
    if (absl::Now() >= give_up || !Pump(err_fd_, &err_, give_up)) return "";
  }
}

int Subprocess::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  absl::Time give_up = absl::Now() + timeout;
  for (;;) {
    int status;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      Drain();
      pid_ = -pid_;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (r < 0) return -1;
    if (absl::Now() >= give_up) return -1;
    // Keep the pipes flowing so a chatty child never blocks on a full pipe.
    Pump(out_fd_, &out_, absl::Now());
    Pump(err_fd_, &err_, absl::Now());
    absl::SleepFor(absl::Milliseconds(5));
  }
}

bool Subprocess::Running() {
  if (pid_ <= 0 || exited_) return false;
  int status;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exited_ = true;
    Drain();
    pid_ = -pid_;
    return false;
  }
  return true;
}

void Subprocess::Signal(int sig) {
  if (pid_ > 0 && !exited_) kill(pid_, sig);
}

bool Subprocess::Pump(int fd, std::string* into, absl::Time until) {
  pollfd p{fd, POLLIN, 0};
  int ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(until - absl::Now())));
  if (poll(&p, 1, std::min(ms, 50)) <= 0) return absl::Now() < until;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n <= 0) return false;
  into->append(buf, static_cast<size_t>(n));
  return true;
}

void Subprocess::Drain() {
  for (auto [fd, s] : {std::make_pair(out_fd_, &out_), std::make_pair(err_fd_, &err_)}) {
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) s->append(buf, static_cast<size_t>(n));
  }
}

int PickFreePort() {
  // Bind TCP port 0, then check the same number is free for UDP too (DNS
  // servers want both).
  for (int attempt = 0; attempt < 50; ++attempt) {
    int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    if (bind(t, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        getsockname(t, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      close(t);
      continue;
    }
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    bool udp_ok = bind(u, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    close(u);
    close(t);
    if (udp_ok) return ntohs(a.sin_port);
  }
  ADD_FAILURE() << "no free port";
  return 0;
}

std::string MakeTempDir(absl::string_view prefix) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string templ = absl::StrCat(tmp ? tmp : "/tmp", "/", prefix, "XXXXXX");
  char* dir = mkdtemp(templ.data());
  EXPECT_NE(dir, nullptr) << "mkdtemp " << templ;
  return templ;
}

bool Eventually(const std::function<bool()>& pred, absl::Duration timeout) {
  absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return pred();
}

std::string Runfile(absl::string_view path) {
  const char* dir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(dir ? dir : ".", "/meshlib/", path);
}

}  // namespace meshlib::testing
