#!/usr/bin/env bash
# Runs live_page_test.py with the binaries Bazel built (chromium and
# python3-websocket come from Debian, installed by tools/setup.sh).
set -euo pipefail
export DEMO="$PWD/examples/demo/demo"
export ECHO_SERVER="$PWD/examples/echo/echo_server"
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 tests/metrics/live_page_test.py -v
