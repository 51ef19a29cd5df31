#!/usr/bin/env bash
# Runs grpcio_client_test.py with the binaries Bazel built (python3-grpcio
# and h2load come from Debian, installed by tools/setup.sh).
set -euo pipefail
export ECHO_SERVER="$PWD/examples/echo/echo_server"
export MESHCALL="$PWD/examples/meshcall/meshcall"
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 tests/grpc/grpcio_client_test.py -v
