"""A small driver for headless Chromium over the DevTools protocol: enough
to open a page, record every network request it makes and evaluate
script in it. Uses Debian's chromium and python3-websocket (installed by
tools/setup.sh).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import websocket  # python3-websocket

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Browser:
    """One headless Chromium with one tab. Use as a context manager."""

    def __init__(self, timeout: float = 30.0):
        self._timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="meshlib-chromium-")
        self._proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        url = None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                url = m.group(1)
                break
        if url is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint: " + "".join(seen))
        # Keep draining stderr so Chromium never blocks on a full pipe.
        threading.Thread(target=self._proc.stderr.read, daemon=True).start()
        self._ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self._next_id = 0
        self.requests: list[str] = []  # every URL the tab asked for
        target = self._command("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._command("Target.attachToTarget",
                                      {"targetId": target, "flatten": True})["sessionId"]
        self.command("Network.enable")
        self.command("Page.enable")
        self.command("Runtime.enable")

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            if getattr(self, "_ws", None) is not None:
                self._ws.close()
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=10)
            shutil.rmtree(self._profile, ignore_errors=True)

    def _command(self, method: str, params: dict | None = None,
                 session: str | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)
        raise TimeoutError(f"{method}: no reply in {self._timeout}s")

    def _event(self, msg: dict) -> None:
        if msg.get("method") == "Network.requestWillBeSent":
            self.requests.append(msg["params"]["request"]["url"])

    def command(self, method: str, params: dict | None = None) -> dict:
        """A command to the tab."""
        return self._command(method, params, self._session)

    def navigate(self, url: str) -> None:
        self.command("Page.navigate", {"url": url})

    def evaluate(self, expression: str):
        """The value of a script expression in the page (JSON-able)."""
        r = self.command("Runtime.evaluate",
                         {"expression": expression, "returnByValue": True,
                          "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        """Evaluates until the value is truthy; returns it. An expression
        that throws (the page is still loading) counts as not yet."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as e:
                value = e
            if value and not isinstance(value, RuntimeError):
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} stayed {value!r} for {timeout}s")
