"""Bad framing and bad input are refused and never forwarded (issue 2, "Framing and bad input").

RFC 9112: ambiguous or invalid framing gets 400 and a close; too many or too
large header fields 431; a body over ``max_body`` 413; a head not complete
within ``client_header`` a close (408 allowed).  For each case the test also
checks what reached the backend: nothing at all when the head itself is bad,
and never a *complete* request when the body is bad or cut short.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from tests.support import RawClient, Response, parse_responses

from .helpers import assert_nothing_reached, make_config, request_bytes, set_linger_zero, wait_for

H = b"Host: t\r\n"


def _refused(port: int, data: bytes, *, timeout: float = 5.0) -> Response:
    """Send ``data``; return the response and check the proxy closes afterwards."""
    with RawClient(port, timeout=timeout) as client:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(data)
        resp = client.read_response()
        assert not resp.keep_alive, resp.headers
        assert client.is_closed(timeout=3.0), "the proxy kept the connection open"
    return resp


# Bad heads: nothing may reach the backend, not even a connection attempt's worth.
HEAD_CASES = [
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        id="cl-and-te",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        400,
        id="te-and-cl",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
        id="two-differing-cl",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!",
        400,
        id="cl-list-differing",
    ),
    pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400, id="cl-abc"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400, id="cl-neg"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhi", 400, id="cl-plus"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhi", 400, id="cl-hex"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1.5\r\n\r\nhe", 400, id="cl-frac"),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        400,
        id="cl-overflow",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nxxxx", 400, id="te-gzip"
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
        id="te-chunked-not-final",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        id="te-gzip-chunked-501",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        id="te-chunked-twice",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
        id="te-xchunked",
    ),
    pytest.param(
        b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        id="te-in-http10",
    ),
    pytest.param(b"GET / HTTP/1.1\nHost: t\n\n", 400, id="bare-lf"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n", 400, id="bare-lf-in-field"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400, id="bare-cr-in-value"),
    pytest.param(b"GET / HTTP/1.1\rHost: t\r\n\r\n", 400, id="bare-cr-after-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400, id="space-before-colon-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n", 400, id="space-before-colon"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A\t: b\r\n\r\n", 400, id="tab-before-colon"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400, id="obs-fold"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n", 400, id="obs-fold-tab"),
    pytest.param(b"GET / HTTP/1.1\r\n Host: t\r\n\r\n", 400, id="leading-ws-first-field"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", 400, id="ctl-0x01"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400, id="ctl-nul"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n", 400, id="ctl-del"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x1bb\r\n\r\n", 400, id="ctl-esc"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX(A): b\r\n\r\n", 400, id="name-parens"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX@A: b\r\n\r\n", 400, id="name-at"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n", 400, id="name-space"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\n: b\r\n\r\n", 400, id="name-empty"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-\xe9: b\r\n\r\n", 400, id="name-non-ascii"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400, id="line-without-colon"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="missing-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="duplicate-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, id="duplicate-host-same"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, id="invalid-host"),
    pytest.param(b"GET /\r\n\r\n", 400, id="http-0.9"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 400, id="http-2.0"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, id="h2-preface"),
    pytest.param(b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", 400, id="http-1.2"),
    pytest.param(b"GET / http/1.1\r\nHost: t\r\n\r\n", 400, id="lowercase-version"),
    pytest.param(b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400, id="space-in-target"),
    pytest.param(b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400, id="invalid-method"),
    pytest.param(b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n", 400, id="nul-in-target"),
]


@pytest.mark.parametrize(("data", "status"), HEAD_CASES)
def test_bad_head_is_refused_and_not_forwarded(backends, proxy, data: bytes, status: int) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    resp = _refused(p.port, data)
    assert resp.status == status, resp.raw_head
    assert_nothing_reached(b)
    assert b.connections_accepted == 0


def test_valid_control_request_is_forwarded(backends, proxy) -> None:
    """The baseline the rejections differ from: each feature used correctly passes."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    data = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nX-A:  padded\t\r\nX-B:\r\nX-C: caf\xe9\r\n"
        b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    with RawClient(p.port) as client:
        client.send(data)
        resp = client.read_response()
    assert resp.status == 200
    got = b.requests[0]
    assert got.body == b"hello"
    assert got.header("X-A") == "padded"
    assert got.header("X-B") == ""
    assert got.header("X-C") == "caf\xe9"


