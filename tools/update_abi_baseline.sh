#!/usr/bin/env bash
# Records the C ABI of the libmeshlib.so built now as the baseline that
# //meshlib/capi:abi_test compares against (meshlib/capi/libmeshlib.abi).
# Run it when an ABI change is intended (and MESHLIB_VERSION says so).
set -euo pipefail
cd "$(dirname "$0")/.."
bazel build -c opt //meshlib/capi:libmeshlib.so
headers="$(mktemp -d)"
cp meshlib/capi/meshlib.h "${headers}/"
abidw --headers-dir "${headers}" --drop-private-types --exported-interfaces-only \
  --no-corpus-path --no-comp-dir-path \
  --out-file meshlib/capi/libmeshlib.abi bazel-bin/meshlib/capi/libmeshlib.so
echo "wrote meshlib/capi/libmeshlib.abi"
