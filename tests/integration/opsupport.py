"""``phoenix-lb run`` as a real process with its admin listener, for operations tests.

:class:`Phoenix` writes a config file, starts ``phoenix-lb run -c FILE``
(master and workers), waits until the admin ``/health`` answers (the admin
listener starts only after every worker reported ready), and offers what the
operations tests need: admin API calls, a parsed ``/metrics`` scrape, the
worker PIDs, signals, config rewrites.  Everything it started is stopped by
PID: SIGTERM to the master, SIGKILL after a bound, then any worker left.

Worker steering: with ``workers: 2`` the master steers each client address
to one worker (``server/sockets.py``: low 32 bits of the source address
modulo the worker count), so 127.0.0.1 always reaches one worker and
127.0.0.2 the other.  :data:`SOURCES` are those two addresses; a test that
must reach both workers sends from both (Linux routes all of 127/8 to lo).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.tools import in_ci

from .helpers import config_yaml, free_port, make_config, phoenix_lb_command

# Two client addresses that land on different workers of a 2-worker master.
SOURCES = ("127.0.0.1", "127.0.0.2")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def require_binary(path: str, package: str) -> str:
    """``path`` if it is an executable, else skip (fail under CI=true) naming ``package``."""
    if os.access(path, os.X_OK):
        return path
    reason = f"{path} not found (Debian package {package})"
    if in_ci():
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


def ops_config(
    backends: list[str],
    *,
    workers: int = 1,
    port: int | None = None,
    admin_port: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A config dict: one listener ``test`` on 127.0.0.1:port, upstream ``app``, admin on."""
    top = {
        key: overrides.pop(key)
        for key in (
            "shutdown_timeout",
            "worker_connections",
            "access_log",
            "admin_extra",
            "error_level",
        )
        if key in overrides
    }
    config = make_config(
        backends,
        bind=f"127.0.0.1:{port or free_port()}",
        access_log=top.get("access_log"),
        server_defaults={"max_fails": 0},
        **overrides,
    )
    config["workers"] = workers
    config["admin"] = {
        "bind": f"127.0.0.1:{admin_port or free_port()}",
        **top.get("admin_extra", {}),
    }
    config["error_log"] = {"path": "stderr", "level": top.get("error_level", "info")}
    config["shutdown_timeout"] = top.get("shutdown_timeout", "5s")
    if "worker_connections" in top:
        config["worker_connections"] = top["worker_connections"]
    return config


def port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[-1])  # host:port, or a bare port


@dataclass
class AdminAnswer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


