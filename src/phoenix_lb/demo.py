"""``phoenix-lb demo``: the balancer in front of three built-in demo backends.

The backends stand in for ``master_orchestrator`` servers: each answers with
its name, echoes what the balancer told it about the client, and has
``/health``.  Nothing to configure; everything stops on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
from typing import cast

import httptools

from phoenix_lb.config.schema import PhoenixConfig


class DemoBackend(asyncio.Protocol):
    """A tiny keep-alive HTTP/1.1 server answering with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        path = httptools.parse_url(self.url).path.decode("latin-1")
        if path == "/health":
            body = b"ok\n"
            ctype = b"text/plain"
        else:
            body = (
                json.dumps(
                    {
                        "server": self.name,
                        "path": path,
                        "client": self.headers.get("x-real-ip"),
                        "x_forwarded_for": self.headers.get("x-forwarded-for"),
                        "x_forwarded_proto": self.headers.get("x-forwarded-proto"),
                    },
                    indent=1,
                ).encode()
                + b"\n"
            )
            ctype = b"application/json"
        keep_alive = self.parser.should_keep_alive()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            ctype,
            len(body),
            b"" if keep_alive else b"Connection: close\r\n",
        )
        if self.transport is not None:
            self.transport.write(head + (b"" if self.parser.get_method() == b"HEAD" else body))
            if not keep_alive:
                self.transport.close()


async def start_demo_backends(count: int = 3) -> list[tuple[str, asyncio.Server]]:
    """Start ``count`` demo backends on 127.0.0.1 ephemeral ports."""
    loop = asyncio.get_running_loop()
    started = []
    for i in range(count):
        name = f"master-orchestrator-{i}"
        server = await loop.create_server(
            lambda name=name: DemoBackend(name),  # type: ignore[misc]
            "127.0.0.1",
            0,
        )
        port = server.sockets[0].getsockname()[1]
        started.append((f"127.0.0.1:{port}", server))
    return started


def demo_config(backends: list[str], bind: str, admin: str | None = None) -> PhoenixConfig:
    """The demo's configuration: one listener, least_conn over the backends."""
    return PhoenixConfig.model_validate(
        {
            "listeners": [
                {
                    "name": "demo",
                    "bind": [bind],
                    "routes": [{"path": "/", "upstream": "master_orchestrator"}],
                }
            ],
            "upstreams": {
                "master_orchestrator": {
                    "balance": "least_conn",
                    "keepalive": 16,
                    "servers": [
                        {"address": address, "max_fails": 3, "fail_timeout": "30s"}
                        for address in backends
                    ],
                }
            },
            "access_log": {"path": "stdout", "format": "combined"},
            "admin": {"bind": admin} if admin else None,
            "shutdown_timeout": "5s",
        }
    )
