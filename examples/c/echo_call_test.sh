#!/usr/bin/env bash
# The C example calls a real echo_server through libmeshlib.so.
set -euo pipefail
server_out="${TEST_TMPDIR:-/tmp}/echo_server.out"
examples/echo/echo_server --port=0 >"${server_out}" 2>&1 &
pid=$!
trap 'kill ${pid} 2>/dev/null || true' EXIT
address=""
for _ in $(seq 100); do
  address="$(sed -n 's/^listening on //p' "${server_out}" | head -1)"
  [[ -n "${address}" ]] && break
  sleep 0.1
done
[[ -n "${address}" ]] || { echo "echo_server did not start"; cat "${server_out}"; exit 1; }
out="$(examples/c/echo_call "${address}" "hello from C")"
echo "${out}"
[[ "${out}" == "OK from ${address}: hello from C" ]] || { echo "unexpected output"; exit 1; }
# A dead address: a clear error, exit status 1.
if examples/c/echo_call 127.0.0.1:1 x 2>"${TEST_TMPDIR:-/tmp}/err.txt"; then
  echo "expected a failure"; exit 1
fi
grep -q "^UNAVAILABLE: " "${TEST_TMPDIR:-/tmp}/err.txt" || { echo "no UNAVAILABLE message"; exit 1; }
echo "ok"
