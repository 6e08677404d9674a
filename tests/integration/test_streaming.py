"""Large and slow bodies stream through with bounded memory (issue 2, "Data path").

The 200 MB tests run the proxy as a subprocess (``phoenix-lb run``) so its
RSS can be sampled with psutil while the body moves; the peak may not grow
more than ``RSS_GROWTH_LIMIT`` over the warmed-up baseline.  The backend
checks what it received with SHA-256, the client checks what it downloaded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from tests.support import (
    IncompleteMessage,
    RawClient,
    parse_responses,
    pattern_body,
    pattern_sha256,
    send_raw,
)

from .helpers import config_yaml, make_config, request_bytes, wait_for

SIZE = 200 * 1024 * 1024
PIECE = 64 * 1024
RSS_GROWTH_LIMIT = 50 * 1024 * 1024


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self.interval)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)


class ThrottledClient(RawClient):
    """A client that reads slowly: waits before the first read, then pauses periodically."""

    def __init__(self, port: int, *, first_pause: float, pause_every: int, pause: float) -> None:
        super().__init__(port, timeout=30)
        self.first_pause = first_pause
        self.pause_every = pause_every
        self.pause = pause
        self.received = 0
        self._next_pause = pause_every

    def _recv(self) -> bytes:
        if self.first_pause:
            time.sleep(self.first_pause)
            self.first_pause = 0.0
        data = super()._recv()
        self.received += len(data)
        if self.received >= self._next_pause:
            self._next_pause += self.pause_every
            time.sleep(self.pause)
        return data


@pytest.fixture
def streaming_proxy(backends, run_proxy_subprocess):
    (b,) = backends(1)
    config = make_config([b.address], bind="127.0.0.1:{port}", limits={"max_body": "1g"})
    proc = run_proxy_subprocess(config_yaml(config))
    # Warm up (imports, first connections, buffers) before taking the baseline;
    # one client connection per request keeps the warm-up independent of the
    # keep-alive tests.
    close = [("Connection", "close")]
    for _ in range(10):
        for data in (
            request_bytes("POST", "/sink", headers=close, body=b"x" * 1000000),
            request_bytes("GET", "/big?size=1000000&chunked=1", headers=close),
        ):
            assert parse_responses(send_raw(proc.port, data))[0].status == 200
    b.reset()
    return b, proc


def _send_body(sock: socket.socket, size: int, chunked: bool) -> None:
    block = pattern_body(PIECE)
    sent = 0
    while sent < size:
        n = min(PIECE, size - sent)
        piece = block if n == PIECE else block[:n]
        sock.sendall(b"%x\r\n%s\r\n" % (n, piece) if chunked else piece)
        sent += n
    if chunked:
        sock.sendall(b"0\r\n\r\n")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_200mb_upload_streams_with_bounded_memory(streaming_proxy, framing: str) -> None:
    b, proc = streaming_proxy
    chunked = framing == "chunked"
    method = "PUT" if chunked else "POST"  # PUT is idempotent: exercises the replay buffer
    headers = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(SIZE))]
    sampler = RssSampler(proc.pid)
    with sampler.running(), RawClient(proc.port, timeout=60) as client:
        client.send(request_bytes(method, "/sink", headers=headers))
        _send_body(client.sock, SIZE, chunked)
        resp = client.read_response()
    assert resp.status == 200
    info = resp.json()
    assert info["body_len"] == SIZE
    assert info["body_sha256"] == pattern_sha256(SIZE)
    (got,) = b.requests
    assert got.chunked is chunked
    assert sampler.samples > 10
    assert sampler.growth < RSS_GROWTH_LIMIT, (
        f"proxy RSS grew by {sampler.growth / 2**20:.1f} MiB during a 200 MB upload"
    )


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_200mb_download_to_slow_client_with_bounded_memory(streaming_proxy, framing: str) -> None:
    b, proc = streaming_proxy
    chunked = framing == "chunked"
    sampler = RssSampler(proc.pid)
    with (
        sampler.running(),
        ThrottledClient(
            proc.port, first_pause=1.0, pause_every=16 * 1024 * 1024, pause=0.1
        ) as client,
    ):
        client.send(request_bytes("GET", f"/big?size={SIZE}&chunked={int(chunked)}"))
        resp = client.read_response(keep_body=False)
    assert resp.status == 200
    assert resp.framing == framing
    assert resp.body_len == SIZE
    assert resp.body_sha256 == pattern_sha256(SIZE)
    assert len(b.requests) == 1
    assert sampler.samples > 10
    assert sampler.growth < RSS_GROWTH_LIMIT, (
        f"proxy RSS grew by {sampler.growth / 2**20:.1f} MiB during a 200 MB download"
    )


def test_stalled_client_pauses_the_upstream(backends, proxy) -> None:
    """A client that reads nothing: the proxy stops reading the upstream (flow control).

    Observed from outside: after a second of not reading, the backend's
    connection is reset.  With flow control the proxy held only a bounded
    buffer, so the client then gets a truncated response (a few MiB of
    socket buffers at most); a proxy that kept reading would have the whole
    64 MiB and deliver it.
    """
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    size = 64 * 1024 * 1024
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", p.port))
        sock.sendall(request_bytes("GET", f"/big?size={size}"))
        b.wait_for_requests(1)
        time.sleep(1.0)
        assert p.server(0).in_flight == 1
        b.kill_connections(rst=True)
        total = 0
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            total += len(chunk)
    assert total < 24 * 1024 * 1024, f"the proxy had buffered {total / 2**20:.1f} MiB"
    wait_for(lambda: p.server(0).in_flight == 0, what="in-flight released")


def test_response_body_is_streamed_not_buffered(backends, proxy) -> None:
    """Pieces of a slowly produced body reach the client as they are produced."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    for chunked in (1, 0):
        with RawClient(p.port) as client:
            start = time.monotonic()
            client.send(
                request_bytes("GET", f"/drip?count=4&interval=0.3&size=10&chunked={chunked}")
            )
            data = b""
            first_at = None
            while True:
                piece = client.recv(timeout=3)
                assert piece, "connection closed"
                data += piece
                if first_at is None:
                    first_at = time.monotonic() - start
                try:
                    resp = parse_responses(data)[0]
                except IncompleteMessage:
                    continue
                break
            done_at = time.monotonic() - start
        # The head and the first piece come long before the last piece is produced.
        assert first_at < 0.5, (chunked, first_at)
        assert done_at >= 0.8, (chunked, done_at)
        assert resp.status == 200
        assert resp.body == pattern_body(10) * 4
        assert resp.framing == "chunked" if chunked else "content-length"


