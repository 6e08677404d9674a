"""HEAD through the proxy: the head of a GET, no body, connections stay in sync (RFC 9110 9.3.2)."""

from __future__ import annotations

import pytest

from tests.support import RawClient

from .helpers import make_config, request_bytes


@pytest.mark.parametrize("keepalive", [8, 0])
def test_head_keeps_content_length_and_sends_no_body(backends, proxy, keepalive: int) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], keepalive=keepalive))
    with RawClient(p.port) as client:
        head = client.request("HEAD", "/big?size=12345")
        assert head.status == 200
        assert head.header("Content-Length") == "12345"
        assert head.body == b""
        # The next response on the connection starts right away: no stray body bytes.
        resp = client.request("GET", "/echo?after-head")
        assert resp.status == 200
        assert resp.json()["target"] == "/echo?after-head"
        assert client.buffered == b""
    assert [r.method for r in b.requests] == ["HEAD", "GET"]


def test_head_then_get_reuse_the_upstream_connection(backends, proxy) -> None:
    """A pooled upstream connection that carried a HEAD is still in sync for the next GET."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], keepalive=8))
    with RawClient(p.port) as client:
        for i in range(5):
            head = client.request("HEAD", "/big?size=5000")
            assert head.header("Content-Length") == "5000"
            get = client.request("GET", f"/echo?i={i}")
            assert get.json()["target"] == f"/echo?i={i}"
    assert b.connections_accepted == 1
    assert len({r.conn_id for r in b.requests}) == 1
    assert b.errors == []


def test_head_of_chunked_resource(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        head = client.request("HEAD", "/big?size=70000&chunked=1")
        assert head.status == 200
        assert head.body == b""
        get = client.request("GET", "/big?size=70000&chunked=1")
        assert get.status == 200
        assert get.body_len == 70000
        assert client.request("GET", "/").status == 200


def test_pipelined_head_and_get(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        client.send(
            request_bytes("HEAD", "/big?size=100")
            + request_bytes("GET", "/big?size=100")
            + request_bytes("HEAD", "/")
            + request_bytes("GET", "/")
        )
        r1 = client.read_response(head_only=True)
        r2 = client.read_response()
        r3 = client.read_response(head_only=True)
        r4 = client.read_response()
    assert r1.header("Content-Length") == "100" and r1.body == b""
    assert r2.body_len == 100
    assert r3.header("Content-Length") == "3" and r3.body == b""
    assert r4.text == "b0\n"


def test_head_of_204_and_error_statuses(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        r204 = client.request("GET", "/204")
        assert r204.status == 204
        assert r204.body == b""
        assert r204.header("Transfer-Encoding") is None
        r404 = client.request("HEAD", "/status/404")
        assert r404.status == 404
        assert r404.body == b""
        assert client.request("GET", "/").status == 200
