"""The downstream HTTP/1.x connection: an asyncio Protocol driving httptools.

Parsing state, as seen from this connection::

    IDLE  --first byte-->  HEAD  --head complete-->  BODY  --message complete-->  IDLE
                                 \\--(no body)---------------------------------/

Deadlines (one lazily re-armed timer per connection, see ``deadline.py``):

* IDLE with no request in progress: ``keepalive`` -> close quietly;
* HEAD: ``client_header`` -> 408 and close;
* BODY: ``client_body`` between two reads -> 408 (or a broken connection
  when the response already started);
* while the client does not read what we write: ``client_send`` -> close.

Requests are answered strictly in order.  The request whose response is being
produced is ``_active``; pipelined requests that arrive meanwhile wait in
``_queue`` (their bodies buffered) and reading stops until their turn, so a
pipelining client costs at most one read buffer.  Refused requests become
``LocalResponse`` entries of the same queue, so an error answer never
overtakes an earlier response.

Reading is paused for several independent reasons (a bitmask): a pipelined
request is waiting, an upstream connection is being opened, the upstream
does not accept body bytes fast enough.  It resumes when none is left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol, cast

import httptools

from phoenix_lb.deadline import Deadline
from phoenix_lb.http.path import normalize_path
from phoenix_lb.http.proxy_protocol import ProxyProtocolError, feed_proxy_header
from phoenix_lb.http.request import RequestError, RequestHeadBuilder
from phoenix_lb.server.admission import admit
from phoenix_lb.server.downstream import Downstream
from phoenix_lb.server.exchange import Exchange, LocalResponse

if TYPE_CHECKING:
    from phoenix_lb.server.context import ListenerContext

# Write buffer high-water mark: above it the upstream read side is paused,
# so a slow client costs at most this much buffered response per connection.
WRITE_HIGH_WATER: Final = 64 * 1024

# Final one by one: the compiled build inlines them (a tuple unpacking
# would leave a dictionary lookup at every use).
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
# How long to keep discarding input after our final response (nginx's
# lingering_timeout is 5s).
_LINGER_SECONDS: Final = 2.0
# Reasons reading is paused (bits).
_PIPELINE: Final = 4
# Waiting for the upstream's answer to a WebSocket upgrade.
_SWITCHING: Final = 32
# Pause reasons owned by an exchange (see exchange.py).
_EXCHANGE_REASONS: Final = 1 | 2 | 16 | 32
_STOPPED: Final = 8


class _Responder(Protocol):
    """An entry of the response queue: an Exchange or a LocalResponse."""

    finished: bool
    body_done: bool

    def start(self) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_body_end(self) -> None: ...

    def on_client_lost(self) -> None: ...

    def on_client_timeout(self) -> None: ...

    def on_client_writable(self, writable: bool) -> None: ...

    def on_client_error(self, status: int) -> None: ...


def _no_write(data: object) -> None:
    """Stands in for transport.write before the connection is made."""


class _ParserCallbacks:
    """What httptools calls: the request line and fields go straight to the builder."""

    __slots__ = ("on_body", "on_header", "on_headers_complete", "on_message_complete", "on_url")

    def __init__(self, conn: H1Connection) -> None:
        self.on_url = conn.builder.on_url
        self.on_header = conn.builder.on_header
        self.on_headers_complete = conn.on_headers_complete
        self.on_body = conn.on_body
        self.on_message_complete = conn.on_message_complete


class H1Connection(Downstream):
    """One client connection speaking HTTP/1.0 or HTTP/1.1."""

    __slots__ = (
        "_active",
        "_first_chunk",
        "_head_bytes",
        "_on_close",
        "_parsing",
        "_paused",
        "_phase",
        "_proxy_buf",
        "_queue",
        "_write",
        "_writelines",
        "builder",
        "lingering",
        "parser",
    )

    def __init__(self, ctx: ListenerContext, on_close: Callable[[], None] | None = None) -> None:
        # The deadline needs the bound method, the base class the deadline.
        super().__init__(ctx, Deadline(ctx.loop, self._on_deadline))
        #: told when the connection is gone (the runtime counts connections)
        self._on_close = on_close
        self.builder = RequestHeadBuilder(ctx.max_headers, ctx.max_header_bytes)
        self.parser = httptools.HttpRequestParser(_ParserCallbacks(self))
        #: bytes of a PROXY protocol header still incomplete (None: none expected)
        # (On TLS listeners the runtime reads it before the handshake.)
        self._proxy_buf: bytes | None = b"" if ctx.proxy_protocol and not ctx.tls else None
        #: discarding input before closing, so our last response is not lost
        self.lingering = False
        self._phase = _IDLE
        self._paused = 0
        self._active: _Responder | None = None
        self._parsing: _Responder | None = None
        self._queue: deque[_Responder] | None = None
        self._head_bytes = 0
        self._write: Callable[[bytes], object] = _no_write
        self._writelines: Callable[[list[bytes]], object] = _no_write
        #: the read that started the current request (its request line)
        self._first_chunk: bytes | None = None

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._write = transport.write
        self._writelines = transport.writelines
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0].encode() if peer else b"unix"
        self.client_ip = self.proxied_ip or self.peer_ip
        if self.ctx.tls:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.tls_version = str(ssl_object.version() or "")
        ctx = self.ctx
        ctx.connections.add(self)
        ctx.accepted += 1
        self.deadline.set_after(ctx.client_header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        self.ctx.bytes_in += len(data)
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.from_client(data)
            return
        if self._proxy_buf is not None:
            rest = self._proxy_header(data)
            if not rest:
                return
            data = rest
        phase = self._phase
        if phase == _IDLE:
            # The first bytes of a request (pipelined requests after the
            # first one in a read are counted from their next read on).
            self._phase = _HEAD
            self._head_bytes = len(data)
            self._first_chunk = data
        elif phase == _HEAD:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            error = exc.__context__
            if isinstance(error, RequestError):
                self._refuse(error.status)
            else:
                raise
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data[exc.args[0] :])
        except httptools.HttpParserError:
            self._refuse(400)
        else:
            if self._phase == _HEAD:
                # The head is still incomplete after this read.
                if self._head_bytes > self.ctx.max_header_bytes:
                    self._refuse(431)
                elif phase == _IDLE and self._active is None:
                    self.deadline.set_after(self.ctx.client_header_timeout)
            elif phase == _BODY and self._phase == _BODY and not self._paused & _EXCHANGE_REASONS:
                # (Paused for the upstream: its send timeout rules meanwhile.)
                self.deadline.set_after(self.ctx.client_body_timeout)

    def eof_received(self) -> bool | None:
        # A client half-close after a complete request still gets its
        # response (some health probes do this); then we close.  A close in
        # the middle of a body ends the request at once: the body can never
        # complete, and the upstream connection should not wait for it.
        self.close_after = True
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.client_eof()
            return True
        if self._active is None or self._phase == _BODY:
            return None
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.deadline.cancel()
        self.ctx.connections.discard(self)
        on_close = self._on_close
        if on_close is not None:
            self._on_close = None
            on_close()
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.close()
        active = self._active
        self._active = None
        self._parsing = None
        if active is not None:
            active.on_client_lost()
        if self._queue:
            self._queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.deadline.set_after(self.ctx.client_send_timeout)
        if self._active is not None:
            self._active.on_client_writable(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        tunnel = self.tunnel
        if tunnel is not None:
            # The tunnel's idle clock runs again (clearing it would leave an
            # idle tunnel open for good).
            self.deadline.set_after(tunnel.idle)
        elif self._phase == _BODY:
            if not self._paused & _EXCHANGE_REASONS:
                self.deadline.set_after(self.ctx.client_body_timeout)
            else:
                self.deadline.clear()
        elif self._active is None and self._phase == _IDLE:
            # The response is out: the keep-alive idle time starts now.
            self.deadline.set_after(self.ctx.keepalive_timeout)
        else:
            self.deadline.clear()
        if self._active is not None:
            self._active.on_client_writable(True)

    # -- httptools callbacks ---------------------------------------------------

    def on_headers_complete(self) -> None:
        self._head_bytes = 0
        if self.closing:
            return
        parser = self.parser
        ctx = self.ctx
        ctx.requests += 1
        method = parser.get_method()
        # httptools formats the version as a new string per call; when the
        # request line is at hand, read it from there (llhttp validated it).
        version = ""
        src = self._first_chunk
        if src is not None:
            self._first_chunk = None
            # llhttp accepted "METHOD SP target SP HTTP/x.y CRLF"; check the
            # bytes where the version must be rather than searching for it.
            pos = len(method) + len(self.builder.url) + 2
            token = src[pos : pos + 10]
            if token == b"HTTP/1.1\r\n" and src[: len(method)] == method:
                version = "1.1"
            elif token == b"HTTP/1.0\r\n" and src[: len(method)] == method:
                version = "1.0"
        if not version:
            version = parser.get_http_version()
        head = self.builder.finish(method, version)
        upgrade: bytes | None = None
        if parser.should_upgrade():
            if head.has_body:
                raise RequestError(400, "Upgrade requests with a body are not supported")
            if (
                head.method == b"GET"
                and head.upgrade is not None
                and head.upgrade.strip().lower() == b"websocket"
            ):
                upgrade = b"websocket"
        if head.has_body:
            self._phase = _BODY
            self.deadline.set_after(ctx.client_body_timeout)
        elif self._active is None:
            # Until the response is done only upstream deadlines run.
            self.deadline.when = 0.0
        responder: _Responder
        length = head.content_length
        if length is not None and ctx.max_body and length > ctx.max_body:
            # Refused before reading the body (a client using
            # Expect: 100-continue never sends it).
            responder = LocalResponse(self, 413, close=True, body_done=False)
            responder.head = head
        else:
            router = ctx.router
            route = router.catch_all
            if route is None:
                path = head.path
                # '%', '.' or "//" may hide a prefix; find(), as `in` with a
                # bytes operand first tries (and fails) it as an integer.
                if 37 in path or 46 in path or path.find(b"//") >= 0:
                    path = normalize_path(path)
                route = router.route(path)
            if route is None:
                responder = LocalResponse(
                    self,
                    404,
                    close=not head.keep_alive,
                    head_only=head.method == b"HEAD",
                    body_done=not head.has_body,
                )
                responder.head = head
            else:
                responder = Exchange(self, head, route.group, self.client_ip)
                if not route.log:
                    responder.log = False
                if not route.plain or ctx.realip is not None:
                    # Decided when the request's turn comes (_begin): a
                    # client's own pipelined requests must not compete for
                    # its concurrency slots or spend its rate ahead of time.
                    responder.route = route
        if upgrade is not None and isinstance(responder, Exchange):
            responder.upgrade = upgrade
            responder.keep_alive = False
        self._parsing = responder
        if self._active is None:
            self._begin(responder)
        else:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(responder)
            self.pause_reading(_PIPELINE)

    def on_body(self, body: bytes) -> None:
        parsing = self._parsing
        if parsing is not None:
            parsing.on_body(body)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        parsing = self._parsing
        self._parsing = None
        if parsing is not None:
            parsing.on_body_end()
            if parsing is self._active and not self.write_paused:
                # Waiting for the response: the upstream's deadlines rule.
                self.deadline.clear()

    def _begin(self, responder: _Responder) -> None:
        """Start ``responder`` (its turn has come), after its route's admission."""
        if isinstance(responder, Exchange):
            route = responder.route
            if route is not None:
                responder.route = None
                refusal = admit(responder, route)
                if refusal is not None:
                    # Refused: the body (if any) is read and dropped.
                    refusal.body_done = responder.body_done
                    refusal.head = responder.head
                    refusal.log = responder.log
                    if self._parsing is responder:
                        self._parsing = refusal
                    self._active = refusal
                    refusal.start()
                    return
        self._active = responder
        responder.start()

    def _proxy_header(self, data: bytes) -> bytes:
        """Consume the PROXY protocol header; the bytes after it, or b"" (need more/closed)."""
        try:
            complete, info, rest = feed_proxy_header(self._proxy_buf or b"", data)
        except ProxyProtocolError as exc:
            self.ctx.logger.info(
                "listener %s: bad PROXY protocol header from %s: %s",
                self.ctx.name,
                self.peer_ip.decode(),
                exc,
            )
            self.abort()
            return b""
        if not complete:
            self._proxy_buf = rest
            return b""
        self._proxy_buf = None
        realip = self.ctx.realip
        if info is not None and realip is not None and realip.trusted(self.peer_ip):
            self.client_ip = info.src_addr
        return rest

    # -- used by exchanges --------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""
        if not self.closing:
            self._write(data)

    def write_many(self, data: list[bytes]) -> None:
        """Send several buffers to the client in one system call."""
        if not self.closing:
            if len(data) == 1:
                self._write(data[0])
            else:
                self._writelines(data)

    def pause_reading(self, reason: int) -> None:
        """Stop reading from the client for ``reason`` (until resume_reading)."""
        if not self._paused and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self._paused |= reason
        if reason & _EXCHANGE_REASONS and self._phase == _BODY and not self.write_paused:
            # We stopped reading the body (the upstream is slow to take it, or
            # not connected yet): the upstream's send/connect timeouts rule,
            # not the client's client_body.
            self.deadline.clear()

    def resume_reading(self, reason: int) -> None:
        """``reason`` no longer holds; read again when no other reason does."""
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self.closing:
                self.transport.resume_reading()
                if self._phase == _BODY and not self.write_paused:
                    self.deadline.set_after(self.ctx.client_body_timeout)

    def exchange_done(self, responder: object, keep_alive: bool) -> None:
        """The active response is complete; start the next one or close."""
        done = self._active
        if done is None or responder is not done:
            return
        self._active = None
        if self._paused & _EXCHANGE_REASONS:
            # Whatever the finished exchange paused for is over.
            self.resume_reading(self._paused & _EXCHANGE_REASONS)
        transport = self.transport
        if transport is None or self.closing:
            return
        if not keep_alive or self.close_after or (self._paused & _STOPPED and not self._queue):
            self._close(linger=not done.body_done or bool(self._paused & _STOPPED))
            return
        queue = self._queue
        if queue:
            following = queue.popleft()
            if not queue:
                self.resume_reading(_PIPELINE)
            self._begin(following)
            return
        if self._phase == _IDLE:
            if not self.write_paused:
                # (Still writing the response out: client_send rules until
                # resume_writing starts the idle time, as nginx does.)
                self.deadline.set_after(self.ctx.keepalive_timeout)
        elif self._phase == _HEAD:
            self.deadline.set_after(self.ctx.client_header_timeout)

    def abort(self) -> None:
        """Break the connection at once (a response cannot be completed)."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def stub_state(self) -> int:
        """nginx stub_status state: 0 reading a request, 1 writing a response, 2 waiting."""
        if self._active is not None:
            return 1
        return 2 if self._phase == _IDLE else 0

    def close_idle(self) -> bool:
        """Close if no request is in progress (graceful shutdown); True if closed."""
        self.close_after = True
        if self._active is None and self._phase == _IDLE:
            self._close()
            return True
        return False

    # -- internals ---------------------------------------------------------------

    def _close(self, *, linger: bool = False) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        if linger and transport.can_write_eof():
            # The client may still be sending a body we will not read.
            # Closing now would make the kernel answer with RST, which can
            # destroy our response before the client reads it (nginx's
            # lingering_close): send FIN, discard input for a moment.
            self.lingering = True
            self.closing = True
            transport.write_eof()
            self._paused = 0
            transport.resume_reading()
            self.deadline.set_after(_LINGER_SECONDS)
            return
        self.closing = True
        self.deadline.cancel()
        transport.close()

    def _refuse(self, status: int) -> None:
        """The request cannot be parsed or is refused: answer in turn, then close."""
        self.pause_reading(_STOPPED)
        self._phase = _IDLE
        parsing = self._parsing
        self._parsing = None
        if parsing is not None:
            # The head was accepted but the body is broken.
            if parsing is self._active or parsing.finished:
                parsing.on_client_error(status)
                return
            if self._queue is not None and parsing in self._queue:
                self._queue.remove(parsing)
        responder = LocalResponse(self, status, close=True, body_done=False)
        if self._active is None:
            self._active = responder
            responder.start()
        else:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(responder)

    def _after_upgrade(self, rest: bytes) -> None:
        """The parser stopped after an upgrade request: ``rest`` followed it."""
        responder = self._active
        queue = self._queue
        if queue:
            responder = queue[-1]
        if (
            isinstance(responder, Exchange)
            and responder.upgrade is not None
            and not responder.finished
        ):
            # WebSocket: until the upstream answers, these bytes belong to
            # nobody yet (the new protocol after a 101; after a refusal the
            # connection closes).  Reading waits.
            responder.early += rest
            self.pause_reading(_SWITCHING)
            return
        # An upgrade we do not forward (h2c...) was proxied as a plain
        # request: what follows is the next request, for a fresh parser.
        self.parser = httptools.HttpRequestParser(_ParserCallbacks(self))
        self._phase = _IDLE
        if rest:
            self.data_received(rest)

    def abort_after_flush(self) -> None:
        """Close once what is buffered is written (a tunnel ended)."""
        self.closing = True
        self.deadline.cancel()
        if self.transport is not None:
            self.transport.close()

    def _on_deadline(self) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.timed_out()
            return
        if self.lingering:
            self.lingering = False
            if self.transport is not None:
                self.transport.close()
            return
        if self.closing:
            return
        if self.write_paused:
            self.ctx.logger.info("client %s stopped reading; closing", self.client_ip.decode())
            self.abort()
            return
        phase = self._phase
        if phase == _BODY and self._parsing is not None:
            self._parsing.on_client_timeout()
            return
        if self._active is not None:
            return
        if phase == _HEAD:
            self._refuse(408)
        else:
            self._close()
