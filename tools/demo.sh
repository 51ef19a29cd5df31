#!/usr/bin/env bash
# The demo: starts three echo servers on loopback (one healthy, one slow, one
# flaky), drives load at them through meshlib with meshcall, prints a short
# summary, and stops every server it started.
#
#   tools/demo.sh                 # 5 s of load
#   DEMO_SECONDS=20 tools/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
echo "building..." >&2
bazel build //examples/echo:echo_server //examples/meshcall:meshcall 2>&1 | grep -E "^(ERROR|FAILED)" >&2 || true
BIN=$(bazel info bazel-bin 2>/dev/null)
SERVER="$BIN/examples/echo/echo_server"
MESHCALL="$BIN/examples/meshcall/meshcall"
[[ -x "$SERVER" && -x "$MESHCALL" ]] || { echo "demo: build failed" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# start NAME VAR FLAGS...: starts an echo server on a free port and stores its
# address in VAR. (Not run in a $(...) subshell: the pid must reach `pids`.)
start() {
  local name=$1 var=$2
  shift 2
  "$SERVER" --port=0 --name="$name" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 100); do
    if grep -q "^listening on " "$work/$name.out" 2>/dev/null; then
      printf -v "$var" '%s' "$(sed -n 's/^listening on //p' "$work/$name.out")"
      return
    fi
    sleep 0.05
  done
  echo "demo: $name did not start: $(cat "$work/$name.err")" >&2
  exit 1
}

start healthy healthy
start slow slow --latency_ms=20
start flaky flaky --error_rate=0.2
echo "echo servers: healthy=$healthy slow=$slow (+20ms) flaky=$flaky (20% UNAVAILABLE)"

cat >"$work/mesh.json" <<JSON
{
  "services": {
    "echo": {
      "discovery": {"static": {"endpoints": ["$healthy", "$slow", "$flaky"]}},
      "timeout": "500ms"
    }
  }
}
JSON

echo
echo "one call:"
"$MESHCALL" --config="$work/mesh.json" --service=echo --method=Echo/Say --data=hello

secs=${DEMO_SECONDS:-5}
echo
echo "load: ${secs}s at 2000 calls/s, open loop, 64-byte payloads..."
"$MESHCALL" --config="$work/mesh.json" --service=echo --method=Echo/Say \
  --data="$(printf 'x%.0s' $(seq 1 64))" --rate=2000 --duration="${secs}s" --json >"$work/result.json"

python3 - "$work/result.json" "$healthy" "$slow" "$flaky" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
names = {sys.argv[2]: "healthy", sys.argv[3]: "slow", sys.argv[4]: "flaky"}
lat = r["latency_us"]
print()
print(f"calls {r['requests']}, ok {r['ok']} ({100.0 * r['ok'] / max(1, r['requests']):.2f}%), "
      f"{r['qps']:.0f} calls/s")
print(f"latency (µs, from intended send time): p50 {lat['p50']:.0f}  p90 {lat['p90']:.0f}  "
      f"p99 {lat['p99']:.0f}  p999 {lat['p999']:.0f}  max {lat['max']:.0f}")
print("errors:", ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "none")
print()
print(f"{'endpoint':<24}{'name':<10}{'answered':>10}{'share':>8}")
total = sum(r["by_endpoint"].values()) or 1
for addr, n in sorted(r["by_endpoint"].items()):
    print(f"{addr:<24}{names.get(addr, '?'):<10}{n:>10}{100.0 * n / total:>7.1f}%")
print()
print("Plain round-robin, no retries yet: the flaky server's errors reach the caller and")
print("the slow one sets the tail. Balancing, retries and ejection come with later layers.")
PY
