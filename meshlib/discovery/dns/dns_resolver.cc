#include "meshlib/discovery/dns/dns_resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/time.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/types/span.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/core/backoff.h"
#include "meshlib/core/log.h"
#include "meshlib/discovery/dns/dns_message.h"
#include "meshlib/discovery/dns/dns_refresh.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;
using core::FieldError;
using core::JoinPath;
namespace di = discovery_internal;

constexpr int kClassIn = 1;
constexpr uint32_t kNoTtl = std::numeric_limits<uint32_t>::max();

enum class Family { kAny, kIpv4, kIpv6 };

struct DnsConfig {
  std::string name;  // without a final dot
  bool srv = false;
  int port = 0;                      // A/AAAA names only
  std::vector<std::string> servers;  // canonical "ip:port"; empty: resolv.conf
  Family family = Family::kAny;
  di::RefreshPolicy refresh;
  absl::Duration timeout = absl::Seconds(2);
  int tries = 2;
};

// The canonical text of an IPv4 or IPv6 literal, or nullopt for anything else.
std::optional<std::string> AddressLiteral(const std::string& s) {
  char text[INET6_ADDRSTRLEN];
  in_addr a4;
  if (inet_pton(AF_INET, s.c_str(), &a4) == 1) {
    return std::string(inet_ntop(AF_INET, &a4, text, sizeof(text)));
  }
  in6_addr a6;
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) {
    return std::string(inet_ntop(AF_INET6, &a6, text, sizeof(text)));
  }
  return std::nullopt;
}

// "1.2.3.4:80" or "[::1]:80" from a canonical address literal.
std::string HostPort(absl::string_view ip, int port) {
  if (ip.find(':') != absl::string_view::npos) return absl::StrCat("[", ip, "]:", port);
  return absl::StrCat(ip, ":", port);
}

