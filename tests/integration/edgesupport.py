"""Helpers for ``test_affinity.py`` and ``test_edge.py``: clients from a chosen
source address, simultaneous bursts, a bounded keep-alive load, and
``phoenix-lb run`` with its admin listener driven through ``phoenix-lb ctl``.

Source addresses: Linux routes all of 127.0.0.0/8 to ``lo``, so a client
socket bound to 127.0.0.2 before ``connect`` reaches a proxy on 127.0.0.1 as
a different client address.  Nothing here leaves the loopback network.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support import RawClient, Response
from tests.support.rawhttp import Headers, _Source

from .helpers import config_yaml, free_port, phoenix_lb_command, port_answers, wait_for

if TYPE_CHECKING:
    from .conftest import ProxyProcess

CLIENT = "127.0.0.1"
OTHER = "127.0.0.2"
THIRD = "127.0.0.3"
# Bound for every blocking read in these tests: a hang fails in seconds.
READ_TIMEOUT = 5.0


class SourceClient(RawClient):
    """:class:`RawClient` whose connection comes from ``source`` (an address of 127/8)."""

    def __init__(
        self,
        port: int,
        *,
        source: str = CLIENT,
        host: str = "127.0.0.1",
        timeout: float = READ_TIMEOUT,
    ) -> None:
        # RawClient.__init__ connects without a source address; do its work here.
        self.timeout = timeout
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0)
        )
        self.was_reset = False
        self._src = _Source(fill=self._recv)


def get(
    port: int,
    target: str = "/",
    *,
    source: str = CLIENT,
    headers: Headers | None = None,
    method: str = "GET",
    body: bytes = b"",
    timeout: float = READ_TIMEOUT,
) -> Response:
    """One request on a fresh connection (``Connection: close``); its response."""
    with SourceClient(port, source=source, timeout=timeout) as client:
        return client.request(
            method, target, headers=[*(headers or []), ("Connection", "close")], body=body
        )


def request_line(target: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A keep-alive GET, serialized (for pipelining)."""
    lines = [f"GET {target} HTTP/1.1", "Host: test", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def burst(
    port: int,
    count: int,
    target: str = "/",
    *,
    source: str = CLIENT,
    connections: int = 4,
    headers: Sequence[tuple[str, str]] = (),
) -> list[Response]:
    """``count`` GETs arriving at the same moment from one address.

    The requests are pipelined over ``connections`` connections opened
    beforehand; all bytes are written in one quick loop, so the proxy parses
    (and admits) every request within a millisecond or two.  Responses come
    back in request order per connection; the result is all of them.
    """
    clients = [SourceClient(port, source=source) for _ in range(connections)]
    try:
        shares = [
            count // connections + (1 if i < count % connections else 0) for i in range(connections)
        ]
        data = request_line(target, headers)
        for client, share in zip(clients, shares, strict=True):
            client.send(data * share)
        out: list[Response] = []
        for client, share in zip(clients, shares, strict=True):
            out += [client.read_response() for _ in range(share)]
        return out
    finally:
        for client in clients:
            client.close()


def statuses(responses: Sequence[Response]) -> list[int]:
    return [r.status for r in responses]


# ---------------------------------------------------------------- bounded load


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request of a :class:`Load`: when it ran, how it ended, who answered."""

    started: float
    ended: float
    status: int  # 0: the request failed without a response (see ``error``)
    backend: str | None
    error: str = ""


class Load:
    """``threads`` keep-alive clients sending GETs back to back until :meth:`stop`.

    Every request is recorded as an :class:`Outcome` (a connection error
    too, as status 0).  A client whose connection closes reconnects.
    ``pause`` is slept between two requests of one client.
    """

    def __init__(
        self,
        port: int,
        *,
        threads: int = 8,
        target: str = "/",
        source: str = CLIENT,
        headers: Headers | None = None,
        pause: float = 0.0,
    ) -> None:
        self.port = port
        self.target = target
        self.source = source
        self.headers = headers or []
        self.pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(READ_TIMEOUT + 2.0)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"
        return self.outcomes

    @property
    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return sorted(self._outcomes, key=lambda o: o.started)

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)

    def _run(self) -> None:
        client: SourceClient | None = None
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    if client is None:
                        client = SourceClient(self.port, source=self.source)
                    response = client.request("GET", self.target, headers=list(self.headers))
                except Exception as exc:  # reset, refused, invalid or short response
                    self._record(Outcome(started, time.monotonic(), 0, None, repr(exc)))
                    if client is not None:
                        client.close()
                    client = None
                    continue
                self._record(
                    Outcome(
                        started, time.monotonic(), response.status, response.header("X-Backend")
                    )
                )
                if not response.keep_alive:
                    client.close()
                    client = None
                if self.pause:
                    time.sleep(self.pause)
        finally:
            if client is not None:
                client.close()


# ---------------------------------------------------------------- phoenix-lb run + ctl


class Lb:
    """A ``phoenix-lb run`` process (from ``run_proxy_subprocess``) and its admin listener."""

    def __init__(self, process: ProxyProcess, admin_port: int, config_path: Path) -> None:
        self.process = process
        self.admin_port = admin_port
        self.config_path = config_path

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def api(self, path: str) -> Any:
        """GET an admin API path; the decoded JSON."""
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=READ_TIMEOUT) as answer:
            return json.loads(answer.read())

    def states(self, upstream: str = "app") -> dict[str, dict[str, Any]]:
        """{server address: its /api/upstreams entry (state, healthy, health_reason...)}."""
        return {item["server"]: item for item in self.api("/api/upstreams")[upstream]}

    def state(self, address: str, upstream: str = "app") -> str:
        return str(self.states(upstream)[address]["state"])

    def wait_state(self, address: str, state: str, timeout: float = 5.0) -> float:
        """Poll until ``address`` is in ``state``; the monotonic time it was seen."""
        wait_for(lambda: self.state(address) == state, timeout, f"{address} {state}")
        return time.monotonic()

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``phoenix-lb ctl --admin ... ARGS``."""
        return subprocess.run(
            phoenix_lb_command("ctl", "--admin", self.admin, "--timeout", "10", *args),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def stderr(self) -> str:
        return self.process.stderr_text()


def lb_config(config: dict[str, Any], *, workers: int = 1) -> tuple[dict[str, Any], int]:
    """``config`` (from ``make_config``) made ready for ``phoenix-lb run``.

    The listener binds the fixture's ``{port}``, the admin listener a free
    port (returned), shutdown is quick, and errors are logged at info.
    """
    out = dict(config)
    out["listeners"] = [dict(listener) for listener in config["listeners"]]
    out["listeners"][0]["bind"] = ["127.0.0.1:{port}"]
    admin_port = free_port()
    out["admin"] = {"bind": f"127.0.0.1:{admin_port}"}
    out["workers"] = workers
    out["shutdown_timeout"] = "2s"
    out["error_log"] = {"path": "stderr", "level": "info"}
    return out, admin_port


def start_lb(
    run_proxy_subprocess: Callable[..., ProxyProcess],
    tmp_path: Path,
    config: dict[str, Any],
    *,
    workers: int = 1,
) -> Lb:
    """Start ``phoenix-lb run`` and wait until its admin listener answers too."""
    ready, admin_port = lb_config(config, workers=workers)
    before = set(tmp_path.glob("phoenix-*.yaml"))
    process = run_proxy_subprocess(config_yaml(ready))
    (config_path,) = set(tmp_path.glob("phoenix-*.yaml")) - before
    deadline = time.monotonic() + 20.0
    while not port_answers(admin_port):
        assert process.proc.poll() is None, process.stderr_text()
        assert time.monotonic() < deadline, f"admin listener not up:\n{process.stderr_text()}"
        time.sleep(0.02)
    return Lb(process, admin_port, config_path)


def probes(requests: Sequence[Any]) -> list[Any]:
    """The health probes among a backend's recorded requests."""
    return [r for r in requests if r.path == "/health"]


def traffic(requests: Sequence[Any]) -> list[Any]:
    """The proxied requests among a backend's recorded requests (not probes)."""
    return [r for r in requests if r.path != "/health"]


def secret_file(directory: Path, name: str = "sticky.key") -> Path:
    """A 0600 file holding a 32-byte sticky cookie key."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("k" * 8 + os.urandom(12).hex() + "\n")
    return path


# ---------------------------------------------------------------- PROXY protocol


def proxy_v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A v2 header: PROXY command, TCP over IPv4."""
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    addresses = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return signature + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def raw_exchange(
    port: int,
    pieces: Sequence[bytes],
    *,
    source: str = CLIENT,
    pause: float = 0.0,
    timeout: float = 2.0,
) -> bytes:
    """Write ``pieces`` one by one (``pause`` s apart) on a new connection; all bytes read back.

    Reading stops when the peer closes (FIN or RST) or after ``timeout`` s of silence.
    """
    chunks: list[bytes] = []
    with socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    ) as sock:
        try:
            for index, piece in enumerate(pieces):
                if index and pause:
                    time.sleep(pause)
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def tls_files(directory: Path) -> tuple[Any, Path, Path]:
    """A throwaway CA and a certificate for localhost/127.0.0.1: (ca, cert file, key file)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    os.chmod(key_path, 0o600)
    return ca, cert_path, key_path


def tls_get(port: int, ca: Any, target: str = "/") -> Response:
    """One GET over TLS (SNI localhost, verified against ``ca``)."""
    import ssl

    from tests.support import parse_responses

    context = ssl.create_default_context()
    ca.configure_trust(context)
    data = b""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        while True:
            try:
                chunk = sock.recv(65536)
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            data += chunk
    (response,) = parse_responses(data)
    return response
