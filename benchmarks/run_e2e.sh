#!/usr/bin/env bash
# End-to-end loopback echo benchmark: meshlib next to a raw TCP echo (the
# physical limit) and gRPC C++, measured in one run on the same machine.
#
#   benchmarks/run_e2e.sh                          # 5 s per measurement
#   benchmarks/run_e2e.sh --duration=1s --warmup=200ms --out=/tmp/e2e.jsonl
#
# For each system it builds the server and client (bazel -c opt), starts the
# server on an ephemeral loopback port, runs
#   pingpong:   one call in flight; latency p50/p99/p999
#   throughput: --inflight calls in flight over --connections connections
# and stops the server, then prints one table with ratios against raw TCP.
# The clients' JSON lines (benchmarks/common/bench_stats.h) go to --out.
#
# Every client takes the same flags (--address --mode --payload --duration
# --warmup --connections --inflight --json), so a row differs from another only
# in the system under test. A system whose targets do not exist (meshlib's,
# while they are being written) is reported as "not built", not an error.
#
# Flags:
#   --duration=D        measured time per run (default 5s; ms, s, m suffixes)
#   --warmup=D          unmeasured time before each run (default 1s)
#   --payload=N         bytes per request and reply (default 64)
#   --connections=N     throughput: connections (default 4)
#   --inflight=N        throughput: calls in flight in total (default 32)
#   --systems=LIST      comma-separated subset of raw_tcp,grpc,meshlib,mesh,
#                       meshcall,mesh_tls,grpc_tls,mesh_grpc,grpc_to_meshlib (default:
#                       the first four). "mesh_grpc" is the mesh Client
#                       speaking gRPC (a service with "protocol": "grpc") to
#                       gRPC C++'s server, against which the "grpc" row is
#                       gRPC's own C++ client; "grpc_to_meshlib" is gRPC's
#                       C++ client calling meshlib's echo_server. "meshlib"
#                       drives a bare client::Channel; "mesh" calls through a
#                       mesh Client (the whole stack over a static discovery of
#                       the server), as applications do. "meshcall" is the
#                       same stack driven by the meshcall tool (a mesh.json
#                       written for the run; meshcall has no warm-up, so its
#                       measured time includes connecting). "mesh_tls" and
#                       "grpc_tls" are "mesh" and "grpc" over mutual TLS 1.3
#                       (certificates made with the openssl CLI for the run)
#   --server-threads=N  I/O threads of every server (default 1): raw TCP, gRPC
#                       and meshlib alike
#   --busy-poll-us=N    busy polling after work, in microseconds, for the
#                       servers and clients that have it: raw TCP, meshlib,
#                       mesh, meshcall and mesh_tls (mesh.json's "busy_poll"); gRPC
#                       C++ has no such setting. Default 0, off, as in the
#                       library
#   --pin               run servers on CPU 0 and clients on CPU 1 (taskset);
#                       default is unpinned, left to the scheduler
#   --pin=same          run servers and clients all on CPU 0. On VMs where
#                       waking an idle vCPU is slow, unpinned ping-pong swings
#                       between "same CPU" and "other CPU" latencies from run
#                       to run; pinning either way makes systems comparable
#   --rounds=N          measure every system N times (default 1), rotating the
#                       order each round so that no system always runs right
#                       after the same other one; the tables then show each
#                       system's median round (throughput: by calls/s;
#                       ping-pong: by p50), ratios between those medians, and
#                       the calls/s range. On a shared VM single runs swing by
#                       tens of percent; medians of 5 or more are steadier
#   --out=FILE          where to write the JSON lines (default: a temp file)
#
# Exit status is non-zero if any selected system that was built failed to run.
set -euo pipefail

readonly kRepoRoot="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

duration=5s
warmup=1s
payload=64
connections=4
inflight=32
systems=raw_tcp,grpc,meshlib,mesh
server_threads=1
busy_poll_us=0
pin=""
out=""
rounds=1

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit "${1:-0}"
}

for arg in "$@"; do
  case "${arg}" in
    --duration=*) duration="${arg#*=}" ;;
    --warmup=*) warmup="${arg#*=}" ;;
    --payload=*) payload="${arg#*=}" ;;
    --connections=*) connections="${arg#*=}" ;;
    --inflight=*) inflight="${arg#*=}" ;;
    --systems=*) systems="${arg#*=}" ;;
    --server-threads=*) server_threads="${arg#*=}" ;;
    --busy-poll-us=*) busy_poll_us="${arg#*=}" ;;
    --pin | --pin=split) pin=split ;;
    --pin=same) pin=same ;;
    --out=*) out="${arg#*=}" ;;
    --rounds=*) rounds="${arg#*=}" ;;
    -h | --help) usage 0 ;;
    *) echo "run_e2e.sh: unknown flag ${arg}" >&2; usage 2 >&2 ;;
  esac
