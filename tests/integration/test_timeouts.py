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


# ---------------------------------------------------------------- whose timeout runs
#
# A timeout belongs to the side that is slow: while the proxy itself stops
# reading one side (to bound its buffers), that side's timer must not run.


def test_slow_client_download_does_not_run_the_servers_read_timeout(backends, proxy) -> None:
    import socket

    (b,) = backends(1)
    p = proxy(make_config([b.address], timeouts={"read": "300ms"}))
    size = 8 << 20
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(b"GET /big?size=%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % size)
        data = sock.recv(4096)
        time.sleep(1.0)  # not reading: the proxy stops reading the server
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    assert len(data) - data.index(b"\r\n\r\n") - 4 == size
    # ...and the healthy server was not counted as failed.
    assert p.server(0).passive.fails == 0


def test_slow_server_upload_does_not_run_the_clients_body_timeout(proxy) -> None:
    import socket
    import threading

    # An upstream that stops reading the body for 1 s, then reads it all.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def upstream() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            got = len(head) - head.index(b"\r\n\r\n") - 4
            time.sleep(1.0)
            while got < length:
                data = conn.recv(1 << 20)
                if not data:
                    return
                got += len(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    p = proxy(make_config([address], timeouts={"client_body": "300ms"}))
    body = bytes(8 << 20)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
            % len(body)
        )
        sock.sendall(body)
        answer = sock.recv(4096)
    thread.join(10)
    listener.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