absl::Status CheckName(const std::string& name, absl::string_view path) {
  if (name.empty()) return FieldError(path, "must be a non-empty DNS name");
  if (name.size() > 253) return FieldError(path, "is longer than 253 characters");
  if (AddressLiteral(name)) {
    return FieldError(path, absl::StrCat("\"", name,
                                         "\" is an IP address, not a name (use the \"static\" "
                                         "kind for fixed addresses)"));
  }
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    if (label.empty()) return FieldError(path, absl::StrCat("\"", name, "\" has an empty label"));
    if (label.size() > 63) {
      return FieldError(path, absl::StrCat("label \"", label, "\" is longer than 63 characters"));
    }
    for (char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
        return FieldError(path, absl::StrCat("\"", name,
                                             "\" has a character other than a letter, a digit, "
                                             "'-' or '_'"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ParseServer(const std::string& s, absl::string_view path) {
  if (auto ip = AddressLiteral(s)) return HostPort(*ip, 53);
  auto canonical = CanonicalAddress(s);
  if (!canonical.ok()) {
    return FieldError(path, absl::StrCat("must be \"ip:port\" (\"[::1]:53\" for IPv6) or an IP: ",
                                         canonical.status().message()));
  }
  return canonical;
}

absl::StatusOr<DnsConfig> ParseDnsConfig(const json& j, absl::string_view path) {
  if (auto st = core::CheckObject(j, path,
                                    {"name", "port", "servers", "family", "min_refresh",
                                     "max_refresh", "jitter", "timeout", "tries"});
      !st.ok()) {
    return st;
  }
  DnsConfig c;
  if (j.find("name") == j.end()) return FieldError(JoinPath(path, "name"), "required");
  if (auto st = core::OptionalString(j, path, "name", &c.name); !st.ok()) return st;
  if (!c.name.empty() && c.name.back() == '.') c.name.pop_back();
  if (auto st = CheckName(c.name, JoinPath(path, "name")); !st.ok()) return st;
  c.srv = c.name[0] == '_';

  if (c.srv) {
    if (j.find("port") != j.end()) {
      return FieldError(JoinPath(path, "port"),
                        "not allowed for an SRV name (names starting with '_'): the port comes "
                        "from the SRV records");
    }
  } else {
    if (j.find("port") == j.end()) {
      return FieldError(JoinPath(path, "port"),
                        "required for an A/AAAA name (an integer between 1 and 65535)");
    }
    int64_t port = 0;
    if (auto st = core::OptionalInt(j, path, "port", 1, 65535, &port); !st.ok()) return st;
    c.port = static_cast<int>(port);
  }

  std::vector<std::string> servers;
  if (auto st = core::OptionalStringList(j, path, "servers", &servers); !st.ok()) return st;
  for (size_t i = 0; i < servers.size(); ++i) {
    auto s = ParseServer(servers[i], absl::StrCat(JoinPath(path, "servers"), "[", i, "]"));
    if (!s.ok()) return s.status();
    c.servers.push_back(*std::move(s));
  }

  std::string family = "any";
  if (auto st = core::OptionalString(j, path, "family", &family); !st.ok()) return st;
  if (family == "any") {
    c.family = Family::kAny;
  } else if (family == "ipv4") {
    c.family = Family::kIpv4;
  } else if (family == "ipv6") {
    c.family = Family::kIpv6;
  } else {
    return FieldError(JoinPath(path, "family"), "must be one of \"any\", \"ipv4\", \"ipv6\"");
  }

  const absl::Duration kMinRefresh = absl::Milliseconds(10), kMaxRefresh = absl::Hours(24);
  if (auto st = core::OptionalDuration(j, path, "min_refresh", kMinRefresh, kMaxRefresh,
                                         &c.refresh.min_refresh);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(j, path, "max_refresh", kMinRefresh, kMaxRefresh,
                                         &c.refresh.max_refresh);
      !st.ok()) {
    return st;
  }
  if (c.refresh.min_refresh > c.refresh.max_refresh) {
    return FieldError(JoinPath(path, "min_refresh"),
                      absl::StrCat("must be <= max_refresh (",
                                   absl::FormatDuration(c.refresh.max_refresh), ")"));
  }
  if (auto st = core::OptionalDouble(j, path, "jitter", 0.0, 0.5, &c.refresh.jitter);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(j, path, "timeout", absl::Milliseconds(10),
                                         absl::Seconds(60), &c.timeout);
      !st.ok()) {
    return st;
  }
  int64_t tries = c.tries;
  if (auto st = core::OptionalInt(j, path, "tries", 1, 10, &tries); !st.ok()) return st;
  c.tries = static_cast<int>(tries);
  return c;
}

absl::Status InitAresLibrary() {
  static std::once_flag once;
  static int status = ARES_SUCCESS;
  std::call_once(once, [] { status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (status != ARES_SUCCESS) {
    return absl::InternalError(absl::StrCat("ares_library_init: ", ares_strerror(status)));
  }
  return absl::OkStatus();
}

const char* TypeName(int type) {
  switch (type) {
    case di::kDnsTypeSrv:
      return "SRV";
    case di::kDnsTypeA:
      return "A";
    case di::kDnsTypeAaaa:
      return "AAAA";
    default:
      return "?";
  }
}

// What went wrong with one query, from c-ares's status. `several_servers`:
// whether c-ares could fail over between servers (see DnsResolver::Init).
absl::Status QueryFailure(int type, int status, bool several_servers) {
  const char* t = TypeName(type);
  switch (status) {
    case ARES_ETIMEOUT:
      return absl::DeadlineExceededError(absl::StrCat(t, " query timed out"));
    case ARES_ENOTFOUND:
      return absl::NotFoundError(absl::StrCat(t, " query: name does not exist (NXDOMAIN)"));
    case ARES_ENODATA:
      return absl::NotFoundError(absl::StrCat(t, " query: no ", t, " records"));
    case ARES_ESERVFAIL:
      return absl::UnavailableError(absl::StrCat(t, " query: server failure (SERVFAIL)"));
    case ARES_EREFUSED:
      return absl::UnavailableError(absl::StrCat(t, " query refused by the server (REFUSED)"));
    case ARES_ECONNREFUSED:
      if (several_servers) {
        // c-ares 1.18 also ends here when every server answered SERVFAIL,
        // REFUSED or NOTIMP, and does not say which happened.
        return absl::UnavailableError(
            absl::StrCat(t, " query: no server gave a usable answer (connection refused, or "
                            "SERVFAIL, REFUSED or NOTIMP)"));
      }
      return absl::UnavailableError(
          absl::StrCat(t, " query: could not contact the DNS server (connection refused)"));
    case ARES_EFORMERR:
      return absl::UnavailableError(
          absl::StrCat(t, " query: the server could not parse it (FORMERR)"));
    case ARES_ENOTIMP:
      return absl::UnavailableError(absl::StrCat(t, " query: not implemented by the server"));
    case ARES_EBADRESP:
      return absl::UnavailableError(absl::StrCat(t, " query: malformed response"));
    default:
      return absl::UnavailableError(absl::StrCat(t, " query failed: ", ares_strerror(status)));
  }
}

// The code shared by all of `errors`, else UNAVAILABLE.
absl::StatusCode CommonCode(const std::vector<absl::Status>& errors) {
  if (errors.empty()) return absl::StatusCode::kUnavailable;
  for (const absl::Status& e : errors) {
    if (e.code() != errors.front().code()) return absl::StatusCode::kUnavailable;
  }
  return errors.front().code();
}

std::string JoinMessages(const std::vector<absl::Status>& errors) {
  return absl::StrJoin(errors, "; ", [](std::string* out, const absl::Status& s) {
    out->append(s.message().data(), s.message().size());
  });
}

// Answers arrive in any order; messages should not.
void SortByMessage(std::vector<absl::Status>* errors) {
  std::stable_sort(errors->begin(), errors->end(), [](const absl::Status& a, const absl::Status& b) {
    return a.message() < b.message();
  });
}

// One host name's A and/or AAAA queries in a round.
struct HostLookup {
  std::string name;
  std::vector<std::string> addresses;  // canonical literals, no duplicates
  uint32_t ttl = kNoTtl;               // minimum over the records used
  std::vector<absl::Status> failures;  // queries that failed outright
  std::vector<absl::Status> none;      // authoritative "no such records"
};

// One resolution of the configured name, from the first query to the last
// answer. Rounds never overlap.
struct Round {
  uint64_t id = 0;
  int pending = 0;  // queries in flight
  // > 0 while queries are being issued: c-ares may answer one before
  // ares_query returns, and the round must not look finished then.
  int issuing = 0;
  bool finishing = false;
  // SRV names.
  absl::Status srv_failure;
  std::vector<di::SrvRecord> srv;  // usable records
  std::vector<absl::Status> srv_problems;  // records left out
  uint32_t srv_ttl = kNoTtl;
  // By lower-cased name.
  std::map<std::string, HostLookup> hosts;
};

class DnsResolver final : public Resolver {
 public:
  DnsResolver(DnsConfig config, const ResolverArgs& args)
      : cfg_(std::move(config)),
        loop_(args.loop),
        rng_(args.seed != 0 ? args.seed : static_cast<uint64_t>(absl::GetCurrentTimeNanos())),
        backoff_(di::FailureBackoff(cfg_.refresh), rng_()) {}

  // Sets up the c-ares channel; `path` names the config in errors.
  absl::Status Init(absl::string_view path);

  // On the control loop (or anywhere, if never started).
  ~DnsResolver() override;

  void Start(ResolverSink* sink) override {
    sink_ = sink;
    StartRound();
  }

 private:
  class SocketWatch;
  // One query in flight; c-ares owns it until its callback runs.
  struct Query {
    DnsResolver* self;
    uint64_t round;
    int type;
    std::string host;  // key into Round::hosts; empty for the SRV query
  };

  static void OnSockState(void* data, ares_socket_t fd, int readable, int writable);
  static void OnQueryDone(void* arg, int status, int timeouts, unsigned char* abuf, int alen);

  void SockState(int fd, uint32_t events);
  void ProcessFd(ares_socket_t read_fd, ares_socket_t write_fd);
  void RearmAresTimer();

  void StartRound();
  void Issue(const std::string& name, int type, const std::string& host_key);
  void LookUpHost(const std::string& name);
  void OnAnswer(const Query& q, int status, absl::Span<const uint8_t> answer);
  void OnSrvAnswer(int status, absl::Span<const uint8_t> answer);
  void OnAddressAnswer(const Query& q, int status, absl::Span<const uint8_t> answer);
  void MaybeFinishRound();
  void FinishRound();
  void ScheduleRound(absl::Duration delay);
  absl::Status Error(absl::StatusCode code, absl::string_view what) const {
    return absl::Status(code,
                        absl::StrCat("dns ", cfg_.name, " (servers ", servers_text_, "): ", what));
  }

  const DnsConfig cfg_;
  runtime::EventLoop* const loop_;
  std::mt19937_64 rng_;
  core::Backoff backoff_;
  std::string servers_text_;  // for messages
  bool several_servers_ = false;
  ares_channel channel_ = nullptr;
  ResolverSink* sink_ = nullptr;
  // The c-ares sockets watched on the loop, by fd.
  std::map<int, std::unique_ptr<SocketWatch>> watches_;
  runtime::TimerId ares_timer_;     // c-ares's next timeout
  runtime::TimerId refresh_timer_;  // the next round
  Round round_;
  uint64_t next_round_id_ = 1;
  bool destroying_ = false;
  // Tasks posted to the loop hold a weak reference: they do nothing once the
  // resolver is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool published_ = false;
  std::vector<Endpoint> last_published_;
};

class DnsResolver::SocketWatch final : public runtime::FdHandler {
 public:
  SocketWatch(DnsResolver* owner, int fd, uint32_t events)
      : owner_(owner), fd_(fd), events_(events) {}
  void set_events(uint32_t events) { events_ = events; }

  void OnFdEvents(uint32_t events) override {
    // c-ares may close this socket while processing it, which destroys this
    // watch: copy what is needed first and touch nothing after.
    DnsResolver* owner = owner_;
    const int fd = fd_;
    const bool error = (events & (EPOLLERR | EPOLLHUP)) != 0;
    // An error goes to whichever side c-ares waits on, so that it reads (or
    // completes the connect) and learns of it.
    ares_socket_t r = (events & EPOLLIN) != 0 || error ? fd : ARES_SOCKET_BAD;
    ares_socket_t w =
        (events & EPOLLOUT) != 0 || (error && (events_ & EPOLLOUT) != 0) ? fd : ARES_SOCKET_BAD;
    owner->ProcessFd(r, w);
  }

 private:
  DnsResolver* const owner_;
  const int fd_;
  uint32_t events_;
};

// The servers a channel uses, as "ip:port".
std::vector<std::string> ChannelServers(ares_channel channel) {
  std::vector<std::string> servers;
  ares_addr_port_node* list = nullptr;
  if (ares_get_servers_ports(channel, &list) != ARES_SUCCESS) return servers;
  for (ares_addr_port_node* n = list; n != nullptr; n = n->next) {
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(n->family, &n->addr, text, sizeof(text)) == nullptr) continue;
    servers.push_back(HostPort(text, n->udp_port != 0 ? n->udp_port : 53));
  }
  ares_free_data(list);
  return servers;
}

absl::Status DnsResolver::Init(absl::string_view path) {
  if (auto st = InitAresLibrary(); !st.ok()) return st;
  std::vector<std::string> servers = cfg_.servers;
  bool from_resolv_conf = servers.empty();
  if (from_resolv_conf) {
    // Read resolv.conf once, through a channel that never queries, to know
    // how many servers there are before choosing the flags below.
    ares_channel probe = nullptr;
    int rc = ares_init(&probe);
    if (rc != ARES_SUCCESS) {
      return absl::UnavailableError(
          absl::StrCat(path, ": cannot read the system's DNS servers (c-ares): ", ares_strerror(rc)));
    }
    servers = ChannelServers(probe);
    ares_destroy(probe);
  }
  several_servers_ = servers.size() > 1;

  ares_options o{};
  // ares_query never applies the search list; NOSEARCH keeps it that way.
  o.flags = ARES_FLAG_NOSEARCH;
  // c-ares 1.18 turns a SERVFAIL, REFUSED or NOTIMP answer into a try of the
  // next server, and when none is left reports ARES_ECONNREFUSED ("could not
  // contact"), which would send an operator after the wrong problem. With a
  // single server there is nothing to fail over to: let the answer through
  // so that its code is named. c-ares documents that this flag also stops
  // it checking the answer's question (1.18.1 still does); OnSrvAnswer and
  // OnAddressAnswer check it anyway.
  if (!several_servers_) o.flags |= ARES_FLAG_NOCHECKRESP;
  o.timeout = static_cast<int>(absl::ToInt64Milliseconds(cfg_.timeout));
  o.tries = cfg_.tries;
  o.sock_state_cb = &DnsResolver::OnSockState;
  o.sock_state_cb_data = this;
  int rc = ares_init_options(&channel_, &o,
                             ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                                 ARES_OPT_SOCK_STATE_CB);
  if (rc != ARES_SUCCESS) {
    channel_ = nullptr;
    return absl::UnavailableError(
        absl::StrCat(path, ": cannot set up a DNS resolver (c-ares): ", ares_strerror(rc)));
  }
  if (!servers.empty()) {
    // For resolv.conf's servers too: the channel then uses exactly the ones
    // counted above.
    std::string csv = absl::StrJoin(servers, ",");
    rc = ares_set_servers_ports_csv(channel_, csv.c_str());
    if (rc != ARES_SUCCESS) {
      return FieldError(JoinPath(path, "servers"),
                        absl::StrCat("rejected by c-ares: ", ares_strerror(rc)));
    }
  }
  servers_text_ = servers.empty() ? "none" : absl::StrJoin(servers, ", ");
  if (from_resolv_conf) absl::StrAppend(&servers_text_, " from resolv.conf");
  return absl::OkStatus();
}

DnsResolver::~DnsResolver() {
  destroying_ = true;
  alive_.reset();
  if (refresh_timer_.valid()) loop_->Cancel(refresh_timer_);
  if (ares_timer_.valid()) loop_->Cancel(ares_timer_);
  // Ends every query in flight with ARES_EDESTRUCTION (OnQueryDone then
  // frees it and touches nothing else) and closes the sockets, unwatching
  // them through OnSockState. Never called from inside a c-ares callback:
  // sink calls, which may lead here, run from a posted task.
  if (channel_ != nullptr) ares_destroy(channel_);
  // Sockets are only watched once started, i.e. on the loop thread, which is
  // where Discovery destroys its resolver.
  for (auto& [fd, watch] : watches_) loop_->Unwatch(fd);
  watches_.clear();
}

void DnsResolver::OnSockState(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<DnsResolver*>(data)->SockState(
      fd, (readable ? EPOLLIN : 0u) | (writable ? EPOLLOUT : 0u));
}

void DnsResolver::SockState(int fd, uint32_t events) {
  auto it = watches_.find(fd);
  if (events == 0) {  // c-ares is closing the socket
    if (it != watches_.end()) {
      loop_->Unwatch(fd);
      watches_.erase(it);
    }
    return;
  }
  if (it != watches_.end()) {
    if (loop_->Rewatch(fd, events).ok()) {
      it->second->set_events(events);
      return;
    }
    // The number was closed and reused behind our back: watch it afresh.
    loop_->Unwatch(fd);
    watches_.erase(it);
  }
  auto watch = std::make_unique<SocketWatch>(this, fd, events);
  if (auto st = loop_->Watch(fd, events, watch.get()); !st.ok()) {
    // Its query then times out, and that is reported.
    core::Log(core::LogLevel::kWarning,
              absl::StrCat("dns ", cfg_.name, ": cannot watch a c-ares socket: ", st.ToString()));
    return;
  }
  watches_.emplace(fd, std::move(watch));
}

void DnsResolver::ProcessFd(ares_socket_t read_fd, ares_socket_t write_fd) {
  ares_process_fd(channel_, read_fd, write_fd);
  RearmAresTimer();
}

void DnsResolver::RearmAresTimer() {
  if (ares_timer_.valid()) {
    loop_->Cancel(ares_timer_);
    ares_timer_ = {};
  }
  timeval tv;
  timeval* next = ares_timeout(channel_, nullptr, &tv);
  if (next == nullptr) return;  // no query in flight
  ares_timer_ = loop_->RunAfter(absl::DurationFromTimeval(*next), [this] {
    ares_timer_ = {};
    // Lets c-ares retry or fail the queries whose time is up.
    ProcessFd(ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  });
}

void DnsResolver::StartRound() {
  round_ = Round{};
  round_.id = next_round_id_++;
  ++round_.issuing;
  if (cfg_.srv) {
    Issue(cfg_.name, di::kDnsTypeSrv, "");
  } else {
    LookUpHost(cfg_.name);
  }
  --round_.issuing;
  MaybeFinishRound();
  RearmAresTimer();
}

void DnsResolver::Issue(const std::string& name, int type, const std::string& host_key) {
  ++round_.pending;
  auto* q = new Query{this, round_.id, type, host_key};
  // ares_query, not ares_search: the name is used as configured.
  ares_query(channel_, name.c_str(), kClassIn, type, &DnsResolver::OnQueryDone, q);
}

void DnsResolver::LookUpHost(const std::string& name) {
  std::string key = absl::AsciiStrToLower(name);
  auto [it, inserted] = round_.hosts.try_emplace(key);
  if (!inserted) return;  // several records share this target
  it->second.name = name;
  ++round_.issuing;
  if (cfg_.family != Family::kIpv6) Issue(name, di::kDnsTypeA, key);
  if (cfg_.family != Family::kIpv4) Issue(name, di::kDnsTypeAaaa, key);
  --round_.issuing;
}

void DnsResolver::OnQueryDone(void* arg, int status, int /*timeouts*/, unsigned char* abuf,
                              int alen) {
  std::unique_ptr<Query> q(static_cast<Query*>(arg));
  // ares_destroy, called only from the destructor, ends every query: the
  // resolver is going away, so touch nothing but the query.
  if (status == ARES_EDESTRUCTION || q->self->destroying_) return;
  absl::Span<const uint8_t> answer;
  if (abuf != nullptr && alen > 0) answer = absl::MakeConstSpan(abuf, static_cast<size_t>(alen));
  q->self->OnAnswer(*q, status, answer);
}

void DnsResolver::OnAnswer(const Query& q, int status, absl::Span<const uint8_t> answer) {
  if (q.round != round_.id) return;  // rounds do not overlap; defensive
  --round_.pending;
  if (q.type == di::kDnsTypeSrv) {
    OnSrvAnswer(status, answer);
  } else {
    OnAddressAnswer(q, status, answer);
  }
  MaybeFinishRound();
}

void DnsResolver::OnSrvAnswer(int status, absl::Span<const uint8_t> answer) {
  if (status != ARES_SUCCESS) {
    round_.srv_failure = QueryFailure(di::kDnsTypeSrv, status, several_servers_);
    return;
  }
  auto srv = di::ParseSrvAnswer(answer);
  if (srv.ok() && !absl::EqualsIgnoreCase(srv->question, cfg_.name)) {
    srv = absl::InvalidArgumentError(absl::StrCat("it is for ", srv->question));
  }
  if (!srv.ok()) {
    round_.srv_failure =
        absl::UnavailableError(absl::StrCat("malformed SRV answer: ", srv.status().message()));
    return;
  }
  bool unavailable = false;  // a "." target: RFC 2782's "decidedly not available"
  for (di::SrvRecord& r : srv->records) {
    if (r.target.empty()) {
      unavailable = true;
    } else if (r.port == 0) {
      round_.srv_problems.push_back(absl::InvalidArgumentError(
          absl::StrCat("SRV record for target ", r.target, " has port 0")));
    } else {
      round_.srv.push_back(std::move(r));
    }
  }
  if (round_.srv.empty()) {
    if (!round_.srv_problems.empty()) {
      round_.srv_failure = absl::UnavailableError(JoinMessages(round_.srv_problems));
    } else if (unavailable) {
      round_.srv_failure =
          absl::NotFoundError("the SRV records say the service is not available (target \".\")");
    } else {
      round_.srv_failure = absl::NotFoundError("no SRV records in the answer");
    }
    return;
  }
  round_.srv_ttl = srv->ttl;
  ++round_.issuing;
  for (const di::SrvRecord& r : round_.srv) {
    if (!AddressLiteral(r.target)) LookUpHost(r.target);
  }
  --round_.issuing;
}

void DnsResolver::OnAddressAnswer(const Query& q, int status, absl::Span<const uint8_t> answer) {
  HostLookup& h = round_.hosts[q.host];
  if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
    h.none.push_back(QueryFailure(q.type, status, several_servers_));
    return;
  }
  if (status != ARES_SUCCESS) {
    h.failures.push_back(QueryFailure(q.type, status, several_servers_));
    return;
  }
  auto a = di::ParseAddressAnswer(answer, static_cast<uint16_t>(q.type));
  if (a.ok() && !absl::EqualsIgnoreCase(a->question, h.name)) {
    a = absl::InvalidArgumentError(absl::StrCat("it is for ", a->question));
  }
  if (!a.ok()) {
    h.failures.push_back(absl::UnavailableError(
        absl::StrCat("malformed ", TypeName(q.type), " answer: ", a.status().message())));
    return;
  }
  if (a->addresses.empty()) {
    h.none.push_back(
        absl::NotFoundError(absl::StrCat("no ", TypeName(q.type), " records in the answer")));
    return;
  }
  for (std::string& addr : a->addresses) {
    if (std::find(h.addresses.begin(), h.addresses.end(), addr) == h.addresses.end()) {
      h.addresses.push_back(std::move(addr));
    }
  }
  h.ttl = std::min(h.ttl, a->ttl);
}

void DnsResolver::MaybeFinishRound() {
  if (round_.issuing > 0 || round_.pending > 0 || round_.finishing) return;
  round_.finishing = true;
  // Finish outside c-ares: subscribers reached through the sink may do
  // anything, including destroying this resolver, and ares_destroy must not
  // run inside a c-ares callback.
  loop_->Post([this, alive = std::weak_ptr<bool>(alive_)] {
    if (!alive.expired()) FinishRound();
  });
}

void DnsResolver::FinishRound() {
  std::vector<Endpoint> endpoints;
  std::vector<absl::Status> problems;  // reported, but the rest is published
  absl::Status failure;                // nothing to publish
  uint32_t ttl = kNoTtl;
  if (cfg_.srv) {
    if (!round_.srv_failure.ok()) {
      failure = round_.srv_failure;
    } else {
      ttl = round_.srv_ttl;
      problems = round_.srv_problems;
      for (const di::SrvRecord& r : round_.srv) {
        auto add = [&](const std::string& ip) {
          Endpoint e;
          e.address = HostPort(ip, r.port);
          e.priority = r.priority;
          e.weight = r.weight;  // 0 stays 0: "only if nothing else", as RFC 2782 means it
          e.metadata["dns_target"] = r.target;
          endpoints.push_back(std::move(e));
        };
        if (auto ip = AddressLiteral(r.target)) {
          add(*ip);
          continue;
        }
        const HostLookup& h = round_.hosts[absl::AsciiStrToLower(r.target)];
        for (const std::string& ip : h.addresses) add(ip);
        if (!h.addresses.empty()) ttl = std::min(ttl, h.ttl);
      }
      std::vector<absl::Status> target_errors;
      for (const auto& [key, h] : round_.hosts) {
        std::vector<absl::Status> all = h.failures;
        if (h.addresses.empty()) all.insert(all.end(), h.none.begin(), h.none.end());
        if (all.empty()) continue;
        SortByMessage(&all);
        target_errors.push_back(
            absl::Status(CommonCode(all), absl::StrCat("target ", h.name, ": ", JoinMessages(all))));
      }
      problems.insert(problems.end(), target_errors.begin(), target_errors.end());
      if (endpoints.empty()) {
        failure = absl::Status(CommonCode(problems),
                               absl::StrCat("no SRV target resolved: ", JoinMessages(problems)));
      }
    }
  } else {
    const HostLookup& h = round_.hosts.begin()->second;
    for (const std::string& ip : h.addresses) endpoints.push_back(Endpoint{HostPort(ip, cfg_.port)});
    ttl = h.ttl;
    if (h.addresses.empty()) {
      std::vector<absl::Status> all = h.failures;
      all.insert(all.end(), h.none.begin(), h.none.end());
      SortByMessage(&all);
      failure = absl::Status(CommonCode(all), JoinMessages(all));
    } else {
      problems = h.failures;
      SortByMessage(&problems);
    }
  }
  round_ = Round{};

  if (!failure.ok()) {
    ScheduleRound(std::min(backoff_.Next(), cfg_.refresh.max_refresh));
    sink_->ReportError(Error(failure.code(), failure.message()));
    return;
  }

  // Sorted and unique by address as EndpointSet keeps them, so that an
  // unchanged answer compares equal; for a repeated address the preferred
  // record (lower priority, then higher weight) wins.
  std::stable_sort(endpoints.begin(), endpoints.end(), [](const Endpoint& a, const Endpoint& b) {
    if (a.address != b.address) return a.address < b.address;
    if (a.priority != b.priority) return a.priority < b.priority;
    return a.weight > b.weight;
  });
  endpoints.erase(std::unique(endpoints.begin(), endpoints.end(),
                              [](const Endpoint& a, const Endpoint& b) {
                                return a.address == b.address;
                              }),
                  endpoints.end());

  std::uniform_real_distribution<double> u(0.0, 1.0);
  absl::Duration next = di::RefreshDelay(absl::Seconds(ttl), cfg_.refresh, u(rng_));
  if (problems.empty()) {
    backoff_.Reset();
  } else {
    // Try the missing part again sooner than the TTL may say.
    next = std::min(next, std::min(backoff_.Next(), cfg_.refresh.max_refresh));
  }
  ScheduleRound(next);
  if (core::LogEnabled(core::LogLevel::kDebug)) {
    core::Log(core::LogLevel::kDebug,
              absl::StrCat("dns ", cfg_.name, ": ", endpoints.size(), " endpoints, TTL ", ttl,
                           "s, next resolution in ", absl::FormatDuration(next)));
  }
  if (!problems.empty()) {
    sink_->ReportError(Error(CommonCode(problems),
                             absl::StrCat(cfg_.srv ? "some SRV targets failed (the others' "
                                                     "endpoints are published): "
                                                   : "some addresses may be missing: ",
                                          JoinMessages(problems))));
  }
  if (published_ && endpoints == last_published_) return;  // nothing new for subscribers
  published_ = true;
  last_published_ = endpoints;
  // Last: a subscriber may destroy this resolver.
  sink_->Publish(std::move(endpoints));
}

void DnsResolver::ScheduleRound(absl::Duration delay) {
  delay = std::max(delay, absl::Milliseconds(1));
  refresh_timer_ = loop_->RunAfter(delay, [this] {
    refresh_timer_ = {};
    StartRound();
  });
}

class DnsResolverFactory final : public ResolverFactory {
 public:
  std::string kind() const override { return "dns"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    return ParseDnsConfig(config, path).status();
  }
  absl::StatusOr<std::unique_ptr<Resolver>> Create(const ResolverArgs& args) const override {
    auto config = ParseDnsConfig(args.config, args.path);
    if (!config.ok()) return config.status();
    if (args.loop == nullptr) return absl::InvalidArgumentError("dns discovery needs a loop");
    auto resolver = std::make_unique<DnsResolver>(*std::move(config), args);
    if (auto st = resolver->Init(args.path); !st.ok()) return st;
    return resolver;
  }
};

}  // namespace

std::unique_ptr<ResolverFactory> MakeDnsResolverFactory() {
  return std::make_unique<DnsResolverFactory>();
}

}  // namespace meshlib::discovery