done

die() {
  echo "run_e2e.sh: $*" >&2
  exit 2
}

# Value of a numeric field in one of our JSON lines (fixed format; a key
# that occurs twice gives its last value).
field() {
  sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"
}

# Duration string -> milliseconds; rejects what the clients would reject
# later, after a build, with a less helpful message.
duration_ms() {
  local d="$1"
  [[ "${d}" =~ ^([0-9]+(\.[0-9]+)?)(ms|s|m)$ ]] || die "bad duration '${d}' (want e.g. 500ms, 5s, 1m)"
  awk -v n="${BASH_REMATCH[1]}" -v unit="${BASH_REMATCH[3]}" 'BEGIN {
    scale = (unit == "ms") ? 1 : (unit == "s") ? 1000 : 60000
    printf "%d", n * scale
  }'
}

for n in payload connections inflight server_threads busy_poll_us rounds; do
  [[ "${!n}" =~ ^[0-9]+$ ]] || die "--${n//_/-} must be a whole number"
done
(( connections >= 1 && inflight >= connections )) || die "need 1 <= --connections <= --inflight"
(( rounds >= 1 && rounds <= 50 )) || die "--rounds must be between 1 and 50"
duration_value_ms="$(duration_ms "${duration}")" || exit 2
warmup_value_ms="$(duration_ms "${warmup}")" || exit 2
readonly run_ms=$(( duration_value_ms + warmup_value_ms ))

IFS=',' read -r -a selected <<<"${systems}"
for s in "${selected[@]}"; do
  case "${s}" in raw_tcp | grpc | meshlib | mesh | meshcall | mesh_tls | grpc_tls | mesh_grpc | grpc_to_meshlib) ;;
    *) die "unknown system '${s}' in --systems" ;; esac
done

server_cpu=()
client_cpu=()
case "${pin}" in
  split)
    command -v taskset >/dev/null || die "--pin needs taskset (util-linux)"
    (( $(nproc) >= 2 )) || die "--pin needs at least 2 CPUs"
    server_cpu=(taskset -c 0)
    client_cpu=(taskset -c 1)
    placement="servers on CPU 0, clients on CPU 1"
    ;;
  same)
    command -v taskset >/dev/null || die "--pin needs taskset (util-linux)"
    server_cpu=(taskset -c 0)
    client_cpu=(taskset -c 0)
    placement="servers and clients on CPU 0"
    ;;
  *) placement="unpinned" ;;
esac

workdir="$(mktemp -d "${TMPDIR:-/tmp}/meshlib-e2e.XXXXXX")"
if [[ -z "${out}" ]]; then
  out="${workdir}/results.jsonl"
fi
: >"${out}"

# Everything started in the background is recorded here and killed on exit,
# however the script ends (error, Ctrl-C, SIGTERM from CI).
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]+"${pids[@]}"}"; do
    kill -TERM "${pid}" 2>/dev/null || true
  done
  for pid in "${pids[@]+"${pids[@]}"}"; do
    # A server that ignores SIGTERM for 3 s gets SIGKILL.
    for _ in $(seq 30); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${pid}" 2>/dev/null || true
  done
  # The results file is wanted even when it sits in workdir.
  find "${workdir}" -mindepth 1 -maxdepth 1 ! -name results.jsonl -exec rm -rf {} +
  [[ -n "$(ls -A "${workdir}")" ]] || rmdir "${workdir}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {
  local keep=() pid
  for pid in "${pids[@]}"; do
    [[ "${pid}" == "$1" ]] || keep+=("${pid}")
  done
  pids=("${keep[@]+"${keep[@]}"}")
}

# ---------------------------------------------------------------- build ---

cd "${kRepoRoot}"
bazel_log="${workdir}/bazel.log"

