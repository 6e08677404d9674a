"""Next-server retry, passive ejection, 502/503 (issue 2, "Failures").

nginx ``proxy_next_upstream error timeout``: a connect error or a reset
before any response byte moves the request to the next server, at most once
per server; a request whose bytes may have reached a server is re-sent only
if its method is idempotent.  ``max_fails`` failures within ``fail_timeout``
take a server out for ``fail_timeout``; with every server out the proxy
answers 503 with Retry-After.
"""

from __future__ import annotations

import time

import pytest

from tests.support import IncompleteMessage, RawClient, RefusingPort, parse_responses

from .helpers import make_config, request_bytes, wait_for


def test_refused_server_is_skipped_and_ejected(backends, proxy) -> None:
    (good,) = backends(1)
    with RefusingPort() as refusing:
        p = proxy(
            make_config(
                [refusing.address, good.address],
                server_defaults={"max_fails": 2, "fail_timeout": "30s"},
            )
        )
        with RawClient(p.port) as client:
            for _ in range(10):
                resp = client.request("GET", "/")
                assert resp.status == 200
                assert resp.header("X-Backend") == "b0"
        bad = p.server(0)
        assert bad.passive.fails == 2
        assert not bad.is_available(time.monotonic())
        assert p.server(1).passive.fails == 0
    assert len(good.requests) == 10


def test_refused_server_retry_applies_to_post_too(backends, proxy) -> None:
    """A refused connect sent nothing: even a POST goes to the next server."""
    (good,) = backends(1)
    with RefusingPort() as refusing:
        p = proxy(make_config([refusing.address, good.address], server_defaults={"max_fails": 0}))
        for i in range(4):
            with RawClient(p.port) as client:
                resp = client.request("POST", "/echo", body=f"body{i}".encode())
                assert resp.status == 200
                assert resp.json()["body_len"] == 5
    assert [r.body for r in good.requests] == [b"body0", b"body1", b"body2", b"body3"]


def test_all_servers_refusing_gets_502(proxy) -> None:
    with RefusingPort() as r1, RefusingPort() as r2:
        p = proxy(make_config([r1.address, r2.address], server_defaults={"max_fails": 0}))
        for _ in range(3):
            with RawClient(p.port) as client:
                start = time.monotonic()
                resp = client.request("GET", "/")
                assert resp.status == 502
                assert time.monotonic() - start < 1.0
                # The proxy's own error page: short, plain, no internal address.
                assert len(resp.body) < 200
                for port in (r1.port, r2.port):
                    assert str(port).encode() not in resp.raw_head + resp.body
                assert b"127.0.0.1" not in resp.raw_head + resp.body
        assert [p.server(i).in_flight for i in range(2)] == [0, 0]


def test_all_servers_ejected_gets_503_with_retry_after(proxy) -> None:
    with RefusingPort() as r1, RefusingPort() as r2:
        p = proxy(
            make_config(
                [r1.address, r2.address],
                server_defaults={"max_fails": 1, "fail_timeout": "30s"},
            )
        )
        with RawClient(p.port) as client:
            first = client.request("GET", "/")
            assert first.status == 502  # both tried, both refused
            now = time.monotonic()
            assert all(not p.server(i).is_available(now) for i in range(2))
            assert [p.server(i).passive.fails for i in range(2)] == [1, 1]
        for _ in range(2):
            with RawClient(p.port) as client:
                resp = client.request("GET", "/")
                assert resp.status == 503
                retry_after = resp.header("Retry-After")
                assert retry_after is not None and retry_after.isdigit()
                assert b"127.0.0.1" not in resp.raw_head + resp.body


def test_server_comes_back_after_fail_timeout(backends, proxy) -> None:
    (b,) = backends(1)
    port = b.port
    b.stop()
    p = proxy(make_config([b.address], server_defaults={"max_fails": 1, "fail_timeout": "1s"}))
    with RawClient(p.port) as client:
        assert client.request("GET", "/").status == 502
        assert client.request("GET", "/").status == 503
    b.start()
    assert b.port == port
    deadline = time.monotonic() + 5
    status = 0
    while time.monotonic() < deadline:
        with RawClient(p.port) as client:
            status = client.request("GET", "/").status
        if status == 200:
            break
        assert status == 503
        time.sleep(0.1)
    assert status == 200


def test_reset_before_response_get_is_retried(backends, proxy) -> None:
    resetting, good = backends(2)
    resetting.fail_mode = "reset"
    p = proxy(make_config([resetting.address, good.address], server_defaults={"max_fails": 0}))
    with RawClient(p.port) as client:
        resp = client.request("GET", "/echo?x=1")
        assert resp.status == 200
        assert resp.json()["backend"] == "b1"
    assert [r.target for r in resetting.requests] == ["/echo?x=1"]
    assert [r.target for r in good.requests] == ["/echo?x=1"]


