"""The client side of one upstream HTTP/1.1 connection (an asyncio Protocol).

It parses responses with httptools and hands events to the exchange that
currently owns it (a ``ResponseSink``).  It knows the response framing rules
llhttp cannot know by itself:

* a response to HEAD has no body whatever its Content-Length says (llhttp
  has no way to be told from Python), so the head completes the response
  and a fresh parser takes the next one;
* 1xx interim responses are dropped (we answer ``Expect`` ourselves);
* a body without Content-Length or chunked ends when the server closes.

Completion is reported after ``feed_data`` returns, never from inside a
parser callback, so an exchange that immediately reuses the connection never
sees the rest of a chunk that belonged to the previous response.  Bytes
after a complete response (a server that answers more than it was asked)
make the connection unusable for reuse.

Deadlines: while the request body is still streaming only the send timeout
applies (when the server stops accepting bytes); once the request is sent,
the read timeout runs between reads (nginx ``proxy_read_timeout``); idle in
the pool, the pool's idle timeout.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Protocol, cast

import httptools

from phoenix_lb.deadline import Deadline
from phoenix_lb.http.response import ResponseHead, scan_head

if TYPE_CHECKING:
    from phoenix_lb.server.tunnel import Tunnel
    from phoenix_lb.upstream.pool import ConnectionPool

# Write buffer high-water mark: above it the request body source is paused.
WRITE_HIGH_WATER: Final = 64 * 1024
# A response head larger than this is refused (502); nginx's
# proxy_buffer_size is 4k-8k, we allow real-world cookie-heavy heads.
MAX_RESPONSE_HEAD: Final = 64 * 1024


def _no_write(data: object) -> None:
    """Stands in for transport.write before the connection is made."""


class ResponseSink(Protocol):
    """What an upstream connection reports to the exchange using it."""

    def on_upstream_head(self, head: ResponseHead) -> None: ...

    def on_upstream_body(self, data: bytes) -> None: ...

    def on_upstream_done(self, reusable: bool) -> None: ...

    def on_upstream_lost(self, got_response_bytes: bool) -> None: ...

    def on_upstream_invalid(self, reason: str) -> None: ...

    def on_upstream_timeout(self) -> None: ...

    def on_upstream_writable(self, writable: bool) -> None: ...

    def flush(self) -> None: ...

    def on_upstream_switched(self, rest: bytes) -> None: ...


class _ParserCallbacks:
    """What httptools calls.  No per-field callback: the head is read raw."""

    __slots__ = ("on_body", "on_headers_complete", "on_message_complete")

    def __init__(self, conn: UpstreamConnection) -> None:
        self.on_headers_complete = conn.on_headers_complete
        self.on_body = conn.on_body
        self.on_message_complete = conn.on_message_complete


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a backend server."""

    __slots__ = (
        "_body_allowed",
        "_buf",
        "_done",
        "_extra",
        "_head_only",
        "_head_seen",
        "_head_start",
        "_interim",
        "_keep_alive",
        "_response",
        "_strip_request_id",
        "_strip_security",
        "_write",
        "awaiting_response",
        "deadline",
        "got_bytes",
        "in_pool",
        "loop",
        "parser",
        "pool",
        "read_timeout",
        "released_at",
        "requests",
        "send_timeout",
        "sink",
        "transport",
        "tunnel",
        "upgrade_requested",
    )

    def __init__(self, pool: ConnectionPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(_ParserCallbacks(self))
        self.sink: ResponseSink | None = None
        #: the WebSocket tunnel this connection carries after a 101
        self.tunnel: Tunnel | None = None
        #: the request asked to switch protocols: a 101 is a valid answer
        self.upgrade_requested = False
        self.deadline = Deadline(loop, self._on_deadline)
        self.read_timeout = 60.0
        self.send_timeout = 60.0
        self.in_pool = False
        self.released_at = 0.0
        #: requests sent over this connection so far
        self.requests = 0
        #: any response byte received for the current request
        self.got_bytes = False
        #: the whole request was sent; the read timeout runs
        self.awaiting_response = False
        self._response: ResponseHead | None = None
        #: raw bytes of the response head in progress
        self._buf = b""
        self._head_start = 0
        self._head_seen = False
        self._strip_security = False
        self._strip_request_id = False
        self._head_only = False
        self._body_allowed = True
        self._interim = False
        self._done = False
        self._extra = False
        self._keep_alive = False

    # -- used by the exchange -------------------------------------------------

    def start(
        self,
        sink: ResponseSink,
        data: bytes,
        head_only: bool,
        request_complete: bool,
        now: float,
        strip_security: bool = False,
        upgrade: bool = False,
        strip_request_id: bool = False,
    ) -> None:
        """Send a request head (and any body bytes already at hand) for ``sink``."""
        self.sink = sink
        self.requests += 1
        self.got_bytes = False
        self._head_seen = False
        self._buf = b""
        self._head_start = 0
        self._head_only = head_only
        self._strip_security = strip_security
        self._strip_request_id = strip_request_id
        self.upgrade_requested = upgrade
        self.awaiting_response = request_complete
        if request_complete:
            self.deadline.set(now + self.read_timeout)
        else:
            self.deadline.when = 0.0
        self._write(data)

    def write(self, data: bytes) -> None:
        """Send more request body."""
        self._write(data)

    def request_sent(self) -> None:
        """The last request byte was handed to the transport: wait for the response."""
        self.awaiting_response = True
        self.deadline.set_after(self.read_timeout)

    def close(self) -> None:
        """Close for good (not back to the pool)."""
        self.sink = None
        self.deadline.cancel()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once; the server sees an incomplete request."""
        self.sink = None
        self.deadline.cancel()
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._write = transport.write
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.from_upstream(data)
            return
        sink = self.sink
        if sink is None:
            # Unsolicited bytes on an idle connection: it is out of sync.
            self.pool.discard(self)
            self.close()
            return
        self.got_bytes = True
        if not self._head_seen:
            self._buf = data if not self._buf else self._buf + data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # 101 accepted (on_headers_complete checked it was asked for):
            # what follows the head is the new protocol's.
            self.deadline.cancel()
            sink.on_upstream_switched(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            if self._done:
                # Garbage after a complete response (a Content-Length one
                # short, a body on a 204): the response stands, the
                # connection is not reused (nginx: "upstream sent more data
                # than specified").
                self._extra = True
                self._finish(sink)
                return
            self.sink = None
            self.close()
            sink.on_upstream_invalid(f"invalid response from upstream: {exc}")
            return
        if not self._head_seen and len(self._buf) > MAX_RESPONSE_HEAD:
            self.sink = None
            self.close()
            sink.on_upstream_invalid("response head too large")
            return
        if self._done:
            self._finish(sink)
        elif self.sink is sink:
            if self.awaiting_response:
                self.deadline.set_after(self.read_timeout)
            sink.flush()

    def eof_received(self) -> bool | None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.upstream_eof()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline.cancel()
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.close()
            return
        if self.in_pool:
            self.pool.discard(self)
        sink = self.sink
        if sink is None:
            return
        self.sink = None
        response = self._response
        if (
            exc is None
            and response is not None
            and not self._done
            and self._body_allowed
            and not response.has_length
            and not response.chunked
        ):
            # A close-delimited body ends here, normally (a reset instead of a
            # FIN truncates it: the client must see it was cut).
            self._response = None
            sink.on_upstream_done(False)
            return
        sink.on_upstream_lost(self.got_bytes)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.deadline.set_after(self.send_timeout)
            self.sink.on_upstream_writable(False)

    def resume_writing(self) -> None:
        if self.sink is not None:
            if self.awaiting_response:
                self.deadline.set_after(self.read_timeout)
            else:
                # Still streaming the body: the client's body timeout rules.
                self.deadline.when = 0.0
            self.sink.on_upstream_writable(True)

    # -- httptools callbacks ---------------------------------------------------

    def on_headers_complete(self) -> None:
        if self._head_seen:
            # A second response in the same read: the server answered more
            # than it was asked; this connection cannot be trusted.
            self._extra = True
            return
        buf = self._buf
        start = self._head_start
        # The head is complete and validated: its status line ends at the
        # first CRLF, its header block at the first empty line.
        line_end = buf.find(b"\r\n", start)
        end = buf.find(b"\r\n\r\n", line_end)
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                if not self.upgrade_requested:
                    # Upgrade is forwarded only when asked: a switch is an error.
                    raise ValueError("unexpected 101 Switching Protocols")
                response = scan_head(
                    status, buf, line_end, end, self._strip_security, self._strip_request_id
                )
                self._head_seen = True
                self._buf = b""
                self._response = response
                sink = self.sink
                if sink is not None:
                    sink.on_upstream_head(response)
                return
            self._interim = True
            self._head_start = end + 4
            return
        response = scan_head(
            status, buf, line_end, end, self._strip_security, self._strip_request_id
        )
        if response.te_invalid:
            raise ValueError("upstream sent an unsupported Transfer-Encoding")
        self._head_seen = True
        self._buf = b""
        self._response = response
        self._body_allowed = not (self._head_only or status == 204 or status == 304)
        if self._head_only:
            # llhttp would wait for the body Content-Length announces.
            self._keep_alive = self.parser.should_keep_alive()
            self._done = True
        sink = self.sink
        if sink is not None:
            sink.on_upstream_head(response)

    def on_body(self, body: bytes) -> None:
        if self._interim:
            # llhttp reads a body for 1xx codes it does not know; a 1xx has
            # none (RFC 9112 6.3), and nothing may reach the client before
            # the final head.
            raise ValueError("a 1xx response with a body")
        if self._done:
            # Bytes after a head-only response: the server and we disagree.
            self._extra = True
            return
        sink = self.sink
        if sink is not None:
            sink.on_upstream_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self._done:
            # llhttp resets its flags once feed_data moves past the message,
            # so the keep-alive verdict must be read here.
            self._keep_alive = self.parser.should_keep_alive()
            self._done = True

    # -- internals ---------------------------------------------------------------

    def _finish(self, sink: ResponseSink) -> None:
        response = self._response
        reusable = (
            not self._extra and self._keep_alive and response is not None and not response.close
        )
        if self._head_only:
            # llhttp still expects the body announced by Content-Length.
            self.parser = httptools.HttpResponseParser(_ParserCallbacks(self))
        self.sink = None
        self._response = None
        self._done = False
        self._extra = False
        self.awaiting_response = False
        self.deadline.when = 0.0
        sink.on_upstream_done(reusable)

    def _on_deadline(self) -> None:
        sink = self.sink
        if sink is not None:
            self.sink = None
            self.close()
            sink.on_upstream_timeout()
        elif self.in_pool:
            # Idle longer than keepalive_timeout.
            self.pool.discard(self)
            self.close()
