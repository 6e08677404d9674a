"""A tiny W3C WebDriver client (urllib only) for headless Chromium via chromedriver.

Just what the status page test needs: start chromedriver, open a session,
navigate, find elements by CSS selector, click, read text, run a script, take
a screenshot, and stop everything by PID.  The W3C protocol is plain JSON
over HTTP (https://www.w3.org/TR/webdriver2/), so a client needs no
dependency; selenium would add one for a few calls.

Chromium is started by chromedriver with the flags a sandbox-less container
needs (``--no-sandbox``) and those that keep it from talking to the network
on its own (component updates, sync, background networking).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")

# The W3C key under which an element reference travels.
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
)


class WebDriverError(Exception):
    """An error answer from chromedriver (``error`` and ``message`` of the W3C body)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Element:
    """A reference to an element of the current page."""

    def __init__(self, session: Session, element_id: str) -> None:
        self.session = session
        self.id = element_id

    def _path(self, suffix: str) -> str:
        return f"/element/{self.id}/{suffix}"

    @property
    def text(self) -> str:
        return str(self.session.command("GET", self._path("text")))

    def click(self) -> None:
        self.session.command("POST", self._path("click"), {})

    def send_keys(self, text: str) -> None:
        self.session.command("POST", self._path("value"), {"text": text})

    def attribute(self, name: str) -> str | None:
        value = self.session.command("GET", self._path(f"attribute/{name}"))
        return None if value is None else str(value)

    def property(self, name: str) -> Any:
        return self.session.command("GET", self._path(f"property/{name}"))

    def find(self, css: str) -> Element:
        found = self.session.command(
            "POST", self._path("element"), {"using": "css selector", "value": css}
        )
        return Element(self.session, found[ELEMENT_KEY])

    def find_all(self, css: str) -> list[Element]:
        found = self.session.command(
            "POST", self._path("elements"), {"using": "css selector", "value": css}
        )
        return [Element(self.session, item[ELEMENT_KEY]) for item in found]


class Session:
    """One browser session on a running chromedriver."""

    def __init__(self, base: str, session_id: str, timeout: float) -> None:
        self.base = base
        self.id = session_id
        self.timeout = timeout

    def command(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return call(self.base, method, f"/session/{self.id}{path}", body, self.timeout)

    def get(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def find(self, css: str) -> Element:
        found = self.command("POST", "/element", {"using": "css selector", "value": css})
        return Element(self, found[ELEMENT_KEY])

    def find_all(self, css: str) -> list[Element]:
        found = self.command("POST", "/elements", {"using": "css selector", "value": css})
        return [Element(self, item[ELEMENT_KEY]) for item in found]

    def execute(self, script: str, *args: Any) -> Any:
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot_png(self) -> bytes:
        return base64.b64decode(self.command("GET", "/screenshot"))

    def wait(
        self, predicate: Callable[[], _T], timeout: float = 10.0, what: str = "condition"
    ) -> _T:
        """Poll ``predicate`` (WebDriver 'no such element' counts as not yet) until truthy."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
                last = value
            except WebDriverError as exc:
                if exc.error not in ("no such element", "stale element reference"):
                    raise
                last = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
            time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(OSError, WebDriverError):
            call(self.base, "DELETE", f"/session/{self.id}", None, self.timeout)


def call(base: str, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
    """One WebDriver command; returns the ``value`` of the answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json; charset=utf-8")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            value = json.loads(exc.read()).get("value", {})
        except ValueError:
            value = {}
        raise WebDriverError(
            str(value.get("error", exc.code)), str(value.get("message", ""))[:500]
        ) from None
    return payload.get("value")


class ChromeDriver:
    """A chromedriver process (its own process group, stopped by PID)."""

    def __init__(self, chromedriver: str, chromium: str, workdir: Path) -> None:
        self.chromedriver = chromedriver
        self.chromium = chromium
        self.workdir = workdir
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "chromedriver.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sessions: list[Session] = []

    def start(self, timeout: float = 20.0) -> ChromeDriver:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [self.chromedriver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = call(self.base, "GET", "/status", None, 2.0)
                if status and status.get("ready"):
                    return self
            except (OSError, WebDriverError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"chromedriver did not start: {self.log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.1)

    def session(self, timeout: float = 30.0) -> Session:
        profile = self.workdir / f"profile-{len(self.sessions)}"
        profile.mkdir()
        capabilities = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": self.chromium,
                        "args": [*CHROMIUM_ARGS, f"--user-data-dir={profile}"],
                    },
                    "timeouts": {"implicit": 0, "pageLoad": 20000, "script": 10000},
                }
            }
        }
        value = call(self.base, "POST", "/session", capabilities, timeout)
        session = Session(self.base, value["sessionId"], timeout)
        self.sessions.append(session)
        return session

    def stop(self) -> None:
        for session in self.sessions:
            session.close()
        self.sessions = []
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5.0)
        # Whatever chromedriver started (the browser and its helpers) shares
        # its process group, whose id is chromedriver's PID.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