declare -A server_target=(
  [raw_tcp]=//benchmarks:raw_echo_server
  [grpc]=//benchmarks:grpc_echo_server
  [meshlib]=//examples/echo:echo_server
  [mesh]=//examples/echo:echo_server
  [meshcall]=//examples/echo:echo_server
  [mesh_tls]=//examples/echo:echo_server
  [grpc_tls]=//benchmarks:grpc_echo_server
  [mesh_grpc]=//benchmarks:grpc_echo_server
  [grpc_to_meshlib]=//examples/echo:echo_server
)
declare -A client_target=(
  [raw_tcp]=//benchmarks:raw_echo_client
  [grpc]=//benchmarks:grpc_echo_client
  [meshlib]=//benchmarks:meshlib_echo_client
  [mesh]=//benchmarks:meshlib_echo_client
  [meshcall]=//examples/meshcall:meshcall
  [mesh_tls]=//benchmarks:meshlib_echo_client
  [grpc_tls]=//benchmarks:grpc_echo_client
  [mesh_grpc]=//benchmarks:meshlib_echo_client
  [grpc_to_meshlib]=//benchmarks:grpc_echo_client
)
declare -A status=()  # system -> "" (ready) or why it has no numbers

target_exists() {
  bazel query --noshow_progress "$1" >>"${bazel_log}" 2>&1
}

# //pkg:name -> bazel-bin/pkg/name
target_path() {
  local label="${1#//}"
  echo "${label%%:*}/${label#*:}"
}

build_system() {
  local s="$1" t
  for t in "${server_target[${s}]}" "${client_target[${s}]}"; do
    if ! target_exists "${t}"; then
      status[${s}]="not built (${t} does not exist yet)"
      return
    fi
  done
  echo "building ${s} ..." >&2
  if ! bazel build -c opt --noshow_progress "${server_target[${s}]}" \
      "${client_target[${s}]}" >>"${bazel_log}" 2>&1; then
    status[${s}]="build failed (bazel output above)"
    tail -n 30 "${bazel_log}" >&2
    return
  fi
  # Copies, so that a colleague rebuilding the same targets in this checkout
  # cannot swap a binary between this run's pingpong and throughput halves.
  mkdir -p "${workdir}/bin/${s}"
  for t in "${server_target[${s}]}" "${client_target[${s}]}"; do
    cp "${bazel_bin}/$(target_path "${t}")" "${workdir}/bin/${s}/"
  done
  status[${s}]=""
}

bazel_bin="$(bazel info -c opt bazel-bin 2>>"${bazel_log}")" || {
  cat "${bazel_log}" >&2
  die "bazel info failed"
}
for s in "${selected[@]}"; do
  build_system "${s}"
done

# ------------------------------------------------------------------ run ---

# Starts a server in the background and sets server_pid and server_address
# from its "listening on HOST:PORT" line.
start_server() {
  local s="$1"
  shift
  local log="${workdir}/${s}.server.log"
  "${server_cpu[@]+"${server_cpu[@]}"}" "$@" >"${log}" 2>&1 &
  server_pid=$!
  pids+=("${server_pid}")
  local line=""
  for _ in $(seq 150); do
    line="$(grep -m1 '^listening on ' "${log}" || true)"
    [[ -n "${line}" ]] && break
    kill -0 "${server_pid}" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "${line}" ]]; then
    echo "${s}: server did not report its address within 15 s:" >&2
    cat "${log}" >&2
    return 1
  fi
  server_address="${line#listening on }"
  # A wildcard bind is still reached over loopback.
  server_address="${server_address/#0.0.0.0:/127.0.0.1:}"
  server_address="${server_address/#\[::\]:/[::1]:}"
}

stop_server() {
  kill -TERM "${server_pid}" 2>/dev/null || true
  # Servers drain calls in flight on SIGTERM (meshlib's for up to 10 s), but
  # a stuck one must not stall the whole run.
  for _ in $(seq 150); do
    kill -0 "${server_pid}" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "${server_pid}" 2>/dev/null || true
  local rc=0
  wait "${server_pid}" || rc=$?
  forget_pid "${server_pid}"
  # Non-zero also explains a client failure: 141 is a SIGPIPE, 139 a crash,
  # 137 a server still running 15 s after SIGTERM.
  if (( rc != 0 )); then
    echo "note: ${1} server exited with status ${rc}; its log:" >&2
    tail -n 20 "${workdir}/${1}.server.log" >&2
  fi
}

