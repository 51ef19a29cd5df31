#!/usr/bin/env python3
"""meshlib from Python: a Python service in the mesh, and calls to it and
to a C++ echo_server, blocking and with asyncio.

    bazel build //meshlib/capi:libmeshlib.so //examples/echo:echo_server
    bazel-bin/examples/echo/echo_server --port=7001 &
    PYTHONPATH=meshlib/python python3 examples/python/echo.py 127.0.0.1:7001
"""
import asyncio
import sys

import meshlib


def main() -> int:
    cpp_echo = sys.argv[1] if len(sys.argv) > 1 else None

    # A Python service: Shout/Say answers the request in capitals.
    server = meshlib.Server(port=0)
    server.handle("Shout/Say", lambda request, metadata: request.upper())
    shout_address = server.start()
    print(f"python server on {shout_address}")

    services = {"shout": {"discovery": {"static": {"endpoints": [shout_address]}},
                          "timeout": "1s", "retry": {"max_attempts": 3}}}
    if cpp_echo:
        services["echo"] = {"discovery": {"static": {"endpoints": [cpp_echo]}}, "timeout": "1s"}

    with meshlib.Mesh({"services": services}) as mesh:
        shout = mesh.client("shout")
        print("blocking:", shout.call("Shout/Say", b"hello", idempotent=True).decode())

        async def many() -> list:
            return await asyncio.gather(*[shout.call_async("Shout/Say", f"call {i}")
                                          for i in range(3)])
        print("asyncio:", [r.decode() for r in asyncio.run(many())])

        try:
            shout.call("Shout/Whisper", b"?")
        except meshlib.Error as e:
            print(f"error: {e.code}: {e.message}")

        if cpp_echo:
            echo = mesh.client("echo")
            print("c++ echo_server:", echo.call("Echo/Say", b"from python",
                                                metadata={"x-user": "py"}).decode())
            print("calls:", echo.stats()["calls"])

    server.stop(drain=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
