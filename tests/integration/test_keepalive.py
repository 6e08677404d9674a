"""Keep-alive on both sides: the upstream pool and the client connection (issue 2, "Data path").

Upstream reuse is counted where it cannot lie: the backends'
``connections_accepted`` (and the pool's ``opened`` for cross-checking).
"""

from __future__ import annotations

import socket

import pytest

from tests.support import RawClient, parse_responses, send_raw

from .helpers import make_config, request_bytes, wait_for

# ---------------------------------------------------------------- upstream pool


def test_upstream_connections_are_reused(backends, proxy) -> None:
    bs = backends(2)
    p = proxy(make_config([b.address for b in bs], keepalive=8))
    with RawClient(p.port) as client:
        for _ in range(200):
            assert client.request("GET", "/").status == 200
    assert [len(b.requests) for b in bs] == [100, 100]
    for i, b in enumerate(bs):
        assert b.connections_accepted <= 2, (b.name, b.connections_accepted)
        assert p.server(i).pool.opened == b.connections_accepted
        # Every request of a backend came over the connection(s) it accepted.
        assert len({r.conn_id for r in b.requests}) <= 2


def test_upstream_reuse_across_client_connections(backends, proxy) -> None:
    """Pooled connections outlive the client connection that opened them."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], keepalive=8))
    for _ in range(20):
        with RawClient(p.port) as client:
            assert client.request("GET", "/").status == 200
    assert len(b.requests) == 20
    assert b.connections_accepted == 1


def test_keepalive_zero_opens_a_connection_per_request(backends, proxy) -> None:
    bs = backends(2)
    p = proxy(make_config([b.address for b in bs], keepalive=0))
    with RawClient(p.port) as client:
        for _ in range(20):
            assert client.request("GET", "/").status == 200
    for i, b in enumerate(bs):
        assert len(b.requests) == 10
        assert b.connections_accepted == 10
        assert p.server(i).pool.opened == 10
        assert len({r.conn_id for r in b.requests}) == 10
    # Nothing left idle in the pool.
    assert all(len(p.server(i).pool.idle) == 0 for i in range(2))


def test_upstream_connection_close_is_not_reused(backends, proxy) -> None:
    """A response with Connection: close retires that upstream connection."""
    (b,) = backends(1)
    b.max_requests_per_connection = 3
    p = proxy(make_config([b.address], keepalive=8))
    with RawClient(p.port) as client:
        for _ in range(9):
            resp = client.request("GET", "/")
            assert resp.status == 200
            # The upstream's Connection: close is hop-by-hop: the client
            # connection stays open.
            assert resp.keep_alive
    assert len(b.requests) == 9
    assert b.connections_accepted == 3
    assert [len([r for r in b.requests if r.conn_id == c]) for c in (1, 2, 3)] == [3, 3, 3]


def test_stale_pooled_connection_is_retried_transparently(backends, proxy) -> None:
    """The backend closes idle connections; the next request still succeeds."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], keepalive=8))
    with RawClient(p.port) as client:
        assert client.request("GET", "/").status == 200
        wait_for(lambda: len(p.server(0).pool.idle) == 1, what="connection back in the pool")
        assert b.kill_connections() == 1
        # The proxy may or may not notice the FIN before the next request.
        for _ in range(5):
            resp = client.request("GET", "/echo")
            assert resp.status == 200
    assert len(b.requests) == 6
    assert b.errors == []


