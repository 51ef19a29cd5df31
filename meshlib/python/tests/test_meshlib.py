"""The Python package against real processes: echo_server (C++), etcd,
meshcall, and Python servers. Run by meshlib/python/tests/run_tests.sh
(Bazel: //meshlib/python:python_test), which says where the binaries are.
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import meshlib

ECHO_SERVER = os.environ.get("ECHO_SERVER", "examples/echo/echo_server")
MESHCALL = os.environ.get("MESHCALL", "examples/meshcall/meshcall")
ETCD = shutil.which("etcd") or "/usr/bin/etcd"  # installed by tools/setup.sh


def start_echo_server(*flags: str) -> tuple:
    """Starts echo_server; returns (process, address)."""
    proc = subprocess.Popen([ECHO_SERVER, "--port=0", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"echo_server did not start: {line!r}")
    return proc, line.split()[-1]


def config(*addresses: str, timeout: str = "2s", **extra) -> dict:
    service = {"discovery": {"static": {"endpoints": list(addresses)}}, "timeout": timeout}
    service.update(extra)
    return {"services": {"echo": service}}


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EchoServers(unittest.TestCase):
    """Two fast echo_servers and a slow one (2 s per call), for the class."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.procs = []
        cls.fast = []
        for name in ("a", "b"):
            proc, address = start_echo_server(f"--name={name}")
            cls.procs.append(proc)
            cls.fast.append(address)
        proc, cls.slow = start_echo_server("--latency_ms=2000", "--name=slow")
        cls.procs.append(proc)

    @classmethod
    def tearDownClass(cls) -> None:
        for proc in cls.procs:
            proc.kill()
            proc.wait()
            proc.stdout.close()


