"""``Expect: 100-continue`` (RFC 9110 10.1.1; issue 2, "Data path")."""

from __future__ import annotations

import time

from tests.support import RawClient

from .helpers import assert_nothing_reached, make_config, request_bytes


def test_expect_continue_gets_100_then_200(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    body = b"x" * 10000
    with RawClient(p.port) as client:
        client.send(
            request_bytes(
                "POST",
                "/echo",
                headers=[("Expect", "100-continue"), ("Content-Length", str(len(body)))],
            )
        )
        interim = client.read_response(include_interim=True, timeout=3)
        assert interim.status == 100
        assert interim.body == b""
        client.send(body)
        resp = client.read_response()
        assert resp.status == 200
        info = resp.json()
        assert info["body_len"] == len(body)
        # Exactly one interim response (the backend's own 100, if any, is not relayed).
        assert client.buffered == b""
        # The connection stays usable.
        assert client.request("GET", "/").status == 200
    got = b.requests[0]
    assert got.body == body


def test_expect_continue_chunked(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        client.send(
            request_bytes(
                "POST",
                "/echo",
                headers=[("Expect", "100-continue"), ("Transfer-Encoding", "chunked")],
            )
        )
        assert client.read_response(include_interim=True, timeout=3).status == 100
        client.send(b"5\r\nhello\r\n0\r\n\r\n")
        resp = client.read_response()
    assert resp.status == 200
    assert b.requests[0].body == b"hello"


def test_expect_continue_over_max_body_gets_413_without_100(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], limits={"max_body": "1k"}))
    with RawClient(p.port) as client:
        client.send(
            request_bytes(
                "POST", "/echo", headers=[("Expect", "100-continue"), ("Content-Length", "5000")]
            )
        )
        start = time.monotonic()
        resp = client.read_response(include_interim=True, timeout=3)
        assert time.monotonic() - start < 1.0
        assert resp.status == 413
        assert not resp.keep_alive
        # No 100 afterwards either, and the connection is closed.
        assert client.is_closed(timeout=3.0)
        assert client.buffered == b""
    assert_nothing_reached(b)
    assert b.connections_accepted == 0


def test_expect_continue_without_body_needs_no_100(backends, proxy) -> None:
    """Expect with no body (Content-Length: 0) is answered directly."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        client.send(
            request_bytes(
                "POST", "/echo", headers=[("Expect", "100-continue"), ("Content-Length", "0")]
            )
        )
        resp = client.read_response(include_interim=True, timeout=3)
    assert resp.status == 200


def test_expect_continue_client_that_does_not_wait(backends, proxy) -> None:
    """A client may send the body without waiting for 100: still one final response."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        client.send(
            request_bytes("POST", "/echo", headers=[("Expect", "100-continue")], body=b"hello")
        )
        resp = client.read_response()
        assert resp.status == 200
        assert resp.json()["body_len"] == 5
        assert client.request("GET", "/").status == 200
        assert client.buffered == b""


def test_unsupported_expectation_gets_417(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        client.send(request_bytes("GET", "/", headers=[("Expect", "something-else")]))
        resp = client.read_response()
    assert resp.status == 417
    assert_nothing_reached(b)