# Runs a client command on the clients' CPU, in the background (so that the
# traps can kill it) and killed after $1 seconds if it hangs; its output goes
# to $2 and $2.err. Returns the client's exit status.
run_pinned_client() {
  local limit_s="$1" result="$2"
  shift 2
  timeout --signal=KILL "${limit_s}" "${client_cpu[@]+"${client_cpu[@]}"}" "$@" \
    >"${result}" 2>"${result}.err" &
  local pid=$!
  pids+=("${pid}")
  local rc=0
  wait "${pid}" || rc=$?
  forget_pid "${pid}"
  return "${rc}"
}

# Runs one client measurement in the background (so that the traps can kill
# it) and appends its JSON line to ${out}.
run_client() {
  local s="$1" mode="$2"
  local client="${workdir}/bin/${s}/$(basename "$(target_path "${client_target[${s}]}")")"
  local result="${workdir}/${s}.${mode}.out"
  local extra_client_flags=()
  if [[ "${s}" == raw_tcp || "${s}" == meshlib ]]; then
    extra_client_flags=(--busy_poll_us="${busy_poll_us}")
  fi
  if [[ "${s}" == mesh ]]; then extra_client_flags=(--mesh --busy_poll_us="${busy_poll_us}"); fi
  if [[ "${s}" == mesh_tls ]]; then
    extra_client_flags=(--mesh --busy_poll_us="${busy_poll_us}" "${tls_client_flags[@]}")
  fi
  if [[ "${s}" == grpc_tls ]]; then extra_client_flags=("${tls_client_flags[@]}"); fi
  if [[ "${s}" == mesh_grpc ]]; then extra_client_flags=(--mesh --grpc); fi
  # Clients stop themselves; this only catches a hung one.
  local limit_s=$(( run_ms / 1000 + 60 ))
  echo "running ${s} ${mode} ..." >&2
  if [[ "${s}" == meshcall ]]; then
    run_meshcall "${client}" "${mode}" "${result}" "${limit_s}" || return 1
    return 0
  fi
  local rc=0
  run_pinned_client "${limit_s}" "${result}" "${client}" \
    --address="${server_address}" --mode="${mode}" --payload="${payload}" \
    --duration="${duration}" --warmup="${warmup}" \
    --connections="${connections}" --inflight="${inflight}" --json \
    "${extra_client_flags[@]+"${extra_client_flags[@]}"}" || rc=$?
  local line
  line="$(grep -m1 '^{' "${result}" || true)"
  if (( rc != 0 )) || [[ -z "${line}" ]]; then
    echo "${s} ${mode}: client failed (status ${rc}):" >&2
    cat "${result}.err" "${result}" >&2
    return 1
  fi
  echo "${line}" >>"${out}"
  runs["${s}.${mode}"]+="${line}"$'\n'
}

# The meshcall tool as a client: it reads a mesh.json and prints its own
# JSON, turned here into the line every other client prints. Ping-pong is
# one call in flight on one connection; throughput uses --inflight over
# --connections, as the others do. Any failed call fails the run.
run_meshcall() {
  local client="$1" mode="$2" result="$3" limit_s="$4"
  local config="${workdir}/meshcall.${mode}.json"
  local concurrency="${inflight}" conns="${connections}"
  if [[ "${mode}" == pingpong ]]; then concurrency=1; conns=1; fi
  printf '{"mesh": {"busy_poll": "%sus"}, "services": {"echo": {"discovery": {"static": {"endpoints": ["%s"]}}, "timeout": "10s"}}}\n' \
    "${busy_poll_us}" "${server_address}" >"${config}"
  local data
  data="$(head -c "${payload}" /dev/zero | tr '\0' x)"
  local rc=0
  run_pinned_client "${limit_s}" "${result}" "${client}" --config="${config}" --service=echo \
    --method=Echo/Say --data="${data}" --concurrency="${concurrency}" \
    --connections="${conns}" --duration="${duration}" --json || rc=$?
  local j requests ok
  j="$(grep -m1 '^{' "${result}" || true)"
  requests="$(field "${j}" requests)"
  ok="$(field "${j}" ok)"
  if (( rc != 0 )) || [[ -z "${j}" || -z "${requests}" || "${requests}" != "${ok}" ]]; then
    echo "meshcall ${mode}: client failed (status ${rc}, ${ok:-?} of ${requests:-?} calls ok):" >&2
    cat "${result}.err" "${result}" >&2
    return 1
  fi
  local line
  line="$(printf '{"system":"meshcall","mode":"%s","calls":%s,"qps":%s,"p50_us":%s,"p99_us":%s,"p999_us":%s,"max_us":%s}' \
    "${mode}" "${requests}" "$(field "${j}" qps)" "$(field "${j}" p50)" "$(field "${j}" p99)" \
    "$(field "${j}" p999)" "$(field "${j}" max)")"
  echo "${line}" >>"${out}"
  runs["meshcall.${mode}"]+="${line}"$'\n'
}

