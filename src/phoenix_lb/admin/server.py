"""The admin listener: a small HTTP/1.1 server for /metrics, /health, /status and /api.

It runs in the control plane (the single process, or the master), on
loopback by default.  Requests are tiny and rare, so clarity wins over speed
here: one request at a time per connection, bodies up to 64 KiB, handlers
are coroutines returning an ``AdminResponse``.

Before any route: the Host must name this listener and a state-changing
request must not come from another site's page (DNS rebinding and CSRF
through the operator's browser; the rules and their reasons are in
``admin/origin.py``).  Refusals are plain text: 400, 421 or 403.

Authentication: when a token is configured, every request except
``GET /health`` (keepalived and load-balancer probes) and the static status
page assets must carry ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httptools

from phoenix_lb.admin.origin import AdminHosts, Refusal, check_request
from phoenix_lb.http.status import status_line

log = logging.getLogger("phoenix_lb")

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
# Refused requests are logged once per distinct reason, up to this many: an
# attacking page can send thousands, the operator needs to see one.
MAX_REFUSALS_LOGGED = 64


@dataclass
class AdminRequest:
    """One request to the admin listener."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    peer: str
    #: "1.0" or "1.1"
    http_version: str = "1.1"
    #: the request target's authority when it came in absolute form
    #: (``GET http://host:port/path``), which then stands for Host
    authority: str | None = None

    def json(self) -> Any:
        """The body as JSON (empty body: None)."""
        return json.loads(self.body) if self.body else None


@dataclass
class AdminResponse:
    """What a handler answers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: object, status: int = 200) -> AdminResponse:
        return cls(
            status,
            json.dumps(data, indent=1, sort_keys=True).encode() + b"\n",
            "application/json",
        )

    @classmethod
    def text(cls, text: str, status: int = 200) -> AdminResponse:
        return cls(status, text.encode())


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    #: matched by prefix (the rest of the path is the handler's business)
    prefix: bool = False
    public: bool = False


class AdminRouter:
    """Method + path (exact or prefix) -> handler."""

    def __init__(self, token: str | None = None) -> None:
        self.routes: list[Route] = []
        self.token = token

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        prefix: bool = False,
        public: bool = False,
    ) -> None:
        self.routes.append(Route(method, path, handler, prefix, public))

    async def dispatch(self, request: AdminRequest) -> AdminResponse:
        allowed: list[str] = []
        for route in self.routes:
            matches = (
                request.path.startswith(route.path) if route.prefix else request.path == route.path
            )
            if not matches:
                continue
            if route.method != request.method and not (
                route.method == "GET" and request.method == "HEAD"
            ):
                allowed.append(route.method)
                continue
            if not route.public and not self._authorized(request):
                return AdminResponse.json(
                    {"error": "authentication required (Authorization: Bearer <token>)"}, 401
                )
            try:
                return await route.handler(request)
            except Exception:  # a handler bug must not take the control plane down
                log.exception("admin: %s %s failed", request.method, request.path)
                return AdminResponse.json({"error": "internal error"}, 500)
        if allowed:
            response = AdminResponse.json({"error": "method not allowed"}, 405)
            response.headers["Allow"] = ", ".join(sorted(set(allowed)))
            return response
        return AdminResponse.json({"error": "not found"}, 404)

    def _authorized(self, request: AdminRequest) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "")
        if not given.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(given[7:].strip().encode(), self.token.encode())


class AdminConnection(asyncio.Protocol):
    """One admin client connection."""

    def __init__(self, server: AdminServer) -> None:
        self.server = server
        self.router = server.router
        self.connections = server.connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        #: the (address, port) this connection arrived on
        self.local: tuple[str, int] = ("", 0)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.busy = False
        self.queue: list[AdminRequest] = []
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "unix"
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, tuple):
            self.local = (str(sockname[0]), int(sockname[1]))
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(AdminResponse.text("bad request\n", 400), close=True)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEAD:
            raise ValueError("url too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.size += len(name) + len(value)
        if self.size > MAX_HEAD:
            raise ValueError("head too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        # Repeated fields are joined (RFC 9110 section 5.3) rather than the
        # last one winning: a second Host, Origin or Authorization then
        # fails its check instead of hiding the first.
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY + MAX_HEAD:
            raise ValueError("body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self.url)
        authority = None
        if parsed.host is not None:
            host = parsed.host.decode("latin-1")
            authority = f"[{host}]" if ":" in host else host
            if parsed.port is not None:
                authority += f":{parsed.port}"
        request = AdminRequest(
            method=self.parser.get_method().decode(),
            path=(parsed.path or b"/").decode("latin-1"),
            query=(parsed.query or b"").decode("latin-1"),
            headers=self.headers,
            body=b"".join(self.body),
            peer=self.peer,
            http_version=self.parser.get_http_version(),
            authority=authority,
        )
        self.keep_alive = self.parser.should_keep_alive()
        self.queue.append(request)
        if not self.busy:
            asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        self.busy = True
        try:
            while self.queue and self.transport is not None:
                request = self.queue.pop(0)
                refusal = check_request(
                    self.server.hosts,
                    self.local,
                    request.method,
                    request.headers,
                    http_version=request.http_version,
                    authority=request.authority,
                )
                if refusal is None:
                    response = await self.router.dispatch(request)
                else:
                    self.server.note_refusal(request, refusal)
                    response = AdminResponse.text(refusal.reason + "\n", refusal.status)
                if request.method == "HEAD":
                    response = AdminResponse(
                        response.status, b"", response.content_type, response.headers
                    )
                    self._send(response, close=not self.keep_alive, length=len(response.body))
                else:
                    self._send(response, close=not self.keep_alive)
        finally:
            self.busy = False

    def _send(self, response: AdminResponse, *, close: bool, length: int | None = None) -> None:
        transport = self.transport
        if transport is None:
            return
        headers = {
            "Content-Type": response.content_type,
            "Content-Length": str(len(response.body) if length is None else length),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            **response.headers,
        }
        if close:
            headers["Connection"] = "close"
        head = (
            status_line(response.status)
            + b"Server: phoenix-lb\r\n"
            + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        )
        transport.write(head + b"\r\n" + response.body)
        if close:
            transport.close()


class AdminServer:
    """The listening side of the admin listener.

    ``allowed_hosts`` (``admin.allowed_hosts``) are names it answers to besides
    its own (see ``admin/origin.py``).
    """

    def __init__(self, router: AdminRouter, *, allowed_hosts: Sequence[str] = ()) -> None:
        self.router = router
        self.allowed_hosts = tuple(allowed_hosts)
        self.hosts = AdminHosts("127.0.0.1", self.allowed_hosts)
        self.server: asyncio.Server | None = None
        self.connections: set[AdminConnection] = set()
        self._refusals_logged: set[tuple[int, str]] = set()

    async def start(self, host: str, port: int) -> None:
        self.hosts = AdminHosts(host, self.allowed_hosts)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: AdminConnection(self),
            host,
            port,
            reuse_address=True,
        )

    def note_refusal(self, request: AdminRequest, refusal: Refusal) -> None:
        """Log a refused request, once per distinct reason (bounded)."""
        key = (refusal.status, refusal.reason)
        if key in self._refusals_logged or len(self._refusals_logged) >= MAX_REFUSALS_LOGGED:
            return
        self._refusals_logged.add(key)
        log.warning(
            "admin: refused %s %r from %s with %d: %s",
            request.method,
            request.path[:100],
            request.peer,
            refusal.status,
            refusal.reason,
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        name = self.server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.close()
            self.server = None
