"""gRPC clients calling a meshlib server: Debian's python3-grpcio (generic
calls, raw bytes, no protoc; plaintext and mutual TLS) and nghttp2's h2load
against echo_server, which answers gRPC on the same port as meshlib's
protocol. Run by
grpcio_client_test.sh with the binaries Bazel built.
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

ECHO_SERVER = os.environ["ECHO_SERVER"]
MESHCALL = os.environ["MESHCALL"]


class EchoServer:
    def __init__(self, *flags: str):
        self.proc = subprocess.Popen([ECHO_SERVER, "--port=0", "--io_threads=1", *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        self.port = 0
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"listening on \S*:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
            if not line and self.proc.poll() is not None:
                break
        if not self.port:
            raise RuntimeError("echo_server did not start: " + self.proc.stderr.read())
        self.address = "127.0.0.1:%d" % self.port

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def say(channel: grpc.Channel, method: str = "/Echo/Say"):
    return channel.unary_unary(method)  # bytes in, bytes out


class GrpcioClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = EchoServer("--name=echo-grpc")
        cls.slow = EchoServer("--latency_ms=2000")
        cls.failing = EchoServer("--error_rate=1")
        opts = [("grpc.max_receive_message_length", 8 << 20),
                ("grpc.max_send_message_length", 8 << 20)]
        cls.channel = grpc.insecure_channel(cls.server.address, options=opts)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        for s in (cls.server, cls.slow, cls.failing):
            s.stop()

    def test_echo_of_random_sizes_up_to_3_mib(self):
        rng = random.Random(15)
        sizes = [0, 1, 5, 16383, 16384, 65535, 65536, 1 << 20, 3 << 20]
        sizes += [rng.randrange(0, 3 << 20) for _ in range(12)]
        for size in sizes:
            payload = rng.randbytes(size)
            reply, call = say(self.channel).with_call(payload, timeout=20)
            self.assertEqual(len(reply), size)
            self.assertEqual(reply, payload, "size %d" % size)
            self.assertEqual(call.code(), grpc.StatusCode.OK)
            # echo_server's response metadata arrives as gRPC metadata.
            md = dict(call.initial_metadata())
            self.assertEqual(md.get("server"), "echo-grpc")

    def test_unknown_method_is_unimplemented(self):
        for method in ("/Echo/Nope", "/Nope/Say"):
            with self.assertRaises(grpc.RpcError) as e:
                say(self.channel, method)(b"x", timeout=5)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED, method)
            self.assertIn(method[1:], e.exception.details())

    def test_deadline_exceeded_on_time(self):
        with grpc.insecure_channel(self.slow.address) as ch:
            start = time.monotonic()
            with self.assertRaises(grpc.RpcError) as e:
                say(ch)(b"late", timeout=0.3)
            took = time.monotonic() - start
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertGreaterEqual(took, 0.28)
        self.assertLess(took, 1.5)

    def test_server_status_and_message_reach_the_client(self):
        with grpc.insecure_channel(self.failing.address) as ch:
            with self.assertRaises(grpc.RpcError) as e:
                say(ch)(b"x", timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("injected error", e.exception.details())

    def test_300_concurrent_calls(self):
        futures = []
        for i in range(300):
            payload = ("call-%d-" % i).encode() * (i % 50 + 1)
            futures.append((payload, say(self.channel).future(payload, timeout=30)))
        for payload, f in futures:
            self.assertEqual(f.result(), payload)

    def test_cancel_ends_the_call(self):
        with grpc.insecure_channel(self.slow.address) as ch:
            f = say(ch).future(b"cancel me", timeout=10)
            time.sleep(0.2)
            self.assertTrue(f.cancel())
            with self.assertRaises(grpc.FutureCancelledError):
                f.result()
            # The connection still serves.
            with self.assertRaises(grpc.RpcError) as e:
                say(ch)(b"x", timeout=0.1)
            self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_standard_health_service(self):
        reply = say(self.channel, "/grpc.health.v1.Health/Check")(b"", timeout=5)
        self.assertEqual(reply, b"\x08\x01")  # HealthCheckResponse{status: SERVING}

    def test_metadata_with_binary_values_reaches_the_handler(self):
        # echo_server ignores request metadata, but the call must succeed
        # with binary and text metadata on it.
        reply = say(self.channel)(b"md", timeout=5,
                                  metadata=[("x-user", "alice"), ("blob-bin", b"\x00\xff")])
        self.assertEqual(reply, b"md")

    def test_meshlib_and_grpc_clients_share_the_port(self):
        cfg = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        cfg.write('{"services": {"echo": {"discovery": {"static": {"endpoints": ["%s"]}}}}}'
                  % self.server.address)
        cfg.close()
        errors = []

        def grpc_load():
            try:
                for i in range(200):
                    self.assertEqual(say(self.channel)(b"g%d" % i, timeout=5), b"g%d" % i)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=grpc_load)
        t.start()
        out = subprocess.run([MESHCALL, "--config=" + cfg.name, "--service=echo",
                              "--method=Echo/Say", "--data=m", "--requests=500",
                              "--concurrency=8", "--json"],
                             capture_output=True, text=True, timeout=60)
        t.join()
        os.unlink(cfg.name)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn('"ok":500', out.stdout.replace(" ", ""))
        self.assertEqual(errors, [])

    def test_h2load(self):
        """nghttp2's load generator: 4 connections, 32 streams each."""
        body = tempfile.NamedTemporaryFile("wb", delete=False)
        payload = b"h2load says hi"
        body.write(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        body.close()
        out = subprocess.run(["/usr/bin/h2load", "-n", "5000", "-c", "4", "-m", "32",
                              "-H", "content-type: application/grpc", "-H", "te: trailers",
                              "-d", body.name, "http://%s/Echo/Say" % self.server.address],
                             capture_output=True, text=True, timeout=120)
        os.unlink(body.name)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored", out.stdout)
        self.assertIsNotNone(m, out.stdout)
        total, done, ok, failed, errored = map(int, m.groups())
        self.assertEqual((total, done, ok, failed, errored), (5000, 5000, 5000, 0, 0),
                         out.stdout)
        self.assertIn("status codes: 5000 2xx", out.stdout)


def make_certs(directory: str) -> None:
    """A CA and two ECDSA P-256 leaves (server, client) that are X509-SVIDs
    of trust domain grpc.test, made with the openssl CLI."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=grpc-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for leaf in ("server", "client"):
        with open(os.path.join(directory, leaf + ".ext"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    "subjectAltName=URI:spiffe://grpc.test/%s,DNS:localhost,IP:127.0.0.1\n"
                    % leaf)
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", leaf + ".key", "-out", leaf + ".csr", "-subj", "/CN=" + leaf)
        run("x509", "-req", "-in", leaf + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", leaf + ".crt", "-days", "2", "-extfile", leaf + ".ext")


class GrpcioTlsClientTest(unittest.TestCase):
    """grpcio's own TLS (BoringSSL inside grpcio) against echo_server's
    mutual TLS: ALPN h2 picks gRPC on the TLS port."""

    def test_mutual_tls_with_alpn_h2(self):
        with tempfile.TemporaryDirectory() as d:
            make_certs(d)
            p = lambda name: os.path.join(d, name)  # noqa: E731
            server = EchoServer("--tls_cert=" + p("server.crt"), "--tls_key=" + p("server.key"),
                                "--tls_ca=" + p("ca.crt"),
                                "--tls_allow=spiffe://grpc.test/client")
            try:
                def read(name):
                    with open(p(name), "rb") as f:
                        return f.read()
                creds = grpc.ssl_channel_credentials(read("ca.crt"), read("client.key"),
                                                     read("client.crt"))
                with grpc.secure_channel(server.address, creds) as ch:
                    self.assertEqual(say(ch)(b"over tls", timeout=10), b"over tls")
                    with self.assertRaises(grpc.RpcError) as e:
                        say(ch, "/Echo/Nope")(b"x", timeout=5)
                    self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
                # Without a client certificate the server refuses the handshake.
                anon = grpc.ssl_channel_credentials(read("ca.crt"))
                with grpc.secure_channel(server.address, anon) as ch:
                    with self.assertRaises(grpc.RpcError) as e:
                        say(ch)(b"x", timeout=5)
                    self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            finally:
                server.stop()


if __name__ == "__main__":
    unittest.main()