class Metrics:
    """One parsed ``/metrics`` scrape."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
        total = 0.0
        for family in self.families:
            for sample in family.samples:
                if sample.name != name:
                    continue
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def names(self) -> set[str]:
        return {sample.name for family in self.families for sample in family.samples}


class Phoenix:
    """A ``phoenix-lb run`` process tree built from a config dict."""

    def __init__(self, directory: Path, config: dict[str, Any], name: str = "phoenix") -> None:
        self.directory = directory
        self.name = name
        self.config_path = directory / f"{name}.yaml"
        self.stderr_path = directory / f"{name}.stderr"
        self.config: dict[str, Any] = {}
        self.write_config(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None
        self._known_children: set[int] = set()

    # -- config --------------------------------------------------------------

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = config
        self.config_path.write_text(config_yaml(config))

    @property
    def port(self) -> int:
        return port_of(self.config["listeners"][0]["bind"][0])

    @property
    def admin_port(self) -> int:
        return port_of(self.config["admin"]["bind"])

    @property
    def admin_address(self) -> str:
        return str(self.config["admin"]["bind"])

    # -- process -------------------------------------------------------------

    def start(self, *, timeout: float = START_TIMEOUT) -> Phoenix:
        with open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(
                phoenix_lb_command("run", "-c", str(self.config_path)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=self.directory,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"phoenix-lb exited with {self.proc.returncode}:\n{self.stderr_text()}"
                )
            with contextlib.suppress(OSError):
                if self.admin("/health").status in (200, 503):
                    break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"phoenix-lb not ready after {timeout}s:\n{self.stderr_text()}"
                )
            time.sleep(0.05)
        self._remember_children()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """PIDs of the live worker processes (children of the master), sorted."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = sorted(
            c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
        )
        self._known_children.update(pids)
        return pids

    def _remember_children(self) -> None:
        with contextlib.suppress(psutil.Error, AssertionError):
            for child in psutil.Process(self.pid).children(recursive=True):
                self._known_children.add(child.pid)

    def signal(self, signum: signal.Signals) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after STOP_TIMEOUT; then any worker still alive, by PID."""
        if self.proc is None:
            return None
        self._remember_children()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)
        deadline = time.monotonic() + 3.0
        left = set(self._known_children)
        while left and time.monotonic() < deadline:
            left = {pid for pid in left if psutil.pid_exists(pid) and not _zombie(pid)}
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return self.proc.returncode

    # -- admin ---------------------------------------------------------------

    def admin(
        self,
        path: str,
        *,
        method: str = "GET",
        token: str | None = None,
        timeout: float = 5.0,
    ) -> AdminAnswer:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            headers = {}
            bearer = token if token is not None else self.token
            if bearer:
                headers["Authorization"] = f"Bearer {bearer}"
            conn.request(method, path, body=b"" if method == "POST" else None, headers=headers)
            response = conn.getresponse()
            return AdminAnswer(
                response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
            )
        finally:
            conn.close()

    def metrics(self) -> Metrics:
        answer = self.admin("/metrics")
        assert answer.status == 200, answer
        return Metrics(answer.body.decode())

    def reload(self, config: dict[str, Any], *, timeout: float = 15.0) -> None:
        """Write ``config``, SIGHUP, and wait until the reload counted as a success."""
        before = self.metrics().value("phoenix_config_reloads_total", result="success")
        self.write_config(config)
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.metrics().value("phoenix_config_reloads_total", result="success") <= before:
            failed = self.metrics().value("phoenix_config_last_reload_successful") == 0
            if failed or time.monotonic() > deadline:
                raise AssertionError(f"reload did not succeed:\n{self.stderr_text()[-3000:]}")
            time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


# ---------------------------------------------------------------- clients


def get(
    port: int,
    path: str = "/",
    *,
    source: str = "127.0.0.1",
    timeout: float = 5.0,
    host: str = "127.0.0.1",
) -> tuple[int, bytes, dict[str, str]]:
    """One GET on a fresh connection from ``source``; (status, body, headers)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def raw_exchange(port: int, request: bytes, *, source: str = "127.0.0.1") -> bytes:
    """Send ``request`` (ending the connection with Connection: close) and read until EOF."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5.0, source_address=(source, 0)
    ) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    #: monotonic time of every success, to see that service continued
    ok_times: list[float] = field(default_factory=list)


class LoadPool:
    """A bounded pool of keep-alive clients, ``per_source`` threads from each source address.

    Each thread sends ``GET path`` in a loop on one keep-alive connection; on
    any error it counts a failure, closes and reconnects.  So a client can
    fail at most once per connection it loses: the bound the kill test checks.
    """

    def __init__(
        self, port: int, *, sources: tuple[str, ...] = SOURCES, per_source: int = 4, path: str = "/"
    ) -> None:
        self.port = port
        self.path = path
        self.stop_event = threading.Event()
        self.results: dict[str, LoadResult] = {source: LoadResult() for source in sources}
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(source,), daemon=True)
            for source in sources
            for _ in range(per_source)
        ]

    def _run(self, source: str) -> None:
        result = self.results[source]
        conn: http.client.HTTPConnection | None = None
        while not self.stop_event.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(
                        "127.0.0.1", self.port, timeout=10.0, source_address=(source, 0)
                    )
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                good = response.status == 200
                with self._lock:
                    if good:
                        result.ok += 1
                        result.ok_times.append(time.monotonic())
                    else:
                        result.failed += 1
                        result.errors.append(f"status {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    result.failed += 1
                    result.errors.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> LoadPool:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(15.0)


@contextlib.contextmanager
def running(directory: Path, config: dict[str, Any], name: str = "phoenix") -> Iterator[Phoenix]:
    """Start a :class:`Phoenix`; always stopped by PID on the way out."""
    phoenix = Phoenix(directory, config, name)
    try:
        phoenix.start()
        yield phoenix
    finally:
        phoenix.stop()


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


__all__ = [
    "SOURCES",
    "AdminAnswer",
    "LoadPool",
    "LoadResult",
    "Metrics",
    "Phoenix",
    "free_ports",
    "get",
    "ops_config",
    "raw_exchange",
    "require_binary",
    "running",
]