# ---------------------------------------------------------------- size limits


def test_101_header_fields_get_431(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_headers": 100}))
    fields = [(f"X-F{i}", "v") for i in range(100)]  # plus Host: 101 fields
    resp = _refused(p.port, request_bytes("GET", "/", headers=fields))
    assert resp.status == 431
    assert_nothing_reached(b)


def test_100_header_fields_are_accepted(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_headers": 100}))
    fields = [(f"X-Field-{i}", "v") for i in range(99)]  # plus Host: 100 fields
    with RawClient(p.port) as client:
        assert client.request("GET", "/echo", headers=fields).status == 200
    assert len(b.requests) == 1
    assert len([n for n in b.requests[0].header_names() if n.startswith("X-Field-")]) == 99


def test_header_section_over_max_header_bytes_gets_431(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_header_bytes": "16k"}))
    resp = _refused(p.port, request_bytes("GET", "/", headers=[("X-Big", "a" * 20000)]))
    assert resp.status == 431
    assert_nothing_reached(b)


def test_many_small_fields_over_max_header_bytes_get_431(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_header_bytes": "4k", "max_headers": 1000}))
    fields = [(f"X-F{i:03d}", "v" * 40) for i in range(120)]  # ~6 KiB
    resp = _refused(p.port, request_bytes("GET", "/", headers=fields))
    assert resp.status == 431
    assert_nothing_reached(b)


def test_header_section_under_max_header_bytes_is_accepted(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_header_bytes": "16k"}))
    with RawClient(p.port) as client:
        assert client.request("GET", "/", headers=[("X-Big", "a" * 12000)]).status == 200
    assert b.requests[0].header("X-Big") == "a" * 12000


def test_huge_head_without_end_is_cut_off(backends, proxy) -> None:
    """A head that never ends is refused once it passes the limit (no unbounded buffering)."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_header_bytes": "16k"}))
    data = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (256 * 1024)
    resp = _refused(p.port, data)
    assert resp.status == 431
    assert_nothing_reached(b)


def test_content_length_over_max_body_gets_413(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_body": "1k"}))
    resp = _refused(p.port, request_bytes("POST", "/echo", body=b"x" * 2048))
    assert resp.status == 413
    assert_nothing_reached(b)


def test_content_length_at_max_body_is_accepted(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_body": "1k"}))
    with RawClient(p.port) as client:
        resp = client.request("POST", "/echo", body=b"x" * 1024)
    assert resp.status == 200
    assert resp.json()["body_len"] == 1024


def test_chunked_body_over_max_body_gets_413(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_body": "1k"}))
    body = b"200\r\n" + b"x" * 512 + b"\r\n"
    data = request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")])
    resp = _refused(p.port, data + body * 4 + b"0\r\n\r\n")
    assert resp.status == 413
    time.sleep(0.2)
    # The head may have been forwarded before the body grew too large, but
    # the backend must never see a complete request.
    assert b.requests == []


def test_chunked_body_over_max_body_streamed_slowly_gets_413(backends, proxy) -> None:
    """The limit holds when the body arrives piece by piece after the upstream connected."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_body": "1k"}))
    with RawClient(p.port) as client:
        client.send(request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]))
        wait_for(lambda: b.open_connections == 1, what="upstream connection")
        piece = b"100\r\n" + b"x" * 256 + b"\r\n"
        for _ in range(8):  # 2 KiB in all; the limit is passed at the 5th piece
            try:
                client.send(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.02)
        resp = client.read_response()
        assert resp.status == 413
        assert client.is_closed(timeout=3.0)
    wait_for(lambda: b.open_connections == 0, what="upstream connection closed")
    assert b.requests == []
    assert any("inside the body" in e for e in b.errors), b.errors


