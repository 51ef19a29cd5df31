#!/usr/bin/env bash
# Builds the libFuzzer targets with plain clang++ (fuzzing stays out of Bazel)
# and runs each for a bounded time on a copy of its seed corpus.
#
#   tests/fuzz/run_fuzzers.sh                      # 60 s, output in a new temp dir
#   FUZZ_SECONDS=30 FUZZ_OUT_DIR=/tmp/fz tests/fuzz/run_fuzzers.sh
#
# Environment:
#   FUZZ_SECONDS  run time per fuzzer in seconds (default 60)
#   FUZZ_OUT_DIR  where binaries, the working corpus and crash artifacts go
#                 (default: a fresh mktemp -d). Nothing is written into the
#                 source tree; to keep inputs the fuzzer found, copy them from
#                 $FUZZ_OUT_DIR/corpus/<fuzzer>/ into tests/fuzz/corpus/ by hand.
#   CXX           the compiler (default clang++; needs libclang-rt-14-dev)
#
# Exits non-zero if a build fails or a fuzzer finds a crash, leak, timeout or
# out-of-memory input; the reproducer is left in $FUZZ_OUT_DIR/artifacts/.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${repo_root}"

seconds="${FUZZ_SECONDS:-60}"
out_dir="${FUZZ_OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/meshlib-fuzz.XXXXXX")}"
cxx="${CXX:-clang++}"

case "${seconds}" in
  '' | *[!0-9]*) echo "FUZZ_SECONDS must be a whole number of seconds, got '${seconds}'" >&2; exit 2 ;;
esac
mkdir -p "${out_dir}"
out_dir="$(cd "${out_dir}" && pwd)"
case "${out_dir}/" in
  "${repo_root}/"*) echo "FUZZ_OUT_DIR must be outside the source tree: ${out_dir}" >&2; exit 2 ;;
esac

if ! command -v "${cxx}" >/dev/null 2>&1; then
  echo "${cxx} not found: apt-get install clang libclang-rt-14-dev" >&2
  exit 2
fi
if [[ ! -f "$("${cxx}" -print-file-name=libclang_rt.fuzzer-x86_64.a)" ]]; then
  echo "libFuzzer runtime missing for ${cxx}: apt-get install libclang-rt-14-dev" >&2
  exit 2
fi

# Sanitizer findings must stop the run: UBSan only warns unless told otherwise.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

status=0

# run_fuzzer NAME SOURCES... : builds NAME from SOURCES and fuzzes it.
run_fuzzer() {
  local name="$1"
  shift
  local bin="${out_dir}/${name}"
  local corpus="${out_dir}/corpus/${name}"
  local artifacts="${out_dir}/artifacts/${name}/"

  echo "== building ${name} -> ${bin}"
  # shellcheck disable=SC2046  # pkg-config output must split into words
  "${cxx}" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -I. "$@" \
    $(pkg-config --cflags --libs absl_status absl_statusor absl_strings absl_time) \
    -o "${bin}"

  mkdir -p "${corpus}" "${artifacts}"
  cp -R "tests/fuzz/corpus/${name}/." "${corpus}/"

  echo "== fuzzing ${name} for ${seconds}s (corpus ${corpus})"
  local rc=0
  "${bin}" -max_total_time="${seconds}" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="${artifacts}" "${corpus}" \
    >"${out_dir}/${name}.log" 2>&1 || rc=$?
  tail -n 25 "${out_dir}/${name}.log"

  local found
  found="$(find "${artifacts}" -type f | head -n 20)"
  if [[ ${rc} -ne 0 || -n "${found}" ]]; then
    echo "!! ${name}: fuzzer exited with ${rc}; artifacts:" >&2
    echo "${found:-  (none)}" >&2
    echo "!! reproduce with: ${bin} <artifact>   (full log: ${out_dir}/${name}.log)" >&2
    status=1
  else
    echo "== ${name}: no crash in ${seconds}s"
  fi
}

run_fuzzer frame_decoder meshlib/transport/frame.cc tests/fuzz/frame_decoder_fuzzer.cc
run_fuzzer dns_message meshlib/discovery/dns/dns_message.cc tests/fuzz/dns_message_fuzzer.cc
run_fuzzer http_response_parser meshlib/etcd/http_parser.cc tests/fuzz/http_response_parser_fuzzer.cc
run_fuzzer etcd_watch_stream meshlib/etcd/internal/etcd_json.cc tests/fuzz/etcd_watch_stream_fuzzer.cc
run_fuzzer http_request_parser meshlib/admin/http_request.cc tests/fuzz/http_request_parser_fuzzer.cc
# shellcheck disable=SC2046  # pkg-config output must split into words
run_fuzzer grpc_server_session meshlib/grpc/server_session.cc meshlib/grpc/wire.cc \
  meshlib/transport/frame.cc tests/fuzz/grpc_server_session_fuzzer.cc $(pkg-config --libs libnghttp2)

# TLS: BoringSSL's headers (/usr/include/android) shadow OpenSSL's, and its
# libraries are linked by path; the server's certificate is made here.
tls_cert_dir="${out_dir}/tls_cert"
mkdir -p "${tls_cert_dir}"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "${tls_cert_dir}/key.pem" -out "${tls_cert_dir}/cert.pem" -days 30 -subj /CN=fuzz \
  -addext "subjectAltName=URI:spiffe://mesh.test/fuzz" >/dev/null 2>&1
export MESHLIB_FUZZ_CERT_DIR="${tls_cert_dir}"
run_fuzzer tls_handshake meshlib/tls/spiffe.cc meshlib/tls/tls_errors.cc \
  tests/fuzz/tls_handshake_fuzzer.cc -I/usr/include/android \
  -L/usr/lib/x86_64-linux-gnu/android -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android -lssl -lcrypto

echo "== output in ${out_dir}"
exit "${status}"
