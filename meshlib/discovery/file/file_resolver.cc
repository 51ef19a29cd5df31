#include "meshlib/discovery/file/file_resolver.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/discovery/static/static_resolver.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;

struct FileOptions {
  std::string path;
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration settle = absl::Milliseconds(20);
};

absl::StatusOr<FileOptions> ParseFileOptions(const json& config, absl::string_view path) {
  if (auto st = core::CheckObject(config, path, {"path", "poll_interval", "settle"}); !st.ok()) {
    return st;
  }
  FileOptions o;
  if (auto st = core::OptionalString(config, path, "path", &o.path); !st.ok()) return st;
  if (o.path.empty()) return core::FieldError(core::JoinPath(path, "path"), "required");
  if (auto st = core::OptionalDuration(config, path, "poll_interval", absl::Milliseconds(10),
                                         absl::Seconds(60), &o.poll_interval);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(config, path, "settle", absl::ZeroDuration(),
                                         absl::Seconds(5), &o.settle);
      !st.ok()) {
    return st;
  }
  return o;
}

// What identifies one version of the file without reading it.
struct FileIdentity {
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileIdentity& o) const {
    return exists == o.exists && dev == o.dev && ino == o.ino && size == o.size &&
           mtime_ns == o.mtime_ns;
  }
  bool operator!=(const FileIdentity& o) const { return !(*this == o); }
};

FileIdentity Identify(const std::string& path) {
  struct stat st;
  FileIdentity id;
  if (stat(path.c_str(), &st) != 0) return id;
  id.exists = true;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.size = st.st_size;
  id.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return id;
}

class FileResolver final : public Resolver, public runtime::FdHandler {
 public:
  FileResolver(FileOptions o, runtime::EventLoop* loop) : o_(std::move(o)), loop_(loop) {
    size_t slash = o_.path.rfind('/');
    dir_ = slash == std::string::npos ? "." : (slash == 0 ? "/" : o_.path.substr(0, slash));
    base_ = slash == std::string::npos ? o_.path : o_.path.substr(slash + 1);
  }

  ~FileResolver() override {
    loop_->Cancel(poll_timer_);
    loop_->Cancel(settle_timer_);
    if (inotify_fd_ >= 0) {
      loop_->Unwatch(inotify_fd_);
      close(inotify_fd_);
    }
  }

  void Start(ResolverSink* sink) override {
    sink_ = sink;
    StartInotify();
    Reload(/*force=*/true);
    SchedulePoll();
  }

  void OnFdEvents(uint32_t) override {
    alignas(inotify_event) char buf[8192];
    bool relevant = false;
    for (;;) {
      ssize_t n = read(inotify_fd_, buf, sizeof(buf));
      if (n <= 0) break;
      for (ssize_t off = 0; off < n;) {
        auto* ev = reinterpret_cast<inotify_event*>(buf + off);
        if (ev->mask & (IN_IGNORED | IN_Q_OVERFLOW)) relevant = true;
        if (ev->len > 0 && base_ == ev->name) relevant = true;
        if (ev->mask & IN_IGNORED) dir_watch_lost_ = true;
        off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      }
    }
    if (dir_watch_lost_) {
      // The directory itself went away; polling takes over until it is back.
      loop_->Unwatch(inotify_fd_);
      close(inotify_fd_);
      inotify_fd_ = -1;
    }
    if (relevant) ScheduleReload();
  }

 private:
  void StartInotify() {
    dir_watch_lost_ = false;
    inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd_ < 0) return;  // polling alone still works
    int wd = inotify_add_watch(inotify_fd_, dir_.c_str(),
                               IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                                   IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF);
    if (wd < 0 || !loop_->Watch(inotify_fd_, EPOLLIN, this).ok()) {
      close(inotify_fd_);
      inotify_fd_ = -1;
    }
  }

  void ScheduleReload() {
    if (settle_timer_.valid()) return;
    settle_timer_ = loop_->RunAfter(o_.settle, [this] {
      settle_timer_ = {};
      Reload(/*force=*/true);
    });
  }

  void SchedulePoll() {
    poll_timer_ = loop_->RunAfter(o_.poll_interval, [this] {
      if (inotify_fd_ < 0) StartInotify();
      Reload(/*force=*/false);
      SchedulePoll();
    });
  }

  // Polls skip the read when the file's identity is unchanged; inotify events
  // force it, since two same-size writes can share a coarse mtime.
  void Reload(bool force) {
    FileIdentity id = Identify(o_.path);
    if (!force && id == seen_) return;
    seen_ = id;
    std::string what = absl::StrCat("endpoint file \"", o_.path, "\"");
    if (!id.exists) {
      sink_->ReportError(absl::NotFoundError(absl::StrCat(what, " does not exist")));
      return;
    }
    std::ifstream in(o_.path);
    if (!in) {
      sink_->ReportError(
          absl::PermissionDeniedError(absl::StrCat(what, " cannot be read: ", strerror(errno))));
      return;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    auto endpoints = ParseEndpointFile(ss.str(), what);
    if (!endpoints.ok()) {
      sink_->ReportError(endpoints.status());
      return;
    }
    if (published_ && *endpoints == last_published_) return;  // nothing new
    published_ = true;
    last_published_ = *endpoints;
    sink_->Publish(*std::move(endpoints));
  }

  const FileOptions o_;
  runtime::EventLoop* const loop_;
  std::string dir_, base_;
  ResolverSink* sink_ = nullptr;
  int inotify_fd_ = -1;
  bool dir_watch_lost_ = false;
  runtime::TimerId poll_timer_;
  runtime::TimerId settle_timer_;
  FileIdentity seen_;
  bool published_ = false;
  std::vector<Endpoint> last_published_;
};

class FileResolverFactory final : public ResolverFactory {
 public:
  std::string kind() const override { return "file"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    return ParseFileOptions(config, path).status();
  }
  absl::StatusOr<std::unique_ptr<Resolver>> Create(const ResolverArgs& args) const override {
    auto o = ParseFileOptions(args.config, args.path);
    if (!o.ok()) return o.status();
    return std::make_unique<FileResolver>(*std::move(o), args.loop);
  }
};

}  // namespace

absl::StatusOr<std::vector<Endpoint>> ParseEndpointFile(absl::string_view text,
                                                        absl::string_view what) {
  auto j = core::ParseJsonText(text, what);
  if (!j.ok()) return j.status();
  std::string root = std::string(what);
  if (auto st = core::CheckObject(*j, root, {"endpoints"}); !st.ok()) return st;
  auto it = j->find("endpoints");
  if (it == j->end()) return core::FieldError(core::JoinPath(root, "endpoints"), "required");
  return ParseEndpointList(*it, core::JoinPath(root, "endpoints"));
}

std::unique_ptr<ResolverFactory> MakeFileResolverFactory() {
  return std::make_unique<FileResolverFactory>();
}

}  // namespace meshlib::discovery
