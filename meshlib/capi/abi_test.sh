#!/usr/bin/env bash
# The C ABI check: libmeshlib.so against the committed baseline
# (meshlib/capi/libmeshlib.abi, written by abidw from a build of the last
# release of the ABI) with abigail's abidiff, restricted to the types of
# meshlib.h. A change to what the baseline has (a function removed, its
# signature changed, a public type changed in size or layout) fails; new
# functions pass and are listed. To accept a change on purpose, bump
# MESHLIB_VERSION and run tools/update_abi_baseline.sh.
set -uo pipefail
headers="$(mktemp -d)"
cp meshlib/capi/meshlib.h "${headers}/"
abidiff --version
report="$(abidiff --headers-dir2 "${headers}" --exported-interfaces-only \
  meshlib/capi/libmeshlib.abi meshlib/capi/libmeshlib.so)"
status=$?
echo "${report}"
# abidiff's status is a bit field: 1 error, 2 usage error, 4 ABI change,
# 8 incompatible change. abidiff calls only removals incompatible; this
# check is stricter: a function or variable of the baseline that changed
# at all (its signature, or a type it reaches: a struct's size or layout)
# fails too. Only additions pass.
if (( status & 3 )); then
  echo "abidiff failed (status ${status})"; exit 1
fi
changed="$(echo "${report}" | sed -n 's/^\(Functions\|Variables\) changes summary: \([0-9]*\) Removed, \([0-9]*\) Changed.*/\2 \3/p' |
  awk '{s += $1 + $2} END {print s + 0}')"
if (( status & 8 )) || (( changed > 0 )); then
  echo "INCOMPATIBLE change of the C ABI (above): ${changed} function(s) or variable(s)" \
    "removed or changed since the baseline."
  exit 1
fi
if (( status & 4 )); then
  echo "additions to the C ABI (above); tools/update_abi_baseline.sh records them"
fi
echo "ok"