def test_request_body_is_streamed_not_buffered(backends, proxy) -> None:
    """The upstream gets the head and the first body bytes before the client sends the rest."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port, timeout=10) as client:
        client.send(request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]))
        client.send(b"5\r\nfirst\r\n")
        # The backend cannot record the request yet, but it has a connection.
        deadline = time.monotonic() + 3
        while b.open_connections == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.open_connections == 1
        assert b.requests == []
        time.sleep(0.1)
        client.send(b"6\r\nsecond\r\n0\r\n\r\n")
        resp = client.read_response()
    assert resp.status == 200
    assert b.requests[0].body == b"firstsecond"


@pytest.mark.parametrize("chunked", [0, 1])
def test_large_download_intact_in_process(backends, proxy, chunked: int) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    size = 20 * 1024 * 1024 + 123
    with RawClient(p.port, timeout=10) as client:
        for _ in range(2):  # twice: the upstream connection is reused after a big body
            client.send(request_bytes("GET", f"/big?size={size}&chunked={chunked}"))
            resp = client.read_response(keep_body=False)
            assert resp.status == 200
            assert resp.body_len == size
            assert resp.body_sha256 == pattern_sha256(size)
    assert b.connections_accepted == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_large_upload_intact_in_process(backends, proxy, chunked: bool) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    size = 20 * 1024 * 1024 + 77
    headers = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(size))]
    with RawClient(p.port, timeout=20) as client:
        client.send(request_bytes("POST", "/sink", headers=headers))
        _send_body(client.sock, size, chunked)
        resp = client.read_response()
    assert resp.status == 200
    assert resp.json() == {"body_len": size, "body_sha256": pattern_sha256(size)}


def test_close_delimited_upstream_body_is_rechunked(backends, proxy) -> None:
    """An upstream body ending at close reaches an HTTP/1.1 client chunked, connection kept."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    size = 3 * 1024 * 1024
    with RawClient(p.port) as client:
        resp = client.request("GET", f"/close-delimited?size={size}")
        assert resp.status == 200
        assert resp.framing == "chunked"
        assert resp.body == pattern_body(size)
        assert client.request("GET", "/").status == 200
