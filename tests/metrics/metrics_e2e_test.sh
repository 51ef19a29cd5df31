#!/usr/bin/env bash
# Runs metrics_e2e_test.py with the binaries Bazel built (promtool and
# prometheus come from Debian's prometheus package, installed by
# tools/setup.sh).
set -euo pipefail
export ECHO_SERVER="$PWD/examples/echo/echo_server"
export MESHCALL="$PWD/examples/meshcall/meshcall"
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 tests/metrics/metrics_e2e_test.py -v
