#!/usr/bin/env bash
# The demo: one service, "echo", on five echo_server processes on loopback
# (healthy ones, one slow, one flaky, one SIGKILLed and restarted mid-run),
# called first through meshlib's resilience stack (p2c_peak_ewma, retries on
# a budget, hedging, outlier detection), then through plain round robin with
# the same load and faults. A table per endpoint is refreshed every second;
# a summary compares the two phases. It prints the URL of a live page that
# shows the same fleet in a browser. Every server it starts is stopped, also
# on Ctrl-C. Installs and builds what it needs first.
#
#   tools/demo.sh                                   # ~35 s: 2 phases of 15 s, 800 calls/s
#   tools/demo.sh --duration=5s --rate=400 --instances=6
#   tools/demo.sh --plain                           # no redrawing, e.g. into a file
#   DEMO_SECONDS=20 tools/demo.sh                   # same as --duration=20s
# Flags: bazel-bin/examples/demo/demo --helpfull (or examples/demo/demo.cc).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

echo "building the demo and echo_server..." >&2
build_log=$(mktemp)
if ! bazel build //examples/demo //examples/echo:echo_server >"$build_log" 2>&1; then
  cat "$build_log" >&2
  rm -f "$build_log"
  echo "demo: build failed" >&2
  exit 1
fi
rm -f "$build_log"
BIN=$(bazel info bazel-bin 2>/dev/null)
DEMO="$BIN/examples/demo/demo"
SERVER="$BIN/examples/echo/echo_server"
[[ -x "$DEMO" && -x "$SERVER" ]] || { echo "demo: build produced no $DEMO or $SERVER" >&2; exit 1; }

args=(--echo_server="$SERVER")
if [[ -n "${DEMO_SECONDS:-}" ]]; then args+=(--duration="${DEMO_SECONDS}s"); fi
# exec: Ctrl-C goes straight to the demo, which stops its servers itself.
exec "$DEMO" "${args[@]}" "$@"