# Certificates for the TLS systems: a CA, a server leaf (SPIFFE ID, and
# IP 127.0.0.1 for gRPC's hostname check) and a client leaf, ECDSA P-256.
tls_dir="${workdir}/tls"
tls_client_flags=()
tls_server_flags=()
make_certs() {
  mkdir -p "${tls_dir}"
  (
    cd "${tls_dir}"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
      -out ca.crt -days 2 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign
    for leaf in server client; do
      printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n%s\n' \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=URI:spiffe://bench.test/${leaf},DNS:localhost,IP:127.0.0.1" >"${leaf}.ext"
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "${leaf}.key" \
        -out "${leaf}.csr" -subj "/CN=${leaf}"
      openssl x509 -req -in "${leaf}.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out "${leaf}.crt" -days 2 -extfile "${leaf}.ext"
    done
  ) >"${workdir}/certs.log" 2>&1 || { cat "${workdir}/certs.log" >&2; die "openssl failed"; }
  tls_client_flags=(--tls_ca="${tls_dir}/ca.crt" --tls_cert="${tls_dir}/client.crt"
                    --tls_key="${tls_dir}/client.key")
  tls_server_flags=(--tls_ca="${tls_dir}/ca.crt" --tls_cert="${tls_dir}/server.crt"
                    --tls_key="${tls_dir}/server.key")
}
for s in "${selected[@]}"; do
  if [[ "${s}" == *_tls ]]; then make_certs; break; fi
done

declare -A results=()  # "system.mode" -> the JSON line of its median round
declare -A runs=()     # "system.mode" -> every round's JSON line, one per line
failed=0
for (( round = 0; round < rounds; ++round )); do
  # Rotate the order: round r starts at the r-th system.
  order=()
  for (( i = 0; i < ${#selected[@]}; ++i )); do
    order+=("${selected[$(( (i + round) % ${#selected[@]} ))]}")
  done
  (( rounds == 1 )) || echo "round $(( round + 1 )) of ${rounds}: ${order[*]}" >&2
  for s in "${order[@]}"; do
    [[ -z "${status[${s}]}" ]] || continue
    bin="${workdir}/bin/${s}"
    case "${s}" in
      raw_tcp) server_cmd=("${bin}/raw_echo_server" --port=0 --threads="${server_threads}"
                           --busy_poll_us="${busy_poll_us}") ;;
      grpc | mesh_grpc) server_cmd=("${bin}/grpc_echo_server" --port=0 --threads="${server_threads}") ;;
      grpc_to_meshlib) server_cmd=("${bin}/echo_server" --port=0 --io_threads="${server_threads}") ;;
      meshlib | mesh | meshcall) server_cmd=("${bin}/echo_server" --port=0 --io_threads="${server_threads}"
                                  --busy_poll_us="${busy_poll_us}") ;;
      mesh_tls) server_cmd=("${bin}/echo_server" --port=0 --io_threads="${server_threads}"
                            --busy_poll_us="${busy_poll_us}" "${tls_server_flags[@]}") ;;
      grpc_tls) server_cmd=("${bin}/grpc_echo_server" --port=0 --threads="${server_threads}"
                            "${tls_server_flags[@]}") ;;
    esac
    if ! start_server "${s}" "${server_cmd[@]}"; then
      status[${s}]="server did not start"
      failed=1
      continue
    fi
    for mode in pingpong throughput; do
      if ! run_client "${s}" "${mode}"; then
        status[${s}]="client failed"
        failed=1
        break
      fi
    done
    stop_server "${s}"
  done
done

# ---------------------------------------------------------------- table ---

# Microseconds with one decimal; "-" for a client that sent no samples (0).
us() {
  awk -v v="$1" 'BEGIN { if (v + 0 == 0) print "-"; else printf "%.1f", v }'
}

# a / b as "2.03x", or "-" when b is missing or zero.
times() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2fx", a / b }'
}

# a / b as "3.9%", or "-" when b is missing or zero.
percent() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.1f%%", 100 * a / b }'
}

