#!/usr/bin/env bash
# Installs every Debian package that building, testing, benchmarking and the
# demo need. Idempotent: does nothing when all are present.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap          # Bazel 4, builds offline
  build-essential
  pkg-config
  libabsl-dev              # Abseil
  libc-ares-dev            # c-ares (DNS discovery)
  libnghttp2-dev           # nghttp2 (HTTP/2 for gRPC)
  nghttp2-client           # h2load: HTTP/2 load against the gRPC server side
  android-libboringssl-dev # BoringSSL (TLS)
  nlohmann-json3-dev       # JSON
  libgtest-dev libgmock-dev
  libbenchmark-dev         # Google Benchmark
  libgrpc++-dev            # gRPC C++: a benchmark peer only
  clang libclang-rt-14-dev # libFuzzer
  python3                  # the Python package's tests (on Debian's /usr/bin/python3)
  python3-grpcio           # grpcio: the Python benchmark's peer
  abigail-tools            # abidiff: the C ABI check
  prometheus               # promtool and a Prometheus server for the metrics tests
  chromium                 # a headless browser for the live page's test
  python3-websocket        # drives that browser over the DevTools protocol
  openssl faketime         # real certificates for the TLS tests (expired ones via faketime)
  procps                   # pkill/ps, used by the scripts
  dnsmasq-base             # a real DNS server for the DNS discovery tests
  etcd-server etcd-client  # a real etcd for etcd discovery and registration
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
log="${TMPDIR:-/tmp}/meshlib-setup.log"
echo "setup: installing ${#missing[@]} Debian packages (Bazel, the libraries, dnsmasq, etcd, ...);" \
  "apt's output goes to $log" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
  echo "setup: apt-get failed; the last lines of $log:" >&2
  tail -20 "$log" >&2
  exit 1
fi
echo "setup: done" >&2
