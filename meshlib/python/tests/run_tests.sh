#!/usr/bin/env bash
# Runs the Python package's tests (test_meshlib.py) on Debian's python3,
# with the binaries Bazel built. From the checkout, after a build:
#   MESHLIB_LIBRARY=bazel-bin/meshlib/capi/libmeshlib.so \
#   ECHO_SERVER=bazel-bin/examples/echo/echo_server \
#   MESHCALL=bazel-bin/examples/meshcall/meshcall \
#   PYTHONPATH=meshlib/python python3 meshlib/python/tests/test_meshlib.py
set -euo pipefail
export MESHLIB_LIBRARY="${MESHLIB_LIBRARY:-$PWD/meshlib/capi/libmeshlib.so}"
export ECHO_SERVER="${ECHO_SERVER:-$PWD/examples/echo/echo_server}"
export MESHCALL="${MESHCALL:-$PWD/examples/meshcall/meshcall}"
export PYTHONPATH="$PWD/meshlib/python"
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 meshlib/python/tests/test_meshlib.py -v
