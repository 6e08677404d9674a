"""Header policy in both directions (issue 2, "Headers"; RFC 9110 7.6.1).

Toward the backend: hop-by-hop fields removed (Connection, Keep-Alive,
Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade and every field
named in Connection), X-Real-IP set, X-Forwarded-For appended,
X-Forwarded-Proto set, Host kept.  Toward the client: hop-by-hop fields
removed, no version in Server, error pages that name no internal address.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from tests.support import RawClient, RefusingPort, parse_responses, send_raw

from .helpers import chunked, make_config, request_bytes

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}


def _names(headers) -> set[str]:
    return {n.lower() for n, _ in headers}


def _connection_tokens(headers) -> set[str]:
    out: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            out |= {t.strip().lower() for t in value.split(",") if t.strip()}
    return out


def _assert_no_hop_by_hop_forwarded(headers) -> None:
    names = _names(headers)
    # The proxy may say Connection: keep-alive/close for its own connection,
    # but never relay the client's list (or anything it names).
    assert _connection_tokens(headers) <= {"keep-alive", "close"}, headers
    assert not (names & (HOP_BY_HOP - {"connection"})), headers


# ---------------------------------------------------------------- toward the backend


def test_hop_by_hop_request_headers_removed(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    headers = [
        ("Connection", "close, X-Secret"),
        ("Connection", "X-Other-Secret"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "websocket"),
        ("X-Secret", "do not forward"),
        ("X-Other-Secret", "nor this"),
        ("X-Kept", "yes"),
    ]
    with RawClient(p.port) as client:
        resp = client.request("GET", "/echo", headers=headers)
        assert resp.status == 200
        assert client.is_closed(timeout=2.0)  # the client asked for close
    got = b.requests[0]
    _assert_no_hop_by_hop_forwarded(got.headers)
    names = _names(got.headers)
    assert "x-secret" not in names
    assert "x-other-secret" not in names
    assert got.header("X-Kept") == "yes"
    # The backend saw the request as sent by the proxy: bytes, not just parsed fields.
    assert b"X-Secret" not in got.raw_head
    assert b"websocket" not in got.raw_head


def test_connection_upgrade_request_is_proxied_without_upgrade(backends, proxy) -> None:
    """An upgrade other than WebSocket (h2c) is not forwarded; the request is plain HTTP.

    (WebSocket upgrades are forwarded: tests/integration/test_websocket.py.)
    """
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        resp = client.request(
            "GET", "/echo", headers=[("Connection", "Upgrade"), ("Upgrade", "h2c")]
        )
        assert resp.status == 200
        assert resp.header("Upgrade") is None
        # The connection is still HTTP/1.1.
        assert client.request("GET", "/").status == 200
    got = b.requests[0]
    _assert_no_hop_by_hop_forwarded(got.headers)


def test_transfer_encoding_is_reframed_not_relayed(backends, proxy) -> None:
    """Transfer-Encoding is hop-by-hop framing: the backend sees exactly one framing."""
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        client.send(
            request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")])
            + chunked(b"hello world", piece=4)
        )
        resp = client.read_response()
    assert resp.status == 200
    got = b.requests[0]
    assert got.body == b"hello world"
    te = got.header_all("Transfer-Encoding")
    cl = got.header_all("Content-Length")
    assert (te == ["chunked"] and cl == []) or (te == [] and cl == ["11"]), got.headers


def test_client_trailers_are_not_forwarded_as_headers(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        client.send(
            request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")])
            + b"5\r\nhello\r\n0\r\nX-Trailer-Field: sneaky\r\n\r\n"
        )
        resp = client.read_response()
    assert resp.status == 200
    got = b.requests[0]
    assert got.body == b"hello"
    assert got.header("X-Trailer-Field") is None


def test_x_real_ip_and_forwarded_headers(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        assert client.request("GET", "/echo").status == 200
    got = b.requests[0]
    assert got.header_all("X-Real-IP") == ["127.0.0.1"]
    assert got.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert got.header_all("X-Forwarded-Proto") == ["http"]


def test_x_forwarded_for_is_appended(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        one = [("X-Forwarded-For", "1.2.3.4")]
        two = [("X-Forwarded-For", "1.2.3.4, 10.0.0.1"), ("X-Forwarded-For", "5.6.7.8")]
        assert client.request("GET", "/echo", headers=one).status == 200
        assert client.request("GET", "/echo", headers=two).status == 200
    first, second = b.requests
    assert first.header_all("X-Forwarded-For") == ["1.2.3.4, 127.0.0.1"]
    assert second.header_all("X-Forwarded-For") == ["1.2.3.4, 10.0.0.1, 5.6.7.8, 127.0.0.1"]


def test_client_cannot_spoof_real_ip_or_proto(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        resp = client.request(
            "GET",
            "/echo",
            headers=[("X-Real-IP", "6.6.6.6"), ("X-Forwarded-Proto", "https")],
        )
        assert resp.status == 200
    got = b.requests[0]
    assert got.header_all("X-Real-IP") == ["127.0.0.1"]
    assert got.header_all("X-Forwarded-Proto") == ["http"]


@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "EXAMPLE.org", "[::1]:81"])
def test_host_is_kept(backends, proxy, host: str) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        assert client.request("GET", "/echo", host=host).status == 200
    assert b.requests[0].header_all("Host") == [host]


def test_absolute_form_target_becomes_origin_form(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    data = (
        b"GET http://example.com:81/echo?q=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"
    )
    resp = parse_responses(send_raw(p.port, data))[0]
    assert resp.status == 200
    got = b.requests[0]
    assert got.target == "/echo?q=1"
    # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host.
    assert got.header_all("Host") == ["example.com:81"]


def test_request_headers_keep_order_case_and_duplicates(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    headers = [("X-B", "2"), ("x-a", "1"), ("X-Dup", "one"), ("X-Dup", "two"), ("Cookie", "a=1")]
    with RawClient(p.port) as client:
        assert client.request("GET", "/echo", headers=headers).status == 200
    got = b.requests[0]
    names = [n for n in got.header_names() if n.lower() in {"x-b", "x-a", "x-dup"}]
    assert names == ["X-B", "x-a", "X-Dup", "X-Dup"]
    assert got.header_all("X-Dup") == ["one", "two"]
    assert got.header("Cookie") == "a=1"


# ---------------------------------------------------------------- toward the client


def _headers_route(fields: list[tuple[str, str]]) -> str:
    return "/headers?" + "&".join(f"{quote(n)}={quote(v, safe='')}" for n, v in fields)


def test_hop_by_hop_response_headers_removed(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    target = _headers_route(
        [
            ("Connection", "X-Hop"),
            ("X-Hop", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("TE", "trailers"),
            ("X-Ok", "1"),
        ]
    )
    with RawClient(p.port) as client:
        resp = client.request("GET", target)
        assert resp.status == 200
        assert resp.text == "headers\n"
        _assert_no_hop_by_hop_forwarded(resp.headers)
        assert resp.header("X-Hop") is None
        assert resp.header("X-Ok") == "1"
        # The connection survives and stays in sync.
        assert client.request("GET", "/").text == "b0\n"


def test_server_header_has_no_version(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    with RawClient(p.port) as client:
        plain = client.request("GET", "/")
        branded = client.request("GET", _headers_route([("Server", "nginx/1.25.3 (Debian)")]))
    for resp in (plain, branded):
        servers = resp.header_all("Server")
        assert len(servers) <= 1, servers
        for value in servers:
            assert not re.search(r"\d", value), value
    assert b"1.25.3" not in branded.raw_head


def test_response_headers_relayed_with_duplicates(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    target = _headers_route([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Custom", "v")])
    with RawClient(p.port) as client:
        resp = client.request("GET", target)
    assert resp.header_all("Set-Cookie") == ["a=1", "b=2"]
    assert resp.header("X-Custom") == "v"
    assert len(resp.header_all("Date")) == 1


def _assert_no_internal_address(resp, *ports: int) -> None:
    blob = resp.raw_head + resp.body
    assert b"127.0.0.1" not in blob, blob
    for port in ports:
        assert str(port).encode() not in blob, blob
    for value in resp.header_all("Server"):
        assert not re.search(r"\d", value)
    assert not re.search(rb"phoenix-lb/\d|version", resp.body, re.IGNORECASE)


def test_error_pages_name_no_internal_address(backends, proxy) -> None:
    (b,) = backends(1)
    b.fail_mode = "reset"
    with RefusingPort() as refusing:
        p = proxy(make_config([refusing.address], server_defaults={"max_fails": 0}))
        with RawClient(p.port) as client:
            resp = client.request("GET", "/")
        assert resp.status == 502
        _assert_no_internal_address(resp, refusing.port, p.port)
    p2 = proxy(make_config([b.address], server_defaults={"max_fails": 0}))
    with RawClient(p2.port) as client:
        resp = client.request("GET", "/")
    assert resp.status == 502
    _assert_no_internal_address(resp, b.port, p2.port)
    resp = parse_responses(send_raw(p2.port, b"GET / HTTP/1.1\r\n\r\n"))[0]
    assert resp.status == 400
    _assert_no_internal_address(resp, b.port, p2.port)