class ClientTest(EchoServers):
    def test_blocking_call_with_options(self) -> None:
        with meshlib.Mesh(config(*self.fast)) as mesh:
            echo = mesh.client("echo")
            self.assertEqual(echo.call("Echo/Say", b"hi"), b"hi")
            self.assertEqual(echo.call("Echo/Say", b"hi", timeout=1.0, idempotent=True,
                                       metadata={"k": "v"}, hash_key=7), b"hi")
            self.assertEqual(echo.call("Echo/Say", "text"), b"text")
            self.assertEqual(echo.call("Echo/Say", bytearray(b"\x00\x01")), b"\x00\x01")
            self.assertEqual(echo.call("Echo/Say", b""), b"")
            big = os.urandom(1 << 20)
            self.assertEqual(echo.call("Echo/Say", big), big)
            stats = echo.stats()
            self.assertGreaterEqual(stats["calls"], 6)
            self.assertEqual({e["address"] for e in stats["endpoints"]}, set(self.fast))
            self.assertIn("echo", echo.describe())

    def test_calls_spread_over_endpoints(self) -> None:
        with meshlib.Mesh(config(*self.fast)) as mesh:
            echo = mesh.client("echo")
            for _ in range(200):
                echo.call("Echo/Say", b"x")
            calls = [e["calls"] for e in echo.stats()["endpoints"]]
            self.assertEqual(sum(calls), 200)
            self.assertTrue(all(c > 0 for c in calls), calls)

    def test_errors_carry_code_and_message(self) -> None:
        with self.assertRaises(meshlib.Error) as e:
            meshlib.Mesh({"services": {"echo": {"discovery": {"static": {"endpoints": [
                "127.0.0.1:1"]}}, "retry": {"max_attempts": 0}}}})
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        self.assertIn("services.echo.retry.max_attempts", e.exception.message)
        with self.assertRaises(meshlib.Error) as e:
            meshlib.Mesh("{not json")
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(meshlib.Error) as e:
            meshlib.Mesh("/nonexistent/mesh.json")
        self.assertEqual(e.exception.code, "NOT_FOUND")
        with self.assertRaises(TypeError):
            meshlib.Mesh(42)  # type: ignore[arg-type]
        with meshlib.Mesh(config(*self.fast)) as mesh:
            with self.assertRaises(meshlib.Error) as e:
                mesh.client("nope")
            self.assertEqual(e.exception.code, "NOT_FOUND")
            echo = mesh.client("echo")
            with self.assertRaises(meshlib.Error) as e:
                echo.call("Echo/Say", b"x", timeout=-1)
            self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
            with self.assertRaises(meshlib.Error) as e:
                echo.call("No/Such", b"x")
            self.assertEqual(e.exception.code, "UNIMPLEMENTED")
        # A dead endpoint.
        with meshlib.Mesh(config(f"127.0.0.1:{free_port()}", timeout="1s")) as mesh:
            with self.assertRaises(meshlib.Error) as e:
                mesh.client("echo").call("Echo/Say", b"x")
            self.assertEqual(e.exception.code, "UNAVAILABLE")
        self.assertIn("UNAVAILABLE", str(e.exception))
        with self.assertRaises(ValueError):
            meshlib.Error("NOT_A_CODE", "x")

    def test_deadlines(self) -> None:
        with meshlib.Mesh(config(self.slow, timeout="10s")) as mesh:
            echo = mesh.client("echo")
            start = time.monotonic()
            with self.assertRaises(meshlib.Error) as e:
                echo.call("Echo/Say", b"x", timeout=0.2)
            self.assertEqual(e.exception.code, "DEADLINE_EXCEEDED")
            self.assertLess(time.monotonic() - start, 1.9)

            async def run() -> None:
                with self.assertRaises(meshlib.Error) as e:
                    await echo.call_async("Echo/Say", b"x", timeout=0.2)
                self.assertEqual(e.exception.code, "DEADLINE_EXCEEDED")
            asyncio.run(run())
        # The service's own timeout applies when the call sets none.
        with meshlib.Mesh(config(self.slow, timeout="300ms")) as mesh:
            with self.assertRaises(meshlib.Error) as e:
                mesh.client("echo").call("Echo/Say", b"x")
            self.assertEqual(e.exception.code, "DEADLINE_EXCEEDED")

    def test_thousands_of_concurrent_asyncio_calls(self) -> None:
        with meshlib.Mesh(config(*self.fast, timeout="20s")) as mesh:
            echo = mesh.client("echo")

            async def run() -> list:
                return await asyncio.gather(
                    *[echo.call_async("Echo/Say", b"%d" % i) for i in range(5000)])
            replies = asyncio.run(run())
            self.assertEqual(replies, [b"%d" % i for i in range(5000)])

    def test_asyncio_errors_and_cancellation(self) -> None:
        with meshlib.Mesh(config(self.slow, timeout="10s")) as mesh:
            echo = mesh.client("echo")

            async def run() -> None:
                with self.assertRaises(meshlib.Error) as e:
                    await echo.call_async("No/Such", b"x", timeout=5)
                self.assertEqual(e.exception.code, "UNIMPLEMENTED")
                # Cancelling the awaiting task cancels the call.
                task = asyncio.ensure_future(echo.call_async("Echo/Say", b"x"))
                await asyncio.sleep(0.1)
                task.cancel()
                start = time.monotonic()
                with self.assertRaises(asyncio.CancelledError):
                    await task
                self.assertLess(time.monotonic() - start, 1.0)
            asyncio.run(run())

    def test_calls_from_several_threads(self) -> None:
        with meshlib.Mesh(config(*self.fast)) as mesh:
            echo = mesh.client("echo")
            errors = []

            def worker(k: int) -> None:
                try:
                    for i in range(300):
                        payload = b"%d-%d" % (k, i)
                        if echo.call("Echo/Say", payload) != payload:
                            errors.append(payload)
                except Exception as e:  # reported below
                    errors.append(e)
            threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])

    def test_closing_a_mesh_with_calls_in_flight(self) -> None:
        mesh = meshlib.Mesh(config(self.slow, timeout="10s"))
        echo = mesh.client("echo")
        outcomes = []

        def blocking() -> None:
            try:
                outcomes.append(echo.call("Echo/Say", b"x"))
            except meshlib.Error as e:
                outcomes.append(e.code)
        threads = [threading.Thread(target=blocking) for _ in range(4)]
        for t in threads:
            t.start()

        async def run() -> list:
            calls = [asyncio.ensure_future(echo.call_async("Echo/Say", b"x")) for _ in range(50)]
            await asyncio.sleep(0.3)
            start = time.monotonic()
            mesh.close()
            results = await asyncio.gather(*calls, return_exceptions=True)
            self.assertLess(time.monotonic() - start, 1.5)
            return results
        results = asyncio.run(run())
        for t in threads:
            t.join(timeout=5)
            self.assertFalse(t.is_alive())
        self.assertEqual([r.code for r in results], ["CANCELLED"] * 50)
        self.assertEqual(outcomes, ["CANCELLED"] * 4)
        # After close: clear errors, no crash; closing twice is fine.
        with self.assertRaises(meshlib.Error) as e:
            echo.call("Echo/Say", b"x")
        self.assertIn(e.exception.code, ("CANCELLED", "FAILED_PRECONDITION"))
        with self.assertRaises(meshlib.Error) as e:
            mesh.client("echo")
        self.assertEqual(e.exception.code, "FAILED_PRECONDITION")
        mesh.close()
        self.assertTrue(mesh.closed)
        echo.close()
        echo.close()
        with self.assertRaises(meshlib.Error) as e:
            echo.call("Echo/Say", b"x")
        self.assertEqual(e.exception.code, "FAILED_PRECONDITION")

    def test_many_meshes_memory_stays_flat(self) -> None:
        def cycle(n: int) -> None:
            for _ in range(n):
                with meshlib.Mesh(config(*self.fast)) as mesh:
                    echo = mesh.client("echo")
                    echo.call("Echo/Say", b"x")

                    async def one() -> bytes:
                        return await echo.call_async("Echo/Say", b"y")
                    asyncio.run(one())
                    echo.close()
            gc.collect()
        cycle(50)  # warm-up: allocator pools, thread stacks, caches
        before, fds = rss_kb(), len(os.listdir("/proc/self/fd"))
        cycle(300)
        grown = rss_kb() - before
        print(f"\n  RSS after 50 meshes {before} KB; 300 more grew it by {grown} KB",
              file=sys.stderr)
        # Each mesh had connections, threads, an asyncio loop and its
        # completion queue: a leak of even 5 KB per mesh would show as 1.5 MB.
        self.assertLess(grown, 1536, f"RSS grew {grown} KB over 300 meshes")
        self.assertLessEqual(len(os.listdir("/proc/self/fd")), fds + 2)  # no descriptor kept

    def test_mesh_from_a_file(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "mesh.json")
            with open(path, "w") as f:
                json.dump(config(self.fast[0]), f)
            with meshlib.Mesh(path) as mesh:
                self.assertEqual(mesh.client("echo").call("Echo/Say", b"f"), b"f")

    def test_ctrl_c_interrupts_a_blocking_call(self) -> None:
        script = (
            "import signal, sys, time, meshlib\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            f"m = meshlib.Mesh({config(self.slow, timeout='30s')!r})\n"
            "e = m.client('echo')\n"
            "print('calling', flush=True)\n"
            "t = time.monotonic()\n"
            "try:\n"
            "    e.call('Echo/Say', b'x')\n"
            "    print('returned')\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted %.2f' % (time.monotonic() - t))\n"
            "print(m.client('echo').call('Echo/Say', b'again', timeout=5).decode())\n")
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True, env=os.environ)
        self.assertEqual(proc.stdout.readline().strip(), "calling")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        lines = out.split()
        self.assertEqual(lines[0], "interrupted", out)
        self.assertLess(float(lines[1]), 1.9, out)  # the slow server answers at 2 s
        self.assertEqual(lines[2], "again", out)    # the process goes on calling


