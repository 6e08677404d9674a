"""WebSocket through the proxy, with a real client and server (the websockets library)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.integration.helpers import make_config, request_bytes
from tests.support.rawhttp import parse_responses, send_raw


class EchoServer:
    """A WebSocket echo server in its own thread and loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.open = 0
        self.seen_headers: list[dict[str, str]] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self._stop: asyncio.Future[None] | None = None

    async def _handler(self, ws: ServerConnection) -> None:
        self.open += 1
        self.seen_headers.append(
            {k.lower(): v for k, v in ws.request.headers.raw_items()} if ws.request else {}
        )
        try:
            async for message in ws:
                if message == "whoami":
                    await ws.send(self.name)
                elif message == "close-please":
                    await ws.close()
                else:
                    await ws.send(message)
        except Exception:  # the client went away: fine for an echo server
            pass
        finally:
            self.open -= 1
            self.closed.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self._stop = self.loop.create_future()
            async with serve(self._handler, "127.0.0.1", 0, max_size=None) as server:
                self.port = next(iter(server.sockets)).getsockname()[1]
                self.ready.set()
                await self._stop

        self.loop.run_until_complete(main())
        self.loop.close()

    def start(self) -> EchoServer:
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set_result, None)
        self.thread.join(5)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def echo_servers() -> Iterator[Callable[[int], list[EchoServer]]]:
    started: list[EchoServer] = []

    def start(n: int) -> list[EchoServer]:
        servers = [EchoServer(f"ws{len(started) + i}").start() for i in range(n)]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_echo_through_the_proxy(proxy: Any, echo_servers: Any) -> None:
    (ws,) = echo_servers(1)
    p = proxy(make_config([ws.address]))

    async def client() -> None:
        async with connect(f"ws://127.0.0.1:{p.port}/chat", max_size=None) as c:
            await c.send("hello")
            assert await c.recv() == "hello"
            await c.send(b"\x00\x01binary")
            assert await c.recv() == b"\x00\x01binary"
            big = b"x" * (4 * 1024 * 1024)  # several write buffers: flow control
            await c.send(big)
            assert await c.recv() == big

    run(client())
    headers = ws.seen_headers[0]
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert headers["x-real-ip"] == "127.0.0.1"
    assert "sec-websocket-key" in headers


def test_open_tunnel_counts_as_in_flight_for_least_conn(proxy: Any, echo_servers: Any) -> None:
    servers = echo_servers(2)
    p = proxy(make_config([s.address for s in servers]))

    async def client() -> None:
        async with connect(f"ws://127.0.0.1:{p.port}/") as c:
            await c.send("whoami")
            first = await c.recv()
            assert sum(s.in_flight for s in p.group().servers) == 1
            # least_conn: the next connections go to the other server first.
            async with connect(f"ws://127.0.0.1:{p.port}/") as d:
                await d.send("whoami")
                assert await d.recv() != first
        for _ in range(50):
            if sum(s.in_flight for s in p.group().servers) == 0:
                break
            await asyncio.sleep(0.05)
        assert sum(s.in_flight for s in p.group().servers) == 0

    run(client())


def test_server_close_reaches_the_client_and_client_close_reaches_the_server(
    proxy: Any, echo_servers: Any
) -> None:
    (ws,) = echo_servers(1)
    p = proxy(make_config([ws.address]))

    async def client() -> None:
        async with connect(f"ws://127.0.0.1:{p.port}/") as c:
            await c.send("close-please")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(c.recv(), 5)
        async with connect(f"ws://127.0.0.1:{p.port}/") as c:
            await c.send("ping")
            assert await c.recv() == "ping"
        assert ws.closed.wait(5)

    run(client())


def test_idle_tunnel_is_closed(proxy: Any, echo_servers: Any) -> None:
    (ws,) = echo_servers(1)
    p = proxy(make_config([ws.address], timeouts={"tunnel_idle": "500ms"}))

    async def client() -> None:
        async with connect(f"ws://127.0.0.1:{p.port}/", ping_interval=None) as c:
            await c.send("a")
            assert await c.recv() == "a"
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(c.recv(), 5)
            assert 0.3 < time.monotonic() - started < 3

    run(client())


def test_tunnel_idle_timeout_survives_a_slow_reader(proxy: Any, echo_servers: Any) -> None:
    (ws,) = echo_servers(1)
    p = proxy(make_config([ws.address], timeouts={"tunnel_idle": "500ms"}))
    size = 8 << 20
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", p.port))
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        # One binary frame of 8 MiB (mask key 0: the payload as is), echoed
        # back while this client does not read: the proxy has to stop writing.
        frame = bytes([0x82, 0xFF]) + size.to_bytes(8, "big") + bytes(4)
        sock.sendall(frame + bytes(size))
        time.sleep(1.0)
        received = len(head) - head.index(b"\r\n\r\n") - 4
        while received < size + 10:
            chunk = sock.recv(1 << 20)
            assert chunk, "closed before the echo arrived"
            received += len(chunk)
        # Everything read, nothing more flows: closed after tunnel_idle.
        started = time.monotonic()
        assert sock.recv(16) == b""
        assert time.monotonic() - started < 3


def test_upgrade_refused_by_the_upstream_is_relayed_and_closes(backends: Any, proxy: Any) -> None:
    # A plain HTTP backend ignores the Upgrade and answers 200.
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    data = request_bytes(
        "GET",
        "/",
        headers=[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    raw = send_raw(p.port, data, read_timeout=2.0)
    (response,) = parse_responses(raw)
    assert response.status == 200
    assert response.header("connection") == "close"
    # The backend was asked to upgrade (the client did ask).
    assert b.requests[0].header("upgrade") == "websocket"


def test_other_upgrades_are_not_forwarded(backends: Any, proxy: Any) -> None:
    (b,) = backends(1)
    p = proxy(make_config([b.address]))
    data = request_bytes(
        "GET", "/", headers=[("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings")]
    ) + request_bytes("GET", "/second", headers=[("Connection", "close")])
    responses = parse_responses(send_raw(p.port, data, read_timeout=2.0))
    assert [r.status for r in responses] == [200, 200]
    assert b.requests[0].header("upgrade") is None
    assert b.requests[1].target == "/second"


def test_sticky_cookie_applies_to_websocket(proxy: Any, echo_servers: Any, tmp_path: Any) -> None:
    servers = echo_servers(3)
    key = tmp_path / "sticky.key"
    key.write_text("k" * 32)
    key.chmod(0o600)
    config = make_config(
        [s.address for s in servers], sticky={"cookie": "SERVERID", "secret_file": str(key)}
    )
    p = proxy(config)

    async def client() -> None:
        async with connect(f"ws://127.0.0.1:{p.port}/") as c:
            cookie = c.response.headers["Set-Cookie"].split(";")[0]
            await c.send("whoami")
            pinned = await c.recv()
        for _ in range(5):
            async with connect(
                f"ws://127.0.0.1:{p.port}/", additional_headers={"Cookie": cookie}
            ) as c:
                await c.send("whoami")
                assert await c.recv() == pinned

    run(client())


def test_plain_socket_sees_101_and_raw_bytes(proxy: Any, echo_servers: Any) -> None:
    (ws,) = echo_servers(1)
    p = proxy(make_config([ws.address]))
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Upgrade: websocket" in head and b"Connection: upgrade" in head
        assert b"Server: phoenix-lb" in head
        # A masked text frame "hi" (RFC 6455), answered unmasked.
        sock.sendall(bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2]))
        reply = sock.recv(16)
        assert reply == bytes([0x81, 0x02]) + b"hi"
