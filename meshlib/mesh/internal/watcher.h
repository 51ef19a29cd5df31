// The watcher of a mesh's configuration sources (meshlib::mesh internals).
#ifndef MESHLIB_MESH_INTERNAL_WATCHER_H_
#define MESHLIB_MESH_INTERNAL_WATCHER_H_

#include <sys/stat.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/config/config.h"
#include "meshlib/core/log.h"
#include "meshlib/etcd/etcd_client.h"
#include "meshlib/mesh/internal/mesh_core.h"

namespace meshlib::mesh::internal {

// Watches the configuration's sources and applies what changes: the file
// Open was given (polled: a changed size, time or inode is read again) and
// an etcd key (range, then watch from the next revision, like discovery).
// Documents are applied on its own thread, never on the control loop.
class Watcher {
 public:
  Watcher(std::shared_ptr<internal::MeshCore> core, std::string path)
      : core_(std::move(core)), path_(std::move(path)) {
    if (!path_.empty()) last_ = Stat(path_);
    thread_ = std::thread([this] { Run(); });
    if (!core_->options.etcd_endpoints.empty()) StartEtcd();
  }
  ~Watcher() {
    if (etcd_ != nullptr) {
      core_->control->RunAndWait([this] {
        etcd_call_.reset();
        core_->control->Cancel(etcd_retry_);
        etcd_.reset();
      });
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  struct FileId {
    bool exists = false;
    int64_t size = 0, mtime_ns = 0, inode = 0;
    bool operator==(const FileId& o) const {
      return exists == o.exists && size == o.size && mtime_ns == o.mtime_ns && inode == o.inode;
    }
  };
  static FileId Stat(const std::string& path) {
    struct stat st;
    FileId id;
    if (stat(path.c_str(), &st) != 0) return id;
    id.exists = true;
    id.size = st.st_size;
    id.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    id.inode = static_cast<int64_t>(st.st_ino);
    return id;
  }

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, absl::ToChronoNanoseconds(core_->options.file_poll_interval),
                   [this] { return stop_ || !queue_.empty(); });
      if (stop_) break;
      std::deque<std::pair<std::string, std::string>> docs;
      docs.swap(queue_);
      lock.unlock();
      if (!path_.empty()) {
        FileId now = Stat(path_);
        if (!(now == last_)) {
          last_ = now;
          if (now.exists) {
            std::ifstream in(path_);
            std::stringstream text;
            text << in.rdbuf();
            docs.emplace_back(path_, text.str());
          }
        }
      }
      for (auto& [source, text] : docs) ApplyText(source, text);
      lock.lock();
    }
  }

  void ApplyText(const std::string& source, const std::string& text) {
    absl::StatusOr<config::MeshConfig> cfg = config::ParseMeshConfig(text);
    if (!cfg.ok()) core_->Rejected(cfg.status());
    absl::Status st = cfg.ok() ? core_->Apply(*std::move(cfg)) : cfg.status();
    if (!st.ok()) {
      uint64_t generation;
      {
        std::lock_guard<std::mutex> lock(core_->mu);
        generation = core_->reload.generation;
      }
      core::Log(core::LogLevel::kWarning,
                absl::StrCat("mesh: configuration from ", source,
                             " rejected; keeping generation ", generation, ": ", st.message()));
    }
  }

  void Push(std::string source, std::string text) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.emplace_back(std::move(source), std::move(text));
    }
    cv_.notify_all();
  }

  // --- etcd (control loop) ---
  void StartEtcd() {
    core_->control->RunAndWait([this] {
      etcd::EtcdClientOptions o;
      o.endpoints = core_->options.etcd_endpoints;
      auto c = etcd::EtcdClient::Create(core_->control.get(), o);
      if (!c.ok()) {
        core::Log(core::LogLevel::kWarning,
                  absl::StrCat("mesh: etcd configuration source: ", c.status().message()));
        return;
      }
      etcd_ = *std::move(c);
      EtcdRange();
    });
  }
  void EtcdRetry() {
    etcd_call_.reset();
    etcd_retry_ = core_->control->RunAfter(absl::Seconds(1), [this] {
      etcd_retry_ = {};
      EtcdRange();
    });
  }
  void EtcdRange() {
    const std::string key = core_->options.etcd_key;
    etcd_call_ = etcd_->Range(key, "", [this, key](absl::StatusOr<etcd::RangeResponse> r) {
      if (!r.ok()) {
        core::Log(core::LogLevel::kWarning,
                  absl::StrCat("mesh: reading configuration key ", key, " from etcd: ",
                               r.status().message()));
        return EtcdRetry();
      }
      for (const etcd::KeyValue& kv : r->kvs) {
        if (kv.mod_revision != etcd_seen_) {
          etcd_seen_ = kv.mod_revision;
          Push(absl::StrCat("etcd key ", key), kv.value);
        }
      }
      etcd::EtcdClient::WatchRequest w;
      w.key = key;
      w.start_revision = r->revision + 1;
      etcd_call_ = etcd_->Watch(
          w,
          [this, key](const etcd::WatchResponse& resp) {
            if (resp.compact_revision != 0) return;  // ends; on_end re-reads
            for (const etcd::WatchEvent& e : resp.events) {
              if (e.type != etcd::WatchEvent::Type::kPut || e.kv.mod_revision == etcd_seen_) continue;
              etcd_seen_ = e.kv.mod_revision;
              Push(absl::StrCat("etcd key ", key), e.kv.value);
            }
          },
          [this](absl::Status) { EtcdRetry(); });
    });
  }

  const std::shared_ptr<internal::MeshCore> core_;
  const std::string path_;
  FileId last_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                         // guarded by mu_
  std::deque<std::pair<std::string, std::string>> queue_;     // guarded by mu_
  std::thread thread_;
  // Control loop only.
  std::unique_ptr<etcd::EtcdClient> etcd_;
  std::unique_ptr<etcd::EtcdCall> etcd_call_;
  runtime::TimerId etcd_retry_;
  int64_t etcd_seen_ = 0;
};

}  // namespace meshlib::mesh::internal

#endif  // MESHLIB_MESH_INTERNAL_WATCHER_H_
