"""Upstream timeouts: read -> 504, connect -> next server or 504 (issue 2, "Failures")."""

from __future__ import annotations

import time

from tests.support import BlackholePort, RawClient, SilentPort

from .helpers import make_config, request_bytes


def _timed_get(port: int, target: str = "/", timeout: float = 5.0):
    with RawClient(port, timeout=timeout) as client:
        start = time.monotonic()
        resp = client.request("GET", target)
        return resp, time.monotonic() - start


def test_read_timeout_hanging_backend_gets_504(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], timeouts={"read": "1s"}))
    resp, elapsed = _timed_get(p.port, "/hang")
    assert resp.status == 504
    assert 0.9 <= elapsed <= 2.0, elapsed
    # A read timeout is not retried: a slow request sent elsewhere would run twice.
    assert len(b.requests) == 1
    assert p.server(0).in_flight == 0


def test_read_timeout_is_not_retried_on_another_server(backends, proxy) -> None:
    slow, other = backends(2)
    p = proxy(make_config([slow.address, other.address], timeouts={"read": "1s"}))
    resp, elapsed = _timed_get(p.port, "/hang")
    assert resp.status == 504
    assert elapsed <= 2.0
    assert len(slow.requests) == 1
    assert other.requests == []


def test_read_timeout_silent_port_gets_504(proxy) -> None:
    with SilentPort() as silent:
        p = proxy(make_config([silent.address], timeouts={"read": "1s", "connect": "5s"}))
        resp, elapsed = _timed_get(p.port)
    assert resp.status == 504
    assert 0.9 <= elapsed <= 2.0, elapsed


def test_read_timeout_is_between_reads_not_total(backends, proxy) -> None:
    """A response trickling in with pauses shorter than ``read`` is not cut off."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], timeouts={"read": "1s"}))
    resp, elapsed = _timed_get(p.port, "/drip?count=4&interval=0.6&size=8")
    assert resp.status == 200
    assert resp.body_len == 32
    assert elapsed >= 1.7


def test_read_timeout_mid_body_breaks_the_client_connection(backends, proxy) -> None:
    """After the head went out, a stalled upstream can only end in a truncated response."""
    (b,) = backends(1)
    p = proxy(make_config([b.address], timeouts={"read": "500ms"}))
    with RawClient(p.port, timeout=5) as client:
        client.send(request_bytes("GET", "/drip?count=2&interval=3&size=10&chunked=1"))
        start = time.monotonic()
        data = client.read_until_closed(timeout=5)
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 200 ")
    # Never the terminating chunk: the client must see the response as incomplete.
    assert not data.endswith(b"0\r\n\r\n")
    assert elapsed <= 2.0


def test_slow_response_within_read_timeout_succeeds(backends, proxy) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address], timeouts={"read": "1s"}))
    resp, _ = _timed_get(p.port, "/slow?delay=0.5")
    assert resp.status == 200
    assert resp.text == "slow\n"


def test_connect_timeout_single_server_gets_504(proxy) -> None:
    with BlackholePort() as hole:
        p = proxy(make_config([hole.address], timeouts={"connect": "1s"}))
        resp, elapsed = _timed_get(p.port)
    assert resp.status == 504
    assert 0.9 <= elapsed <= 2.5, elapsed


def test_connect_timeout_moves_to_next_server(backends, proxy) -> None:
    (good,) = backends(1)
    with BlackholePort() as hole:
        p = proxy(
            make_config(
                [hole.address, good.address],
                timeouts={"connect": "1s"},
                server_defaults={"max_fails": 1, "fail_timeout": "30s"},
            )
        )
        with RawClient(p.port, timeout=10) as client:
            start = time.monotonic()
            first = client.request("GET", "/")
            first_elapsed = time.monotonic() - start
            assert first.status == 200
            assert first.header("X-Backend") == "b0"
            # Round robin picked the black hole first; the retry cost one connect timeout.
            assert 0.9 <= first_elapsed <= 2.5, first_elapsed
            # The black hole is now out: the rest go straight to the good server.
            start = time.monotonic()
            for _ in range(5):
                assert client.request("GET", "/").status == 200
            assert time.monotonic() - start < 1.0
        assert p.server(0).passive.fails == 1
        assert not p.server(0).is_available(time.monotonic())
    assert len(good.requests) == 6
