#!/usr/bin/env bash
# The Python example calls its own Python server and a real echo_server.
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
[[ -n "${address}" ]] || { echo "echo_server did not start"; exit 1; }
out="$(MESHLIB_LIBRARY="$PWD/meshlib/capi/libmeshlib.so" PYTHONPATH="$PWD/meshlib/python" \
  PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 examples/python/echo.py "${address}")"
echo "${out}"
grep -q "^blocking: HELLO$" <<<"${out}"
grep -q "^asyncio: \['CALL 0', 'CALL 1', 'CALL 2'\]$" <<<"${out}"
grep -q "^error: UNIMPLEMENTED: " <<<"${out}"
grep -q "^c++ echo_server: from python$" <<<"${out}"
echo "ok"
