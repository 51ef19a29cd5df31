"""Golden metrics against real parts: three echo_servers (one failing 20%
of its calls), meshcall driving load through the mesh, promtool checking
every exposition, and a real Prometheus server scraping meshcall and the
servers. Run by metrics_e2e_test.sh with the binaries Bazel built.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

ECHO_SERVER = os.environ["ECHO_SERVER"]
MESHCALL = os.environ["MESHCALL"]
PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def samples(text: str) -> list:
    """(name, {labels}, value) for every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = dict(LABEL.findall(m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def total(text: str, name: str, **match) -> float:
    return sum(v for n, l, v in samples(text)
               if n == name and all(l.get(k) == v2 for k, v2 in match.items()))


class MetricsEndToEnd(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.procs = []

    def tearDown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()

    def start_echo(self, *flags: str) -> tuple:
        p = subprocess.Popen([ECHO_SERVER, "--port=0", "--admin_port=0", "--io_threads=1",
                              *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
        self.procs.append(p)
        listening = p.stdout.readline().split()[-1]
        admin = p.stdout.readline().split()[-1]
        return listening, admin

    def promtool_accepts(self, text: str, what: str) -> None:
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        # promtool exits 1 for lint findings too; errors are "error while linting".
        self.assertNotIn("error while linting", r.stderr + r.stdout, what)
        self.assertEqual(r.returncode, 0, f"{what}: promtool says:\n{r.stdout}{r.stderr}")

    def histograms_consistent(self, text: str) -> int:
        """Every histogram's +Inf bucket equals its _count; returns how many."""
        s = samples(text)
        counts = {(n[:-len("_count")], tuple(sorted(l.items()))): v
                  for n, l, v in s if n.endswith("_count")}
        checked = 0
        for n, l, v in s:
            if n.endswith("_bucket") and l.get("le") == "+Inf":
                key = (n[:-len("_bucket")], tuple(sorted((k, x) for k, x in l.items() if k != "le")))
                self.assertEqual(v, counts[key], f"{n} {l}: +Inf {v} != count {counts[key]}")
                checked += 1
        return checked

    def test_load_run_scraped_by_prometheus(self) -> None:
        servers = [self.start_echo("--name=a"), self.start_echo("--name=b"),
                   self.start_echo("--name=flaky", "--error_rate=0.2")]
        config = os.path.join(self.dir, "mesh.json")
        with open(config, "w") as f:
            json.dump({"services": {"echo": {
                "discovery": {"static": {"endpoints": [s[0] for s in servers]}},
                "timeout": "2s",
                "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE"]}}}}, f)

        meshcall_admin = free_port()
        prom_port = free_port()
        prom_config = os.path.join(self.dir, "prometheus.yml")
        targets = [f"127.0.0.1:{meshcall_admin}"] + [s[1] for s in servers]
        with open(prom_config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: meshlib\n    static_configs:\n"
                    f"      - targets: {json.dumps(targets)}\n")
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={prom_config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(prometheus)

        meshcall = subprocess.Popen(
            [MESHCALL, f"--config={config}", "--service=echo", "--method=Echo/Say",
             "--data=hello", "--duration=6s", "--concurrency=4", "--idempotent", "--json",
             f"--admin_port={meshcall_admin}", "--admin_linger=6s"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(meshcall)
        self.assertIn("admin on", meshcall.stderr.readline())
        time.sleep(2)  # under load
        during = fetch(f"http://127.0.0.1:{meshcall_admin}/metrics")
        self.promtool_accepts(during, "meshcall under load")
        self.assertGreater(self.histograms_consistent(during), 0)

        # The load is over once meshcall prints its report; it lingers.
        report = json.loads(meshcall.stdout.readline())
        self.assertGreater(report["ok"], 100, report)
        after = fetch(f"http://127.0.0.1:{meshcall_admin}/metrics")
        self.promtool_accepts(after, "meshcall after the load")
        self.histograms_consistent(after)
        requests = total(after, "meshlib_client_requests_total", service="echo")
        self.assertEqual(requests, report["requests"])
        self.assertEqual(total(after, "meshlib_client_requests_total", code="OK"), report["ok"])

        # The client's attempts per endpoint against what each server counted.
        for listening, admin in servers:
            served = fetch(f"http://{admin}/metrics")
            self.promtool_accepts(served, f"echo_server {listening}")
            self.histograms_consistent(served)
            server_count = total(served, "meshlib_server_requests_total", method="Echo/Say")
            client_count = total(after, "meshlib_client_attempts_total", endpoint=listening)
            self.assertGreater(server_count, 0)
            self.assertLessEqual(abs(client_count - server_count), 0.05 * server_count,
                                 f"{listening}: client {client_count}, server {server_count}")
        flaky = servers[2][0]
        self.assertGreater(total(after, "meshlib_client_attempts_total", endpoint=flaky,
                                 code="UNAVAILABLE"), 0)

        # A real Prometheus scraped meshcall and answers a query.
        query = urllib.parse.quote('sum(meshlib_client_requests_total{service="echo"})')
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = json.loads(fetch(f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}"))
                if answer["status"] == "success" and answer["data"]["result"]:
                    break
            except OSError:
                pass  # still starting
            time.sleep(0.5)
        self.assertIsNotNone(answer, "Prometheus never answered")
        self.assertEqual(answer["status"], "success", answer)
        self.assertTrue(answer["data"]["result"], f"no series scraped: {answer}")
        self.assertGreater(float(answer["data"]["result"][0]["value"][1]), 0)
        meshcall.wait(timeout=30)
        self.assertEqual(meshcall.returncode, 0)

    def test_meshcall_prints_the_trace_id(self) -> None:
        listening, _ = self.start_echo()
        config = os.path.join(self.dir, "one.json")
        with open(config, "w") as f:
            json.dump({"services": {"echo": {
                "discovery": {"static": {"endpoints": [listening]}}}}}, f)
        out = subprocess.run([MESHCALL, f"--config={config}", "--service=echo",
                              "--method=Echo/Say", "--data=hi", "--trace"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.splitlines()
        self.assertTrue(lines[0].startswith("OK from "), out.stdout)
        self.assertRegex(lines[1], r"^trace [0-9a-f]{32}$")

    def test_bad_requests_to_the_admin_port(self) -> None:
        _, admin = self.start_echo()
        host, port = admin.rsplit(":", 1)
        for request, status in ((b"GARBAGE\r\n\r\n", b"400"),
                                (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
                                (b"GET /nope HTTP/1.1\r\n\r\n", b"404"),
                                (b"\x16\x03\x01\x00\x05hello\r\n\r\n", b"400")):
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(request)
                self.assertIn(status, s.recv(100).split(b"\r\n")[0])
        # Still serving.
        self.assertIn("meshlib_server_requests_total", fetch(f"http://{admin}/metrics"))
        json.loads(fetch(f"http://{admin}/metrics.json"))


if __name__ == "__main__":
    unittest.main()