def test_reset_pooled_connection_is_dropped_before_next_post(backends, proxy) -> None:
    """Killed (RST) idle connection, then a POST: it is not lost without an answer."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], keepalive=8))
    with RawClient(p.port) as client:
        assert client.request("GET", "/").status == 200
        wait_for(lambda: len(p.server(0).pool.idle) == 1, what="connection back in the pool")
        b.kill_connections(rst=True)
        wait_for(lambda: len(p.server(0).pool.idle) == 0, what="dead connection dropped")
        resp = client.request("POST", "/echo", body=b"payload")
        assert resp.status == 200
        assert resp.json()["body_len"] == 7
    assert [r.method for r in b.requests] == ["GET", "POST"]


# ---------------------------------------------------------------- client side


def test_client_connection_serves_many_requests(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        for i in range(100):
            resp = client.request("GET", f"/echo?i={i}")
            assert resp.status == 200
            assert resp.keep_alive
            assert resp.header("Connection") is None
            assert resp.json()["target"] == f"/echo?i={i}"
        assert not client.is_closed(timeout=0.1)
    assert len(b.requests) == 100


def test_connection_close_closes_after_response(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        assert client.request("GET", "/").status == 200
        resp = client.request("GET", "/", headers=[("Connection", "close")])
        assert resp.status == 200
        assert resp.text == "b0\n"
        assert "close" in (resp.header("Connection") or "").lower()
        assert client.is_closed(timeout=2.0)
        assert client.buffered == b""


def test_http10_without_keepalive_closes(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        client.send(request_bytes("GET", "/", version="HTTP/1.0"))
        resp = client.read_response()
        assert resp.status == 200
        assert resp.text == "b0\n"
        assert "keep-alive" not in (resp.header("Connection") or "").lower()
        assert client.is_closed(timeout=2.0)


def test_http10_without_host_is_served(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    resp = parse_responses(send_raw(p.port, b"GET /echo HTTP/1.0\r\n\r\n"))[0]
    assert resp.status == 200
    got = b.requests[0]
    # The upstream request is HTTP/1.1, so it needs a Host; one was supplied.
    assert got.header("Host")


def test_http10_keepalive_stays_open(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        for _ in range(3):
            client.send(
                request_bytes(
                    "GET", "/", version="HTTP/1.0", headers=[("Connection", "keep-alive")]
                )
            )
            resp = client.read_response()
            assert resp.status == 200
            assert resp.text == "b0\n"
            assert (resp.header("Connection") or "").lower() == "keep-alive"
            assert resp.header("Content-Length") == "3"
        assert not client.is_closed(timeout=0.2)


def test_http10_keepalive_chunked_upstream_is_close_delimited(backends, proxy) -> None:
    """An HTTP/1.0 client cannot get chunked coding: a chunked upstream body ends with close."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        client.send(
            request_bytes(
                "GET",
                "/drip?count=3&interval=0&size=10&chunked=1",
                version="HTTP/1.0",
                headers=[("Connection", "keep-alive")],
            )
        )
        data = client.read_until_closed(timeout=5)
    resp = parse_responses(data)[0]
    assert resp.status == 200
    assert resp.framing == "close"
    assert resp.header("Transfer-Encoding") is None
    assert resp.body_len == 30


def test_client_keepalive_timeout_closes_idle_connection(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], timeouts={"keepalive": "300ms"}))
    with RawClient(p.port) as client:
        assert client.request("GET", "/").status == 200
        assert client.is_closed(timeout=3.0)
        assert client.buffered == b""


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_half_close_after_request_still_gets_response(backends, proxy, version: str) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
        sock.sendall(request_bytes("GET", "/slow?delay=0.1", version=version))
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    resp = parse_responses(b"".join(chunks))[0]
    assert resp.status == 200
    assert resp.text == "slow\n"


@pytest.mark.parametrize("keepalive", [0, 8])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_post_with_body_then_more_requests_on_same_connection(
    backends, proxy, keepalive: int, framing: str
) -> None:
    """Head and body in one write while an upstream connection is opened: the client
    connection stays usable afterwards."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], keepalive=keepalive))
    with RawClient(p.port, timeout=3) as client:
        for i in range(3):
            if framing == "content-length":
                client.send(request_bytes("POST", f"/echo?i={i}", body=b"hello"))
            else:
                te = [("Transfer-Encoding", "chunked")]
                client.send(
                    request_bytes("POST", f"/echo?i={i}", headers=te) + b"5\r\nhello\r\n0\r\n\r\n"
                )
            resp = client.read_response()
            assert resp.status == 200
            assert resp.json()["target"] == f"/echo?i={i}"
            assert client.request("GET", f"/echo?get={i}").status == 200
    assert [r.body for r in b.requests if r.method == "POST"] == [b"hello"] * 3
