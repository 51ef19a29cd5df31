#!/usr/bin/env bash
# The C ABI as a user gets it: meshlib.h and libmeshlib.so copied into an
# install prefix, the C example (examples/c/echo_call.c) compiled there as
# strict C99 with gcc and with clang, outside Bazel, then run against a
# real echo_server. The library loads on its own (no other meshlib file).
set -euo pipefail
prefix="${TEST_TMPDIR:-$(mktemp -d)}/prefix"
mkdir -p "${prefix}/include/meshlib" "${prefix}/lib"
cp meshlib/capi/meshlib.h "${prefix}/include/meshlib/"
cp meshlib/capi/libmeshlib.so "${prefix}/lib/"
chmod u+w "${prefix}/lib/libmeshlib.so"

# Its only dependencies are the system's C and C++ runtimes and libraries.
ldd "${prefix}/lib/libmeshlib.so"
if ldd "${prefix}/lib/libmeshlib.so" | grep -q "not found"; then
  echo "libmeshlib.so does not load on its own"; exit 1
fi

# The example includes "meshlib/capi/meshlib.h" (its path in the checkout);
# the installed layout offers <meshlib/meshlib.h>: compile a copy that uses it.
src="${prefix}/echo_call.c"
sed 's|#include "meshlib/capi/meshlib.h"|#include <meshlib/meshlib.h>|' examples/c/echo_call.c >"${src}"
grep -q "<meshlib/meshlib.h>" "${src}" || { echo "the example's include changed"; exit 1; }

server_out="${prefix}/echo_server.out"
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

for cc in gcc clang; do
  "${cc}" -std=c99 -pedantic -Wall -Wextra -Werror -I"${prefix}/include" \
    -o "${prefix}/echo_call_${cc}" "${src}" -L"${prefix}/lib" -lmeshlib
  # The header alone, as C99 and as C++ (extern "C").
  echo '#include <meshlib/meshlib.h>' | "${cc}" -std=c99 -pedantic -Wall -Wextra -Werror \
    -I"${prefix}/include" -fsyntax-only -x c -
  out="$(LD_LIBRARY_PATH="${prefix}/lib" "${prefix}/echo_call_${cc}" "${address}" "via ${cc}")"
  echo "${out}"
  [[ "${out}" == "OK from ${address}: via ${cc}" ]] || { echo "unexpected output"; exit 1; }
done
echo '#include <meshlib/meshlib.h>' | g++ -std=c++17 -Wall -Wextra -Werror \
  -I"${prefix}/include" -fsyntax-only -x c++ -
echo "ok"