class ServerTest(EchoServers):
    def test_python_server_handlers(self) -> None:
        server = meshlib.Server(port=0, threads=2)
        server.handle("Echo/Say", lambda request, metadata: request)
        server.handle("Meta/Get", lambda request, metadata: metadata.get("x-user", "?"))

        def boom(request: bytes, metadata: dict) -> bytes:
            raise ValueError("handler bug")
        server.handle("Boom/Now", boom)

        def denied(request: bytes, metadata: dict) -> bytes:
            raise meshlib.Error("PERMISSION_DENIED", "not you")
        server.handle("Deny/Now", denied)
        server.handle("Wrong/Type", lambda request, metadata: 42)
        server.handle("Empty/Say", lambda request, metadata: None)
        with self.assertRaises(meshlib.Error) as e:
            server.handle("Echo/Say", lambda r, m: r)
        self.assertEqual(e.exception.code, "ALREADY_EXISTS")
        address = server.start()
        self.assertTrue(address.startswith("127.0.0.1:"))
        with self.assertRaises(meshlib.Error) as e:
            server.handle("Late/Say", lambda r, m: r)
        self.assertEqual(e.exception.code, "FAILED_PRECONDITION")
        try:
            with meshlib.Mesh(config(address)) as mesh:
                echo = mesh.client("echo")
                self.assertEqual(echo.call("Echo/Say", b"py"), b"py")
                self.assertEqual(echo.call("Meta/Get", b"", metadata={"x-user": "ada"}), b"ada")
                self.assertEqual(echo.call("Empty/Say", b"x"), b"")
                for method, code, text in (("Boom/Now", "INTERNAL", "ValueError: handler bug"),
                                           ("Deny/Now", "PERMISSION_DENIED", "not you"),
                                           ("Wrong/Type", "INTERNAL", "TypeError"),
                                           ("No/Such", "UNIMPLEMENTED", "No/Such")):
                    with self.assertRaises(meshlib.Error) as e:
                        echo.call(method, b"x")
                    self.assertEqual(e.exception.code, code, method)
                    self.assertIn(text, e.exception.message)
                # The server keeps serving after its handlers failed.
                self.assertEqual(echo.call("Echo/Say", b"still"), b"still")

                async def many() -> list:
                    return await asyncio.gather(
                        *[echo.call_async("Echo/Say", b"%d" % i) for i in range(1000)])
                self.assertEqual(asyncio.run(many()), [b"%d" % i for i in range(1000)])
                self.assertGreaterEqual(server.stats()["calls"], 1000)
        finally:
            server.stop(drain=1.0)
            server.stop()
            server.close()
            server.close()

    def test_stop_drains_calls_in_flight(self) -> None:
        started = threading.Event()

        def slow(request: bytes, metadata: dict) -> bytes:
            started.set()
            time.sleep(0.5)
            return b"done"
        server = meshlib.Server(port=0)
        server.handle("Slow/Say", slow)
        address = server.start()
        with meshlib.Mesh(config(address, timeout="5s")) as mesh:
            echo = mesh.client("echo")
            result = []
            t = threading.Thread(target=lambda: result.append(echo.call("Slow/Say", b"x")))
            t.start()
            self.assertTrue(started.wait(5))
            server.stop(drain=5.0)
            t.join(5)
            self.assertEqual(result, [b"done"])
            with self.assertRaises(meshlib.Error) as e:
                echo.call("Slow/Say", b"x", timeout=1)
            self.assertEqual(e.exception.code, "UNAVAILABLE")
        server.close()

    def test_a_handler_calls_through_the_mesh(self) -> None:
        # A Python service in front of a C++ one: the handler's blocking
        # call runs on a handler thread.
        with meshlib.Mesh(config(*self.fast)) as mesh:
            backend = mesh.client("echo")
            front = meshlib.Server(port=0)
            front.handle("Front/Say", lambda request, md: b"front:" + backend.call(
                "Echo/Say", request))
            address = front.start()
            try:
                with meshlib.Mesh(config(address)) as outer:
                    self.assertEqual(outer.client("echo").call("Front/Say", b"z"), b"front:z")
            finally:
                front.close()

    def test_python_server_called_from_meshcall(self) -> None:
        server = meshlib.Server(port=0)
        server.handle("Echo/Say", lambda request, metadata: request)
        address = server.start()
        try:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "mesh.json")
                with open(path, "w") as f:
                    json.dump(config(address), f)
                out = subprocess.run(
                    [MESHCALL, f"--config={path}", "--service=echo", "--method=Echo/Say",
                     "--data=from-cpp", "--requests=500", "--concurrency=8", "--json"],
                    capture_output=True, text=True, timeout=60)
                self.assertEqual(out.returncode, 0, out.stderr)
                report = json.loads(out.stdout)
                self.assertEqual(report["ok"], 500, report)
                self.assertEqual(report["by_endpoint"], {address: 500})
        finally:
            server.stop(drain=1.0)
            server.close()

    def test_python_server_registers_in_etcd(self) -> None:
        client_port, peer_port = free_port(), free_port()
        with tempfile.TemporaryDirectory() as d:
            etcd = subprocess.Popen(
                [ETCD, "--name=py", f"--data-dir={d}/data",
                 f"--listen-client-urls=http://127.0.0.1:{client_port}",
                 f"--advertise-client-urls=http://127.0.0.1:{client_port}",
                 f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                 f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                 f"--initial-cluster=py=http://127.0.0.1:{peer_port}",
                 "--logger=zap", "--log-outputs=" + os.path.join(d, "etcd.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                endpoint = f"127.0.0.1:{client_port}"
                prefix = "/meshlib/services/pyecho/"
                server = meshlib.Server(port=0, etcd=endpoint, etcd_prefix=prefix,
                                        etcd_ttl=5, zone="z1", name="py-1")
                server.handle("Echo/Say", lambda request, metadata: b"py:" + request)
                address = server.start()
                cfg = {"services": {"echo": {
                    "discovery": {"etcd": {"endpoints": [endpoint], "prefix": prefix}},
                    "timeout": "2s"}}}
                with meshlib.Mesh(cfg) as mesh:
                    echo = mesh.client("echo")
                    reply, last = None, None
                    deadline = time.monotonic() + 20  # etcd starting, then registering
                    while time.monotonic() < deadline:
                        try:
                            reply = echo.call("Echo/Say", b"x")
                            break
                        except meshlib.Error as e:
                            last = e
                            time.sleep(0.1)
                    self.assertEqual(reply, b"py:x", f"last error: {last}; etcd log: "
                                     + open(os.path.join(d, "etcd.log")).read()[-2000:])
                    self.assertEqual([e["address"] for e in echo.stats()["endpoints"]],
                                     [address])
                    # Stopping leaves etcd: the endpoint disappears.
                    server.stop(drain=1.0)
                    deadline = time.monotonic() + 10
                    while echo.stats()["endpoints"] and time.monotonic() < deadline:
                        time.sleep(0.1)
                    self.assertEqual(echo.stats()["endpoints"], [])
                server.close()
            finally:
                etcd.kill()
                etcd.wait()

    def test_server_as_a_context_manager(self) -> None:
        with meshlib.Server(port=0) as server:  # starts it
            server_address = server.address
            self.assertIsNotNone(server_address)
        with meshlib.Mesh(config(server_address, timeout="1s")) as mesh:
            with self.assertRaises(meshlib.Error) as e:  # closed with the block
                mesh.client("echo").call("Echo/Say", b"x")
            self.assertEqual(e.exception.code, "UNAVAILABLE")

    def test_bad_server_arguments(self) -> None:
        for kwargs in ({"threads": -1}, {"etcd": "127.0.0.1:2379"},
                       {"etcd": "nonsense", "etcd_prefix": "/p/"},
                       {"etcd": "127.0.0.1:2379", "etcd_prefix": "/p/", "etcd_ttl": 0.1}):
            with self.assertRaises(meshlib.Error, msg=str(kwargs)) as e:
                meshlib.Server(**kwargs)
            self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(TypeError):
            meshlib.Server().handle("A/B", "not callable")  # type: ignore[arg-type]
        busy = meshlib.Server(port=0)
        address = busy.start()
        try:
            port = int(address.rsplit(":", 1)[1])
            with self.assertRaises(meshlib.Error):
                meshlib.Server(port=port).start()  # taken
        finally:
            busy.close()


if __name__ == "__main__":
    unittest.main()