def test_reset_before_response_post_is_not_retried(backends, proxy) -> None:
    resetting, good = backends(2)
    resetting.fail_mode = "reset"
    p = proxy(make_config([resetting.address, good.address], server_defaults={"max_fails": 0}))
    with RawClient(p.port) as client:
        resp = client.request("POST", "/echo", body=b"once")
        assert resp.status == 502
        assert b"127.0.0.1" not in resp.raw_head + resp.body
    assert [r.body for r in resetting.requests] == [b"once"]
    assert good.requests == []


def test_close_before_response_post_is_not_retried(backends, proxy) -> None:
    closing, good = backends(2)
    closing.fail_mode = "close"
    p = proxy(make_config([closing.address, good.address], server_defaults={"max_fails": 0}))
    with RawClient(p.port) as client:
        resp = client.request("POST", "/echo", body=b"once")
        assert resp.status == 502
    assert len(closing.requests) == 1
    assert good.requests == []


def test_reset_on_every_server_gets_502_each_tried_once(backends, proxy) -> None:
    bs = backends(3)
    for b in bs:
        b.fail_mode = "reset"
    p = proxy(make_config([b.address for b in bs], server_defaults={"max_fails": 0}))
    with RawClient(p.port) as client:
        resp = client.request("GET", "/")
    assert resp.status == 502
    assert [len(b.requests) for b in bs] == [1, 1, 1]


def test_reset_counts_as_failure_and_ejects(backends, proxy) -> None:
    resetting, good = backends(2)
    resetting.fail_mode = "reset"
    p = proxy(
        make_config(
            [resetting.address, good.address],
            server_defaults={"max_fails": 1, "fail_timeout": "30s"},
        )
    )
    with RawClient(p.port) as client:
        for _ in range(6):
            assert client.request("GET", "/").status == 200
    assert len(resetting.requests) == 1
    assert len(good.requests) == 6
    assert p.server(0).passive.fails == 1


def test_upstream_503_is_relayed_not_retried(backends, proxy) -> None:
    """An HTTP error answer is a response, not a failure to connect (proxy_next_upstream)."""
    failing, good = backends(2)
    failing.fail_mode = "503"
    p = proxy(make_config([failing.address, good.address]))
    with RawClient(p.port) as client:
        resp = client.request("GET", "/")
        assert resp.status == 503
        assert resp.header("X-Backend") == "b0"
    assert len(good.requests) == 0


@pytest.mark.parametrize("chunked", [0, 1])
def test_backend_killed_mid_stream_truncates_client_response(backends, proxy, chunked: int) -> None:
    (b, other) = backends(2)
    p = proxy(make_config([b.address, other.address], server_defaults={"max_fails": 0}))
    size = 64 * 1024 * 1024
    with RawClient(p.port, timeout=10) as client:
        client.send(request_bytes("GET", f"/big?size={size}&chunked={chunked}"))
        got = client.recv(timeout=5)
        assert got.startswith(b"HTTP/1.1 200 ")
        b.kill_connections(rst=True)
        rest = client.read_until_closed(timeout=10)
    data = got + rest
    # The client sees an incomplete response, never a complete shorter one.
    with pytest.raises(IncompleteMessage):
        parse_responses(data, keep_body=False)
    assert len(data) < size
    wait_for(lambda: p.server(0).in_flight == 0, what="in-flight released")
    # The proxy still serves.
    with RawClient(p.port) as client:
        assert client.request("GET", "/").status == 200


def test_backend_stopped_between_requests(backends, proxy) -> None:
    """A server that went away: its pooled connections fail, the next server answers."""
    b0, b1 = backends(2)
    p = proxy(make_config([b0.address, b1.address], server_defaults={"max_fails": 1}))
    with RawClient(p.port) as client:
        for _ in range(4):
            assert client.request("GET", "/").status == 200
        b0.stop()
        for _ in range(6):
            resp = client.request("GET", "/")
            assert resp.status == 200
            assert resp.header("X-Backend") == "b1"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_client_connection_usable_after_502(proxy, method: str) -> None:
    """A 502 for a request (with or without a body) leaves the client connection in sync."""
    with RefusingPort() as refusing:
        p = proxy(make_config([refusing.address], server_defaults={"max_fails": 0}))
        with RawClient(p.port, timeout=3) as client:
            body = b"payload" if method == "POST" else b""
            for _ in range(3):
                resp = client.request(method, "/", body=body)
                assert resp.status == 502
                if not resp.keep_alive:  # closing after an error is allowed, if said
                    assert client.is_closed(timeout=2.0)
                    break