# The median round of "system.mode" by a field (ascending; the lower middle
# for an even count), and the smallest and largest value of that field.
sorted_by() {
  local line
  while IFS= read -r line; do
    if [[ -n "${line}" ]]; then echo "$(field "${line}" "$2") ${line}"; fi
  done <<<"$1" | sort -g
}
declare -A range=()  # "system.throughput" -> "min-max" calls/s over the rounds
for key in "${!runs[@]}"; do
  by=qps
  [[ "${key}" == *.pingpong ]] && by=p50_us
  sorted="$(sorted_by "${runs[${key}]}" "${by}")"
  n="$(grep -c . <<<"${sorted}")"
  results["${key}"]="$(sed -n "$(( (n + 1) / 2 ))p" <<<"${sorted}" | cut -d' ' -f2-)"
  range["${key}"]="$(awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f-%.0f", lo, hi }' \
    <<<"${sorted}")"
done

raw_pp="${results[raw_tcp.pingpong]:-}"
raw_tp="${results[raw_tcp.throughput]:-}"
grpc_tp="${results[grpc.throughput]:-}"
mesh_pp="${results[mesh.pingpong]:-}"
mesh_tp="${results[mesh.throughput]:-}"

echo
echo "meshlib end-to-end echo benchmark: ${payload}-byte payload, loopback," \
  "${duration} measured after ${warmup} warmup, $(nproc) CPUs, ${placement}"
if (( rounds > 1 )); then
  echo "Each row is that system's median of ${rounds} rounds; ratios are between medians"
fi
echo
echo "Ping-pong latency (1 call in flight), microseconds; 'vs raw' = p50 / raw TCP p50"
printf '%-16s %10s %10s %10s %10s %12s %8s\n' system p50 p99 p999 max calls/s "vs raw"
for s in "${selected[@]}"; do
  line="${results[${s}.pingpong]:-}"
  if [[ -z "${line}" ]]; then
    printf '%-16s %s\n' "${s}" "${status[${s}]:-no result}"
    continue
  fi
  printf '%-16s %10s %10s %10s %10s %12.0f %8s\n' "${s}" \
    "$(us "$(field "${line}" p50_us)")" "$(us "$(field "${line}" p99_us)")" \
    "$(us "$(field "${line}" p999_us)")" "$(us "$(field "${line}" max_us)")" \
    "$(field "${line}" qps)" \
    "$(times "$(field "${line}" p50_us)" "$(field "${raw_pp}" p50_us)")"
done
echo
echo "Throughput (${inflight} calls in flight over ${connections} connections);" \
  "'of raw' = share of raw TCP's calls/s, 'x gRPC' = multiple of gRPC's; latency in microseconds"
printf '%-16s %12s %8s %8s %10s %10s %10s' system calls/s "of raw" "x gRPC" p50 p99 p999
(( rounds == 1 )) || printf '  %s' "calls/s range"
echo
for s in "${selected[@]}"; do
  line="${results[${s}.throughput]:-}"
  if [[ -z "${line}" ]]; then
    printf '%-16s %s\n' "${s}" "${status[${s}]:-no result}"
    continue
  fi
  printf '%-16s %12.0f %8s %8s %10s %10s %10s' "${s}" \
    "$(field "${line}" qps)" \
    "$(percent "$(field "${line}" qps)" "$(field "${raw_tp}" qps)")" \
    "$(times "$(field "${line}" qps)" "$(field "${grpc_tp}" qps)")" \
    "$(us "$(field "${line}" p50_us)")" "$(us "$(field "${line}" p99_us)")" \
    "$(us "$(field "${line}" p999_us)")"
  (( rounds == 1 )) || printf '  %s' "${range[${s}.throughput]:-}"
  echo
done
if [[ -n "${results[mesh_tls.throughput]:-}" && -n "${mesh_tp}" ]]; then
  echo
  echo "TLS against plaintext, meshlib's whole stack: throughput" \
    "$(percent "$(field "${results[mesh_tls.throughput]}" qps)" "$(field "${mesh_tp}" qps)")" \
    "of plaintext; throughput p50 $(times "$(field "${results[mesh_tls.throughput]}" p50_us)" \
    "$(field "${mesh_tp}" p50_us)") plaintext's; ping-pong p50" \
    "$(times "$(field "${results[mesh_tls.pingpong]:-}" p50_us)" "$(field "${mesh_pp}" p50_us)")" \
    "plaintext's"
fi
echo
echo "JSON lines: ${out}"
exit "${failed}"
