"""The live page in a real browser: the demo (its fleet of five
echo_servers, one slow, one flaky, one killed and restarted) with
--admin_port, and headless Chromium on the URL it prints. The page must
show every endpoint of the service, its numbers must move as calls flow,
and the browser must load nothing but the page and its data from the
demo's own admin port. Run by live_page_test.sh with the binaries Bazel
built.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402

DEMO = os.environ["DEMO"]
ECHO_SERVER = os.environ["ECHO_SERVER"]


def read_until(proc: subprocess.Popen, pattern: str, timeout: float, seen: list) -> re.Match:
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = rx.search(line)
        if m:
            return m
    raise AssertionError(f"no line matching {pattern!r}; the demo printed:\n" + "".join(seen))


class LivePageTest(unittest.TestCase):
    def setUp(self):
        self.demo = subprocess.Popen(
            [DEMO, f"--echo_server={ECHO_SERVER}", "--admin_port=0", "--plain",
             "--duration=12s", "--rate=200"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(self._stop_demo)
        self.out: list[str] = []
        m = read_until(self.demo, r"live page: (http://127\.0\.0\.1:\d+/)", 30, self.out)
        self.url = m.group(1)
        # The fleet's addresses, as the demo lists them: "echo-1  127.0.0.1:PORT  pid N".
        read_until(self.demo, r"^\s+echo-\d+\s", 30, self.out)
        while len([l for l in self.out if re.match(r"^\s+echo-\d+\s", l)]) < 5:
            self.out.append(self.demo.stdout.readline())
        self.endpoints = sorted(re.search(r"(127\.0\.0\.1:\d+)", l).group(1)
                                for l in self.out if re.match(r"^\s+echo-\d+\s", l))
        self.assertEqual(len(self.endpoints), 5, "".join(self.out))

    def _stop_demo(self):
        if self.demo.poll() is None:
            self.demo.terminate()
        try:
            self.demo.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.demo.kill()
            self.demo.communicate()

    def test_page_shows_every_endpoint_and_numbers_move(self):
        # Served as one self-contained document under a policy that forbids
        # anything from elsewhere.
        with urllib.request.urlopen(self.url, timeout=10) as r:
            html = r.read().decode()
            policy = r.headers["Content-Security-Policy"]
        self.assertIn("default-src 'none'", policy)
        self.assertIn("connect-src 'self'", policy)
        for outside in ("src=", "href=", "@import", "url(", "https:"):
            self.assertNotIn(outside, html)

        with cdp.Browser() as browser:
            browser.navigate(self.url)
            browser.wait_for("Number(document.body.dataset.updates) >= 1")
            # Every endpoint of the service, with its state.
            rows = browser.wait_for(
                """(() => {
                     const s = document.querySelector('section[data-service="echo"]');
                     if (!s) return null;
                     const rows = [...s.querySelectorAll('tr.endpoint')].map(
                         r => [r.dataset.endpoint, r.dataset.state]);
                     return rows.length >= 5 ? rows : null;
                   })()""")
            self.assertEqual(sorted(r[0] for r in rows), self.endpoints, rows)
            for address, state in rows:
                self.assertIn(state, ("healthy", "ejected", "unreachable"), (address, state))

            # Its numbers change as calls flow: the calls so far, and the
            # plots grow.
            calls = lambda: int(browser.evaluate(  # noqa: E731
                'document.querySelector(\'section[data-service="echo"] .calls\').textContent'))
            first = calls()
            updates = int(browser.evaluate("Number(document.body.dataset.updates)"))
            browser.wait_for(f"Number(document.body.dataset.updates) >= {updates + 2}")
            second = calls()
            self.assertGreater(second, first)
            text = browser.evaluate("document.body.innerText")
            self.assertRegex(text, r"calls/s")
            self.assertRegex(text, r"\d+\.\d+%")  # a success rate
            self.assertRegex(text, r"\d+(\.\d+)? (µs|ms|s)")  # a latency
            lines = browser.evaluate(
                'document.querySelectorAll(\'section[data-service="echo"] svg.spark polyline\').length')
            self.assertGreater(lines, 0)
            page_errors = browser.evaluate("document.getElementById('status').className")
            self.assertEqual(page_errors, "status")

            # Nothing from outside the process: every request the tab made
            # went to the demo's admin port.
            self.assertTrue(browser.requests)
            for url in browser.requests:
                self.assertTrue(url.startswith(self.url), url)
            self.assertIn(self.url + "live.json", browser.requests)

    def test_page_says_so_when_the_process_is_gone(self):
        with cdp.Browser() as browser:
            browser.navigate(self.url)
            browser.wait_for("Number(document.body.dataset.updates) >= 1")
            self._stop_demo()
            status = browser.wait_for(
                "(() => { const s = document.getElementById('status');"
                " return s.className.includes('error') ? s.textContent : null; })()")
            self.assertIn("cannot read live.json", status)


if __name__ == "__main__":
    unittest.main()