# ---------------------------------------------------------------- bad bodies


BODY_CASES = [
    pytest.param(b"zz\r\nhello\r\n0\r\n\r\n", id="chunk-size-not-hex"),
    pytest.param(b"-5\r\nhello\r\n0\r\n\r\n", id="chunk-size-negative"),
    pytest.param(b"0x5\r\nhello\r\n0\r\n\r\n", id="chunk-size-0x"),
    pytest.param(b" 5\r\nhello\r\n0\r\n\r\n", id="chunk-size-leading-space"),
    pytest.param(b"\r\nhello\r\n0\r\n\r\n", id="chunk-size-empty"),
    pytest.param(b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", id="chunk-size-overflow"),
    pytest.param(b"5\r\nhelloXX0\r\n\r\n", id="chunk-data-without-crlf"),
    pytest.param(b"5\nhello\r\n0\r\n\r\n", id="chunk-size-bare-lf"),
]


@pytest.mark.parametrize("body", BODY_CASES)
def test_invalid_chunked_body_is_refused(backends, proxy, body: bytes) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    data = request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")])
    resp = _refused(p.port, data + body)
    assert resp.status == 400
    time.sleep(0.2)
    assert b.requests == []


# ---------------------------------------------------------------- slow and vanishing clients


def test_partial_head_times_out(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], timeouts={"client_header": "500ms"}))
    with RawClient(p.port, timeout=5) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        start = time.monotonic()
        data = client.read_until_closed(timeout=5)
        elapsed = time.monotonic() - start
    assert 0.3 <= elapsed <= 2.5, elapsed
    if data:
        assert parse_responses(data)[0].status == 408
    assert_nothing_reached(b, settle=0)


def test_slowloris_head_times_out_as_a_whole(backends, proxy) -> None:
    """client_header bounds the whole head, not the gap between two bytes."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], timeouts={"client_header": "500ms"}))
    head = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 200
    start = time.monotonic()
    closed_at = None
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
        sock.settimeout(0.05)
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic()
                break
            if data:  # 408 or EOF: either way the proxy gave up
                closed_at = time.monotonic()
                break
            if time.monotonic() - start > 5:
                break
    assert closed_at is not None, "the proxy waited more than 5 s for a trickled head"
    assert closed_at - start <= 2.5
    assert_nothing_reached(b, settle=0)


def test_idle_connection_without_request_is_closed(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], timeouts={"client_header": "300ms"}))
    with RawClient(p.port) as client:
        assert client.is_closed(timeout=3.0)
    assert_nothing_reached(b, settle=0)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_gone_mid_body_never_completes_upstream(
    backends, proxy, framing: str, how: str
) -> None:
    """The client sends part of a body and disconnects: the backend sees an incomplete request."""
    (b,) = backends(1)
    # A long client_body timeout, so only the disconnect can end the request quickly.
    p = proxy(make_config([b.address], timeouts={"client_body": "30s"}))
    if framing == "content-length":
        head = request_bytes("POST", "/echo", headers=[("Content-Length", "100000")])
        part = b"x" * 5000
    else:
        head = request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")])
        part = b"1000\r\n" + b"x" * 4096 + b"\r\n"
    sock = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    try:
        sock.sendall(head + part)
        wait_for(lambda: b.open_connections == 1, what="upstream connection opened")
        time.sleep(0.2)  # let the head and the first body bytes reach the backend
        if how == "rst":
            set_linger_zero(sock)
    finally:
        sock.close()
    wait_for(lambda: b.errors != [], timeout=5.0, what="backend saw the request cut short")
    assert b.requests == []
    assert any("inside the body" in e for e in b.errors), b.errors
    wait_for(lambda: p.server(0).in_flight == 0, what="in-flight count released")
