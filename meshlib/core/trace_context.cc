#include "meshlib/core/trace_context.h"

#include <random>

#include "absl/strings/ascii.h"

namespace meshlib::core {

namespace {

thread_local const TraceContext* current_trace = nullptr;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case is not allowed
}

template <size_t N>
bool ParseHex(absl::string_view s, std::array<uint8_t, N>* out) {
  if (s.size() != 2 * N) return false;
  bool any = false;
  for (size_t i = 0; i < N; ++i) {
    int hi = HexValue(s[2 * i]);
    int lo = HexValue(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
    any |= (*out)[i] != 0;
  }
  return any;  // all zero is invalid
}

template <size_t N>
std::string Hex(const std::array<uint8_t, N>& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(2 * N, '0');
  for (size_t i = 0; i < N; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

std::mt19937_64& Random() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng;
}

template <size_t N>
void Fill(std::array<uint8_t, N>* out) {
  do {
    for (size_t i = 0; i < N; i += 8) {
      uint64_t r = Random()();
      for (size_t j = 0; j < 8 && i + j < N; ++j) (*out)[i + j] = static_cast<uint8_t>(r >> (8 * j));
    }
  } while (*out == std::array<uint8_t, N>{});
}

}  // namespace

std::optional<TraceContext> TraceContext::Parse(absl::string_view tp, absl::string_view state) {
  // version(2) - trace id(32) - span id(16) - flags(2): 55 characters;
  // later versions may append "-..." fields.
  if (tp.size() < 55) return std::nullopt;
  if (tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return std::nullopt;
  std::array<uint8_t, 1> version{};
  if (HexValue(tp[0]) < 0 || HexValue(tp[1]) < 0) return std::nullopt;
  version[0] = static_cast<uint8_t>(HexValue(tp[0]) << 4 | HexValue(tp[1]));
  if (version[0] == 0xff) return std::nullopt;
  if (version[0] == 0 && tp.size() != 55) return std::nullopt;
  if (tp.size() > 55 && tp[55] != '-') return std::nullopt;
  TraceContext t;
  if (!ParseHex(tp.substr(3, 32), &t.trace_id)) return std::nullopt;
  if (!ParseHex(tp.substr(36, 16), &t.span_id)) return std::nullopt;
  const int hi = HexValue(tp[53]), lo = HexValue(tp[54]);
  if (hi < 0 || lo < 0) return std::nullopt;
  t.flags = static_cast<uint8_t>(hi << 4 | lo);
  t.tracestate = std::string(state);
  return t;
}

std::optional<TraceContext> TraceContext::FromMetadata(
    const std::vector<std::pair<std::string, std::string>>& metadata) {
  const std::string* parent = nullptr;
  const std::string* state = nullptr;
  for (const auto& [k, v] : metadata) {
    if (k == kTraceparentKey) parent = &v;
    if (k == kTracestateKey) state = &v;
  }
  if (parent == nullptr) return std::nullopt;
  return Parse(*parent, state != nullptr ? absl::string_view(*state) : absl::string_view());
}

TraceContext TraceContext::NewRoot() {
  TraceContext t;
  Fill(&t.trace_id);
  Fill(&t.span_id);
  t.flags = 1;
  return t;
}

TraceContext TraceContext::Child() const {
  TraceContext t = *this;
  Fill(&t.span_id);
  return t;
}

std::string TraceContext::Traceparent() const {
  std::array<uint8_t, 1> f = {flags};
  return "00-" + Hex(trace_id) + "-" + Hex(span_id) + "-" + Hex(f);
}

std::string TraceContext::TraceIdHex() const { return Hex(trace_id); }
std::string TraceContext::SpanIdHex() const { return Hex(span_id); }

const TraceContext* CurrentTrace() { return current_trace; }

ScopedTrace::ScopedTrace(const TraceContext* trace) : saved_(current_trace) {
  current_trace = trace;
}

ScopedTrace::~ScopedTrace() { current_trace = saved_; }

bool PropagateTrace(std::vector<std::pair<std::string, std::string>>* metadata) {
  const TraceContext* t = current_trace;
  if (t == nullptr) return false;
  for (const auto& [k, v] : *metadata) {
    if (k == kTraceparentKey) return false;  // the caller's own wins
  }
  TraceContext child = t->Child();
  metadata->emplace_back(kTraceparentKey, child.Traceparent());
  if (!t->tracestate.empty()) metadata->emplace_back(kTracestateKey, t->tracestate);
  return true;
}

}  // namespace meshlib::core
