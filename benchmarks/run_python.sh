#!/usr/bin/env bash
# Python through meshlib against Python's grpcio, one table (see
# benchmarks/python/bench_python.py):
#
#   benchmarks/run_python.sh [--duration=3] [--runs=3] [--inflight=64]
#
# Builds libmeshlib.so, echo_server and grpc_echo_server (optimized, not
# sanitized), starts both servers with one I/O thread each, and runs the
# benchmark on Debian's python3 (python3-grpcio).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bazel build -c opt //meshlib/capi:libmeshlib.so //examples/echo:echo_server \
  //benchmarks:grpc_echo_server >&2
bin="$(bazel info -c opt bazel-bin 2>/dev/null)"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a server and prints the address from its "listening on" line.
start() {
  local out="$work/$1.out"
  shift
  "$@" >"$out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    if grep -q "^listening on " "$out"; then
      sed -n 's/^listening on //p' "$out" | head -1
      return 0
    fi
    sleep 0.1
  done
  echo "server did not start: $*" >&2
  cat "$out" >&2
  return 1
}

meshlib_address="$(start meshlib "$bin/examples/echo/echo_server" --port=0 --io_threads=1)"
grpc_address="$(start grpc "$bin/benchmarks/grpc_echo_server" --port=0 --threads=1)"
cp "$bin/meshlib/capi/libmeshlib.so" "$work/libmeshlib.so"
MESHLIB_LIBRARY="$work/libmeshlib.so" PYTHONPATH=meshlib/python /usr/bin/python3 \
  benchmarks/python/bench_python.py --meshlib="$meshlib_address" --grpc="$grpc_address" "$@"
