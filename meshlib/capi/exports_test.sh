#!/usr/bin/env bash
# libmeshlib.so exports the C ABI (meshlib_*) and nothing else.
set -euo pipefail
lib="meshlib/capi/libmeshlib.so"
[[ -f "${lib}" ]] || { echo "no ${lib}"; exit 1; }
exported="$(nm -D --defined-only --extern-only "${lib}" | awk '{print $3}' | sort)"
others="$(grep -v '^meshlib_' <<<"${exported}" || true)"
if [[ -n "${others}" ]]; then
  echo "libmeshlib.so exports symbols outside the C ABI:"
  echo "${others}" | head -20
  exit 1
fi
for f in meshlib_version meshlib_mesh_new_json meshlib_client_call meshlib_client_call_async; do
  grep -qx "${f}" <<<"${exported}" || { echo "missing export ${f}"; exit 1; }
done
echo "libmeshlib.so exports $(wc -l <<<"${exported}") meshlib_* symbols and nothing else"
