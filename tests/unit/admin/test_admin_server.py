"""admin/server.py: requests as bytes in, answers as bytes out, through a fake transport.

No socket: an ``AdminConnection`` gets a transport that records what is
written and reports the local and peer addresses a real one would.  These
cover what the pure rules (test_origin.py) cannot see: how the bytes become
the facts they decide on (repeated fields, absolute-form targets, the HTTP
version, the address the connection arrived on) and that a refused request
never reaches its handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from phoenix_lb.admin.origin import AdminHosts
from phoenix_lb.admin.server import (
    AdminConnection,
    AdminRequest,
    AdminResponse,
    AdminRouter,
    AdminServer,
)


class FakeTransport(asyncio.Transport):
    def __init__(self, sockname: tuple[str, int]) -> None:
        super().__init__()
        self.extra = {"sockname": sockname, "peername": ("127.0.0.1", 40000)}
        self.out = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Scene:
    """An admin server with one GET and one POST route that record their calls."""

    def __init__(self, *, bind: str = "127.0.0.1", allowed_hosts: tuple[str, ...] = ()) -> None:
        self.calls: list[AdminRequest] = []
        router = AdminRouter()
        router.add("GET", "/health", self.handler, public=True)
        router.add("POST", "/api/upstreams/", self.handler, prefix=True)
        self.server = AdminServer(router, allowed_hosts=allowed_hosts)
        self.bind = bind

    async def handler(self, request: AdminRequest) -> AdminResponse:
        self.calls.append(request)
        return AdminResponse.json({"ok": True})

    def exchange(self, raw: bytes, *, local: tuple[str, int] = ("127.0.0.1", 9000)) -> bytes:
        async def run() -> bytes:
            # What start() does, without binding a socket.
            self.server.hosts = AdminHosts(self.bind, self.server.allowed_hosts)
            connection = AdminConnection(self.server)
            transport = FakeTransport(local)
            connection.connection_made(transport)
            connection.data_received(raw)
            for _ in range(10):
                await asyncio.sleep(0)
            connection.connection_lost(None)
            return bytes(transport.out)

        return asyncio.run(run())


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


DRAIN = b"POST /api/upstreams/app/servers/0/drain HTTP/1.1\r\n"


def test_a_curl_style_post_reaches_its_handler() -> None:
    scene = Scene()
    answer = scene.exchange(DRAIN + b"Host: 127.0.0.1:9000\r\nContent-Length: 0\r\n\r\n")
    assert status(answer) == 200
    assert len(scene.calls) == 1
    assert scene.calls[0].http_version == "1.1" and scene.calls[0].authority is None


def test_a_cross_site_post_never_reaches_its_handler(caplog: pytest.LogCaptureFixture) -> None:
    scene = Scene()
    request = (
        DRAIN + b"Host: 127.0.0.1:9000\r\nOrigin: http://evil.example\r\n"
        b"Sec-Fetch-Site: cross-site\r\nContent-Length: 0\r\n\r\n"
    )
    with caplog.at_level(logging.WARNING, logger="phoenix_lb"):
        answer = scene.exchange(request)
    assert status(answer) == 403
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in answer
    assert body(answer).startswith(b"cross-site request refused")
    assert scene.calls == []
    assert "refused POST '/api/upstreams/app/servers/0/drain'" in caplog.text


def test_a_rebound_host_gets_421_on_any_route() -> None:
    scene = Scene()
    answer = scene.exchange(b"GET /health HTTP/1.1\r\nHost: evil.example:9000\r\n\r\n")
    assert status(answer) == 421
    assert b"'evil.example:9000' is not a name of this admin listener" in body(answer)
    # Also where there is no route: nothing is said about what exists.
    answer = scene.exchange(b"GET /nothing HTTP/1.1\r\nHost: evil.example:9000\r\n\r\n")
    assert status(answer) == 421
    assert scene.calls == []


def test_a_second_host_field_is_not_ignored() -> None:
    scene = Scene()
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nHost: evil.example:9000\r\n\r\n"
    assert status(scene.exchange(request)) == 421
    request = b"GET /health HTTP/1.1\r\nHost: evil.example:9000\r\nHost: 127.0.0.1:9000\r\n\r\n"
    assert status(scene.exchange(request)) == 421


def test_a_second_origin_field_is_not_ignored() -> None:
    scene = Scene()
    request = (
        DRAIN + b"Host: 127.0.0.1:9000\r\nOrigin: http://evil.example\r\n"
        b"Origin: http://127.0.0.1:9000\r\nContent-Length: 0\r\n\r\n"
    )
    assert status(scene.exchange(request)) == 403
    assert scene.calls == []


def test_http_1_0_without_host_is_served_and_http_1_1_gets_400() -> None:
    scene = Scene()
    assert status(scene.exchange(b"GET /health HTTP/1.0\r\n\r\n")) == 200
    answer = scene.exchange(b"GET /health HTTP/1.1\r\n\r\n")
    assert status(answer) == 400
    assert body(answer) == b"HTTP/1.1 requests need a Host header\n"


def test_an_absolute_form_target_is_checked_instead_of_host() -> None:
    scene = Scene()
    request = b"GET http://evil.example:9000/health HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\r\n"
    assert status(scene.exchange(request)) == 421
    request = b"GET http://[::1]:9000/health HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    assert status(scene.exchange(request)) == 200
    assert scene.calls[-1].authority == "[::1]:9000"
    # No path at all: "/", not a crash.
    request = b"GET http://127.0.0.1:9000 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\r\n"
    assert status(scene.exchange(request)) == 404


def test_a_wildcard_bind_answers_to_addresses_and_its_names_only() -> None:
    scene = Scene(bind="0.0.0.0")
    request = b"GET /health HTTP/1.1\r\nHost: 10.0.0.5:9000\r\n\r\n"
    assert status(scene.exchange(request, local=("10.0.0.5", 9000))) == 200
    assert status(scene.exchange(request, local=("10.0.0.6", 9000))) == 200  # NAT
    named = b"GET /health HTTP/1.1\r\nHost: lb.example.net:9000\r\n\r\n"
    assert status(scene.exchange(named, local=("10.0.0.5", 9000))) == 421


def test_allowed_hosts_reach_the_check() -> None:
    scene = Scene(allowed_hosts=("lb1.example.net:9000",))
    request = b"GET /health HTTP/1.1\r\nHost: lb1.example.net:9000\r\n\r\n"
    assert status(scene.exchange(request)) == 200


def test_each_refusal_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    scene = Scene()
    request = b"GET /health HTTP/1.1\r\nHost: evil.example:9000\r\n\r\n"
    with caplog.at_level(logging.WARNING, logger="phoenix_lb"):
        for _ in range(3):
            scene.exchange(request)
    assert caplog.text.count("evil.example:9000") == 1
