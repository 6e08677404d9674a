"""Self-tests of the test backend and raw HTTP helpers.

The integration tests trust these helpers to tell the truth about what a
proxy did, so they are checked here directly: with httpx (an unrelated
client) and with raw sockets, no proxy in between.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from .backend import (
    Backend,
    BlackholePort,
    FailMode,
    RefusingPort,
    SilentPort,
    pattern_body,
    pattern_sha256,
)
from .rawhttp import IncompleteMessage, ProtocolError, RawClient, parse_responses, send_raw


def _backend_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("backend-")]


@pytest.fixture
def backend() -> Iterator[Backend]:
    with Backend("b1") as b:
        yield b
    assert not b.running
    assert _backend_threads() == []


@pytest.fixture
def client(backend: Backend) -> Iterator[httpx.Client]:
    # trust_env=False: never route through a proxy from the environment.
    with httpx.Client(base_url=backend.url, trust_env=False, timeout=5.0) as c:
        yield c


def _get(path: str, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return f"GET {path} {version}\r\nHost: t\r\n{extra}\r\n".encode()


# ---------------------------------------------------------------- lifecycle


def test_start_stop_idempotent_and_address() -> None:
    b = Backend("x")
    with pytest.raises(RuntimeError):
        _ = b.port
    b.start()
    b.start()
    assert b.address == f"127.0.0.1:{b.port}"
    assert len(_backend_threads()) == 1
    b.stop()
    b.stop()
    assert _backend_threads() == []


def test_restart_binds_same_port() -> None:
    with Backend("x") as b:
        port = b.port
        b.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        b.start()
        assert b.port == port
        assert parse_responses(send_raw(port, _get("/", "Connection: close\r\n")))[0].text == "x\n"


def test_stop_closes_open_connections(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        c.send(_get("/hang"))
        backend.wait_for_requests(1)
        backend.stop()
        assert c.is_closed(2.0)


# ------------------------------------------------------------------- routes


def test_default_route(client: httpx.Client, backend: Backend) -> None:
    r = client.get("/anything?x=1")
    assert r.status_code == 200
    assert r.text == "b1\n"
    assert r.headers["X-Backend"] == "b1"
    [req] = backend.requests
    assert (req.method, req.target, req.path, req.query) == (
        "GET",
        "/anything?x=1",
        "/anything",
        {"x": "1"},
    )
    assert req.version == "HTTP/1.1"
    assert req.raw_head.startswith(b"GET /anything?x=1 HTTP/1.1\r\n")
    assert req.raw_head.endswith(b"\r\n\r\n")


def test_keepalive_reuse_counted(client: httpx.Client, backend: Backend) -> None:
    for _ in range(5):
        assert client.get("/").status_code == 200
    assert backend.connections_accepted == 1
    assert len({r.conn_id for r in backend.requests}) == 1
    client.get("/", headers={"Connection": "close"})
    client.get("/")
    assert backend.connections_accepted == 2


def test_http10_closes_unless_keepalive(backend: Backend) -> None:
    out = send_raw(backend.port, b"GET / HTTP/1.0\r\n\r\n", read_timeout=2)
    [r] = parse_responses(out)
    assert r.header("Connection") == "close"
    with RawClient(backend.port) as c:
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert c.read_response().header("Connection") == "keep-alive"
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert c.read_response().status == 200
        assert not c.is_closed(0.1)
    assert backend.connections_accepted == 2


def test_echo_preserves_header_case_and_order(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nx-lower: 1\r\nX-UPPER: 2\r\n"
            b"x-lower: 3\r\nContent-Length: 5\r\n\r\nhello"
        )
        data = c.read_response().json()
    assert data["headers"] == [
        ["Host", "h"],
        ["x-lower", "1"],
        ["X-UPPER", "2"],
        ["x-lower", "3"],
        ["Content-Length", "5"],
    ]
    assert data["body_len"] == 5
    assert data["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    [req] = backend.requests
    assert req.header_all("X-Lower") == ["1", "3"]
    assert req.body == b"hello" and not req.chunked


def test_chunked_upload_is_dechunked(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        data = c.read_response().json()
        assert data["chunked"] is True
        assert data["body_len"] == 11
        # The connection is still usable after a chunked body.
        c.send(_get("/"))
        assert c.read_response().text == "b1\n"
    req = backend.requests[0]
    assert req.body == b"hello world"
    assert req.chunked
    assert req.trailers == [("X-Trailer", "t")]


def test_httpx_streamed_upload(client: httpx.Client, backend: Backend) -> None:
    payload = b"x" * 300_000

    def gen() -> Iterator[bytes]:
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    r = client.post("/echo", content=gen())
    assert r.json()["body_len"] == len(payload)
    assert backend.requests[0].chunked
    assert backend.requests[0].body == payload


def test_expect_100_continue(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
        interim = c.read_response(include_interim=True)
        assert interim.status == 100
        c.send(b"abc")
        assert c.read_response().json()["body_len"] == 3


@pytest.mark.parametrize("chunked", [False, True])
def test_big_streams_pattern(client: httpx.Client, chunked: bool) -> None:
    size = 3 * 65536 + 123
    with client.stream("GET", f"/big?size={size}&chunked={int(chunked)}") as r:
        assert ("content-length" in r.headers) is not chunked
        assert (r.headers.get("transfer-encoding") == "chunked") is chunked
        body = b"".join(r.iter_bytes())
    assert body == pattern_body(size)
    assert hashlib.sha256(body).hexdigest() == pattern_sha256(size)


def test_big_respects_flow_control(backend: Backend) -> None:
    # 64 MiB cannot sit in socket buffers; if the backend wrote without
    # drain() it would finish at once.  With flow control its handler is
    # still busy while the client does not read, and finishes after.
    size = 64 << 20
    with RawClient(backend.port) as c:
        c.send(_get(f"/big?size={size}"))
        time.sleep(0.3)
        c.send(_get("/"))  # queued behind /big on the same connection
        time.sleep(0.2)
        assert len(backend.requests) == 1  # second request not read yet
        r = c.read_response(keep_body=False)
        assert r.body_len == size and r.body_sha256 == pattern_sha256(size)
        assert c.read_response().text == "b1\n"


def test_drip_and_close_delimited(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        t0 = time.monotonic()
        c.send(_get("/drip?count=3&interval=0.1&size=10"))
        r = c.read_response()
        assert time.monotonic() - t0 >= 0.2
        assert r.framing == "chunked" and r.body == pattern_body(10) * 3
        c.send(_get("/close-delimited?size=1000"))
        r = c.read_response()
        assert r.framing == "close" and r.body == pattern_body(1000)
        assert r.header("Content-Length") is None and r.header("Transfer-Encoding") is None
        assert c.is_closed(1.0)


def test_head_on_any_path(backend: Backend) -> None:
    requests = (
        b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD /big?size=1000 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD /big?size=1000&chunked=1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD /head-cl HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    out = send_raw(backend.port, requests)
    rs = parse_responses(out, ["HEAD", "HEAD", "HEAD", "HEAD", "GET"])
    assert [r.header("Content-Length") for r in rs] == ["3", "1000", None, "3", "3"]
    assert rs[2].header("Transfer-Encoding") == "chunked"
    assert [r.body for r in rs] == [b"", b"", b"", b"", b"b1\n"]


def test_status_routes(client: httpx.Client) -> None:
    r = client.get("/status/503")
    assert (r.status_code, r.text) == (503, "status 503\n")
    r = client.get("/204")
    assert r.status_code == 204 and r.content == b""
    assert "content-length" not in r.headers
    assert client.get("/status/304").status_code == 304
    assert client.get("/status/99").status_code == 400


def test_health_switch(client: httpx.Client, backend: Backend) -> None:
    assert (client.get("/health").status_code, client.get("/health").text) == (200, "ok")
    backend.healthy = False
    assert client.get("/health").status_code == 503


def test_headers_route(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        r = c.request("GET", "/headers?Connection=X-Hop&X-Hop=secret&Keep-Alive=timeout%3D5")
        assert r.header_all("Connection") == ["X-Hop"]
        assert r.header("X-Hop") == "secret" and r.header("Keep-Alive") == "timeout=5"


def test_slow_and_global_delay(client: httpx.Client, backend: Backend) -> None:
    t0 = time.monotonic()
    client.get("/slow?delay=0.2")
    assert time.monotonic() - t0 >= 0.2
    backend.delay = 0.2
    t0 = time.monotonic()
    client.get("/")
    assert time.monotonic() - t0 >= 0.2


def test_sink_counts_without_storing(backend: Backend) -> None:
    size = 20 << 20
    piece = pattern_body(1 << 20)
    with RawClient(backend.port, timeout=30) as c:
        c.send(f"PUT /sink HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(20):
            c.send(piece)
        assert c.read_response().json() == {"body_len": size, "body_sha256": pattern_sha256(size)}
    [req] = backend.requests
    assert req.body == b"" and req.body_len == size


def test_pipelined_requests_answered_in_order(backend: Backend) -> None:
    data = (
        _get("/slow?delay=0.1")
        + _get("/status/404")
        + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
        + _get("/", "Connection: close\r\n")
    )
    rs = parse_responses(send_raw(backend.port, data))
    assert [r.status for r in rs] == [200, 404, 200, 200]
    assert rs[2].json()["body_len"] == 2
    assert backend.connections_accepted == 1


# ----------------------------------------------------------- failure modes


def test_close_route_and_fail_mode(client: httpx.Client, backend: Backend) -> None:
    with RawClient(backend.port) as c:
        c.send(_get("/close"))
        assert c.is_closed(1.0) and c.buffered == b"" and not c.was_reset
    backend.fail_mode = "close"
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/")
    assert [r.path for r in backend.requests] == ["/close", "/"]


def test_reset_route_and_fail_mode(backend: Backend) -> None:
    cases: list[tuple[str, FailMode]] = [("/reset", None), ("/", "reset")]
    for path, mode in cases:
        backend.fail_mode = mode
        with RawClient(backend.port) as c:
            c.send(_get(path))
            assert c.is_closed(1.0) and c.was_reset and c.buffered == b""


def test_fail_mode_503(client: httpx.Client, backend: Backend) -> None:
    backend.fail_mode = "503"
    assert client.get("/health").status_code == 503
    backend.fail_mode = None
    assert client.get("/health").status_code == 200
    assert backend.connections_accepted == 1


def test_hang_until_client_closes(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        c.send(_get("/hang"))
        with pytest.raises(TimeoutError):
            c.read_response(timeout=0.3)
        assert backend.open_connections == 1
    backend.wait_until(lambda b: b.open_connections == 0)


@pytest.mark.parametrize("rst", [False, True])
def test_kill_connections(backend: Backend, rst: bool) -> None:
    with RawClient(backend.port) as c1, RawClient(backend.port) as c2:
        c1.send(_get("/"))
        c1.read_response()
        c2.send(_get("/hang"))
        backend.wait_for_requests(2)
        assert backend.kill_connections(rst=rst) == 2
        assert c1.is_closed(1.0) and c2.is_closed(1.0)
        assert c1.was_reset is rst
    assert backend.open_connections == 0
    # The listener still accepts after the kill.
    [r] = parse_responses(send_raw(backend.port, _get("/", "Connection: close\r\n")))
    assert r.text == "b1\n"


def test_keepalive_timeout_closes_idle(backend: Backend) -> None:
    backend.keepalive_timeout = 0.2
    with RawClient(backend.port) as c:
        c.send(_get("/"))
        c.read_response()
        assert c.is_closed(2.0)


def test_max_requests_per_connection(backend: Backend) -> None:
    backend.max_requests_per_connection = 2
    with RawClient(backend.port) as c:
        c.send(_get("/"))
        assert c.read_response().keep_alive
        c.send(_get("/"))
        r = c.read_response()
        assert r.header("Connection") == "close" and not r.keep_alive
        assert c.is_closed(1.0)


def test_reset_clears_records(client: httpx.Client, backend: Backend) -> None:
    client.get("/")
    backend.reset()
    assert backend.requests == [] and backend.connections_accepted == 0
    client.get("/")
    assert len(backend.requests) == 1
    with pytest.raises(TimeoutError):
        backend.wait_for_requests(2, timeout=0.1)


# ---------------------------------------------------------- strict parsing


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nY: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        b"GET /\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    ],
)
def test_rejects_bad_requests(backend: Backend, raw: bytes) -> None:
    [r] = parse_responses(send_raw(backend.port, raw))
    assert r.status in (400, 505)
    assert r.header("Connection") == "close"
    assert backend.requests == []
    assert len(backend.errors) == 1


def test_client_gone_mid_body_is_not_a_request(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
    backend.wait_until(lambda b: len(b.errors) == 1)
    assert backend.requests == []
    assert "after 3 of 100 bytes" in backend.errors[0]


# ------------------------------------------------------------- special ports


def test_refusing_port() -> None:
    with RefusingPort() as p, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()


def test_blackhole_port_connect_hangs() -> None:
    with BlackholePort() as p:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            socket.create_connection(("127.0.0.1", p.port), timeout=0.5).close()
        assert time.monotonic() - t0 >= 0.45


def test_silent_port_accepts_and_never_answers() -> None:
    with SilentPort() as p, RawClient(p.port) as c:
        c.send(_get("/"))
        with pytest.raises(TimeoutError):
            c.read_response(timeout=0.3)


# ------------------------------------------------------------ raw parsing


def test_parse_responses_framings() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nT: 1\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
        b"HTTP/1.0 200 \r\n\r\nrest until close"
    )
    rs = parse_responses(data, ["GET", "GET", "GET", "HEAD"])
    assert [(r.status, r.framing, r.body) for r in rs] == [
        (200, "content-length", b"hi"),
        (200, "chunked", b"ab"),
        (204, "none", b""),
        (200, "none", b""),
        (200, "close", b"rest until close"),
    ]
    assert rs[1].trailers == [("T", "1")]
    assert rs[4].reason == "" and not rs[4].keep_alive
    assert len(parse_responses(data, ["GET", "GET", "GET", "HEAD"], include_interim=True)) == 6


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Len",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
)
def test_parse_responses_truncated(data: bytes) -> None:
    with pytest.raises(IncompleteMessage):
        parse_responses(data)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n",
    ],
)
def test_parse_responses_rejects_invalid(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_responses(data)
