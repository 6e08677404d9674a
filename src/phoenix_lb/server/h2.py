"""Downstream HTTP/2 (RFC 9113) over TLS, multiplexed onto the HTTP/1.1 upstream pools.

The protocol state machine is python-hyper's ``h2`` (sans-IO): bytes from the
transport go in, events come out, frames to send accumulate until
``flush()`` writes them.  This module maps those events onto the same
``Exchange`` machinery HTTP/1 uses:

* ``H2Connection`` is the asyncio Protocol of one client connection: it owns
  the ``h2`` state, the streams, the idle and grace deadlines and the abuse
  counters;
* ``H2Stream`` is the ``Downstream`` of one request (a ``down`` for an
  exchange): it turns the request's pseudo-headers and fields into a
  ``RequestHead`` and feeds the body to the exchange with stream flow
  control, and it queues the response DATA the client's windows do not
  admit yet;
* ``H2Exchange`` is an ``Exchange`` whose client-facing output is HEADERS and
  DATA frames instead of HTTP/1.1 bytes; retries, balancing and the upstream
  side are the base class's, untouched.

Stream life, as seen from here::

    HEADERS --admitted--> exchange running --response ended--> closed
        \\--refused/invalid--> local response or RST_STREAM -----/
    (a client RST_STREAM or the connection's end abandons the exchange)

Validation before anything is proxied (RFC 9113 8.2, 8.3): ``h2`` (with
``validate_inbound_headers``) refuses uppercase or invalid names, CR, LF or
NUL in values, connection-specific fields (Connection, Keep-Alive,
Proxy-Connection, Transfer-Encoding, Upgrade), TE other than "trailers",
pseudo-headers that are duplicated, unknown, missing or after a regular
field, an empty ``:path``, a Host differing from ``:authority``, and DATA
that does not match Content-Length; it answers those with a connection
error (GOAWAY PROTOCOL_ERROR: RFC 9113 5.4.1 allows a stream error to be
treated so), before a request exists.  This module adds the rest as stream
errors: ``:path`` not in origin form (or ``*`` for OPTIONS), a ``:scheme``
other than http/https, ``:protocol``, and Content-Length on a request whose
HEADERS ended the stream; the ``RequestHeadBuilder`` then applies the
HTTP/1.1 rules (valid Host, header list limits: 431, CONNECT: 405), so an
HTTP/2 request reaches the upstream only as a request HTTP/1 would also
have let through.  A body without Content-Length goes upstream chunked.

Abuse (each answered with GOAWAY ENHANCE_YOUR_CALM for that connection
only, then a close after a short grace):

* rapid reset (CVE-2023-44487): client RST_STREAMs, streams refused for
  exceeding MAX_CONCURRENT_STREAMS and malformed requests count in a sliding
  window (``RESET_LIMIT`` per ``FLOOD_WINDOW``), and in total once more than
  ``RESET_RATIO_FLOOR`` of them outnumber the completed streams;
* PING, SETTINGS, PRIORITY, unknown-frame and empty-DATA floods:
  ``CONTROL_LIMIT`` per ``FLOOD_WINDOW``;
* CONTINUATION floods (CVE-2024-27316 family): ``h2`` allows 64 CONTINUATION
  frames per header block (``h2.frame_buffer.CONTINUATION_BACKLOG``), which
  with our 16 KiB maximum frame size bounds a block at 1 MiB; we bound its
  bytes to the decoder's header list limit, and the decoder bounds the
  decompressed list (HPACK bombs) the same way.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from h2.config import H2Configuration
from h2.connection import H2Connection as H2State
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    UnknownFrameReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame, SettingsFrame

from phoenix_lb.deadline import Deadline
from phoenix_lb.http.hpack_static import StaticTableEncoder
from phoenix_lb.http.request import RequestError, RequestHead, RequestHeadBuilder
from phoenix_lb.http.response import BODY_LENGTH, BODY_NONE, SERVER_HEADER, ResponseHead
from phoenix_lb.http.status import reason
from phoenix_lb.server.admission import admit, find_route
from phoenix_lb.server.downstream import Downstream
from phoenix_lb.server.exchange import Exchange, LocalResponse
from phoenix_lb.server.h1 import H1Connection
from phoenix_lb.stats import count_index

if TYPE_CHECKING:
    from phoenix_lb.server.context import ListenerContext
    from phoenix_lb.upstream.group import UpstreamGroup

# -- limits -----------------------------------------------------------------------

#: Request body bytes a stream may have in flight (its receive window).  Go's
#: and nghttp2's servers use 1 MiB as well; nginx preread 64k per stream.
STREAM_WINDOW: Final = 1 << 20
#: The connection's receive window: several streams upload at full speed,
#: and it bounds what one connection can make us buffer.
CONNECTION_WINDOW: Final = 16 << 20
#: Response bytes queued per stream (its window is closed) before the
#: upstream connection's reading pauses; it resumes below half of it.
STREAM_SEND_HIGH: Final = 64 * 1024
#: The transport's write buffer above which every stream's upstream pauses
#: (all streams share one TLS connection; HTTP/1 uses 64 KiB per connection).
WRITE_HIGH_WATER: Final = 256 * 1024
#: Abuse accounting window, seconds, and what is allowed in it.
FLOOD_WINDOW: Final = 10.0
RESET_LIMIT: Final = 100
CONTROL_LIMIT: Final = 100
#: Above this many resets in total, resets outnumbering completed streams
#: are abuse too (a browser cancels some, never most).
RESET_RATIO_FLOOR: Final = 50
#: Streams h2 itself lets through beyond the advertised limit before treating
#: the excess as a connection error; we refuse those with REFUSED_STREAM
#: (RFC 9113 5.1.2) so that one racing client request is not fatal.
STREAM_SLACK: Final = 100
#: After an abuse GOAWAY: time for the client to read it before we close.
GOAWAY_GRACE: Final = 1.0

_NO_ERROR: Final = 0
_PROTOCOL_ERROR: Final = 1
_INTERNAL_ERROR: Final = 2
_REFUSED_STREAM: Final = 7
_CANCEL: Final = 8
_ENHANCE_YOUR_CALM: Final = 11

# Response fields that mean nothing, or something wrong, in HTTP/2 (RFC 9113 8.2.2).
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
# Response fields whose values hardly ever repeat: kept out of the HPACK
# dynamic table, which would otherwise fill with them, evicting the fields
# that do repeat and making every lookup scan the whole table.  (Set-Cookie
# is also sensitive: RFC 7541 7.1.3.)
_NEVER_INDEXED: Final = frozenset({b"x-request-id", b"set-cookie", b"etag", b"last-modified"})
_SERVER_VALUE: Final = SERVER_HEADER[len(b"Server: ") : -2]
_STATUS: Final[dict[int, bytes]] = {code: b"%d" % code for code in range(100, 600)}
_TEXT_PLAIN: Final = (b"content-type", b"text/plain; charset=utf-8")
# What the HTTP/1.1 request line can carry (h2 only refuses NUL, CR, LF and
# edge whitespace in values): a method is a token (RFC 9110 9.1), a target
# has no space, control or DEL (RFC 9113 8.3: otherwise malformed; the
# authority is checked as Host is).  Unchecked, ":method: GET /admin?" would smuggle a path past
# the route's access rules.
_METHOD: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_IN_TARGET: Final = re.compile(rb"[\x00-\x20\x7f]")

_CONFIG: Final = H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=True,
    validate_outbound_headers=False,
    normalize_inbound_headers=False,
    normalize_outbound_headers=False,
)


class _Malformed(Exception):
    """The request is malformed (RFC 9113 8.1.1): a stream error, PROTOCOL_ERROR."""


def _lines_to_fields(block: bytes, out: list[tuple[bytes, bytes]]) -> None:
    """Append ``Name: value`` lines (CRLF-separated, either end) as lowercase fields."""
    for line in block.split(b"\r\n"):
        if not line:
            continue
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].strip().lower()
        if name in _CONNECTION_SPECIFIC:
            continue
        value = line[colon + 1 :].strip()
        if name in _NEVER_INDEXED:
            out.append(NeverIndexedHeaderTuple(name, value))
        else:
            out.append((name, value))


class _Window:
    """Events counted in a sliding window: ``hit()`` is True past ``limit`` per ``period``."""

    __slots__ = ("limit", "period", "times")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.times: deque[float] = deque(maxlen=limit)

    def hit(self, now: float) -> bool:
        times = self.times
        if len(times) == self.limit and now - times[0] < self.period:
            return True
        times.append(now)
        return False


def _request_head(
    headers: list[tuple[bytes, bytes]], ended: bool, max_headers: int, max_bytes: int
) -> RequestHead:
    """The request of a HEADERS frame as an HTTP/1.1 ``RequestHead``.

    ``ended``: the HEADERS frame ended the stream (no body).  Raises
    ``_Malformed`` (a stream error) or ``RequestError`` (a status to answer,
    431 past ``max_headers`` fields or ``max_bytes``).  ``h2`` has validated
    names, values and pseudo-header syntax.
    """
    method = b""
    path = b""
    scheme = b""
    authority: bytes | None = None
    builder = RequestHeadBuilder(max_headers, max_bytes)
    cookies: list[bytes] | None = None
    started = False
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":scheme":
                scheme = value
            elif name == b":authority":
                authority = value
            else:
                raise _Malformed(f"pseudo-header {name!r} is not supported")
            continue
        if not started:
            started = True
            _start_head(builder, method, path, scheme, authority)
        if name == b"cookie":
            # RFC 9113 8.2.3: split cookie fields are joined for HTTP/1.1.
            if cookies is None:
                cookies = []
            cookies.append(value)
        elif name != b"host" or authority is None:
            # (A Host equal to :authority, h2 checked, is already in.)
            builder.on_header(name, value)
    if not started:
        _start_head(builder, method, path, scheme, authority)
    if cookies is not None:
        builder.on_header(b"cookie", b"; ".join(cookies))
    head = builder.finish(method, "1.1")
    if ended:
        if head.content_length:
            raise _Malformed("content-length on a request without content")
    elif head.content_length is None:
        # A body of unknown length: chunked toward the HTTP/1.1 upstream.
        head.chunked = True
    # The access log says what the client spoke; the upstream request is
    # HTTP/1.1 whatever this says (build_upstream_head).
    head.version = "2.0"
    return head


def _start_head(
    builder: RequestHeadBuilder,
    method: bytes,
    path: bytes,
    scheme: bytes,
    authority: bytes | None,
) -> None:
    if not _METHOD.fullmatch(method):
        raise _Malformed(":method is not a token")
    if method == b"CONNECT":
        raise RequestError(405, "CONNECT is not supported")
    if scheme != b"https" and scheme != b"http":
        raise _Malformed("unsupported :scheme")
    if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        raise _Malformed(":path is not in origin form")
    if _NOT_IN_TARGET.search(path):
        raise _Malformed(":path has a space or a control character")
    builder.on_url(path)
    if authority is not None:
        builder.on_header(b"host", authority)


class H2Exchange(Exchange):
    """An exchange answering over an HTTP/2 stream: HEADERS and DATA instead of bytes."""

    __slots__ = ("stream",)

    def __init__(
        self, stream: H2Stream, head: RequestHead, group: UpstreamGroup, client_ip: bytes = b""
    ) -> None:
        super().__init__(stream, head, group, client_ip)
        self.stream = stream

    def _emit_head(self, response: ResponseHead, extra: bytes) -> None:
        stream = self.stream
        mode = self.mode
        fields: list[tuple[bytes, bytes]] = [
            (b":status", _STATUS.get(response.status) or b"%d" % response.status),
            (b"server", _SERVER_VALUE),
        ]
        if not response.has_date:
            fields.append((b"date", stream.ctx.clock.date_line[6:-2]))
        keep_length = response.has_length and (
            mode == BODY_LENGTH or (mode == BODY_NONE and self.head.method == b"HEAD")
        )
        for piece in response.forward:
            _lines_to_fields(piece, fields)
        if not keep_length:
            fields = [f for f in fields if f[0] != b"content-length"]
        if extra:
            _lines_to_fields(extra, fields)
        self.head_bytes = stream.send_head(fields, mode == BODY_NONE)

    def on_upstream_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.mode != BODY_NONE:
            self.stream.send_data(data)

    def flush(self) -> None:
        stream = self.stream
        stream.pump()
        stream.conn.flush()

    def _end_body(self) -> None:
        self.stream.end_response()

    def _emit_error(self, status: int, extra: bytes) -> None:
        self.stream.respond_local(status, extra, counted=False)


class H2Stream(Downstream):
    """One request stream: the ``Downstream`` its exchange talks to."""

    __slots__ = (
        "conn",
        "end_pending",
        "exchange",
        "flow_held",
        "head_only",
        "paused",
        "queue",
        "queued",
        "request_done",
        "response_ended",
        "stream_id",
        "window_blocked",
    )

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        super().__init__(conn.ctx, Deadline(conn.ctx.loop, self._on_deadline))
        self.conn = conn
        self.stream_id = stream_id
        self.peer_ip = conn.peer_ip
        self.client_ip = conn.client_ip
        self.tls_version = conn.tls_version
        self.exchange: H2Exchange | None = None
        #: the client sent END_STREAM (the request is complete)
        self.request_done = False
        #: we sent END_STREAM or RST_STREAM: nothing more goes out
        self.response_ended = False
        #: END_STREAM waits for queued DATA
        self.end_pending = False
        self.head_only = False
        #: response DATA the client's flow-control windows do not admit yet
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.window_blocked = False
        #: reasons the request body is not read (bits, as HTTP/1's)
        self.paused = 0
        #: received flow-controlled bytes not yet credited back (while paused)
        self.flow_held = 0

    # -- the request ------------------------------------------------------------

    def on_request(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        ctx = self.ctx
        self.request_done = ended
        # (Distinct names: the compiled build types an except variable once.)
        try:
            head = _request_head(headers, ended, ctx.max_headers, ctx.max_header_bytes)
        except _Malformed as malformed:
            self.conn.malformed(self, str(malformed))
            return
        except RequestError as invalid:
            self.respond_local(invalid.status, b"", counted=True)
            return
        self.head_only = head.method == b"HEAD"
        expect = head.expect_continue
        head.expect_continue = False
        length = head.content_length
        if length is not None and ctx.max_body and length > ctx.max_body:
            self._refuse(LocalResponse(self, 413, close=False), head)
            return
        route = find_route(ctx, head)
        if route is None:
            self._refuse(LocalResponse(self, 404, close=False), head)
            return
        exchange = H2Exchange(self, head, route.group, self.client_ip)
        if not route.log:
            exchange.log = False
        if not route.plain or ctx.realip is not None:
            refused = admit(exchange, route)
            if refused is not None:
                refused.log = exchange.log
                self._refuse(refused, head)
                return
        self.exchange = exchange
        if not ended:
            if expect:
                # The client waits for this before sending its body (RFC 9110 10.1.1).
                self.conn.codec.send_headers(self.stream_id, [(b":status", b"100")])
            self.deadline.set_after(ctx.client_body_timeout)
        exchange.start()

    def on_data(self, data: bytes, flow_length: int) -> None:
        exchange = self.exchange
        if data and exchange is not None and not exchange.finished:
            exchange.on_body(data)
            if not self.request_done and not self.response_ended:
                self.deadline.set_after(self.ctx.client_body_timeout)
        if self.paused and not self.response_ended:
            self.flow_held += flow_length
        elif flow_length:
            self.conn.codec.acknowledge_received_data(flow_length, self.stream_id)

    def on_end(self) -> None:
        self.request_done = True
        if not self.window_blocked:
            self.deadline.clear()
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            exchange.on_body_end()
        if self.response_ended:
            self.conn.stream_closed(self)

    def on_reset(self) -> None:
        """The client reset the stream, or the connection is gone."""
        if self.response_ended and self.request_done:
            return
        self.response_ended = True
        self.request_done = True
        self.queue.clear()
        exchange = self.exchange
        if exchange is not None:
            exchange.on_client_lost()
        self.conn.stream_closed(self)

    # -- the response -------------------------------------------------------------

    def send_head(self, fields: list[tuple[bytes, bytes]], end_stream: bool) -> int:
        """Send HEADERS; their size on the wire (HPACK-compressed), for bytes_sent."""
        if self.response_ended:
            return 0
        conn = self.conn
        codec = conn.codec
        held = conn.held
        held.append(codec.data_to_send())
        try:
            codec.send_headers(self.stream_id, fields, end_stream=end_stream)
        except StreamClosedError:
            # h2 closed the stream on its own (a stream error it answered).
            self.on_reset()
            return 0
        frame = codec.data_to_send()
        held.append(frame)
        if end_stream:
            self._ended()
        return len(frame)

    def send_data(self, data: bytes) -> None:
        """Queue DATA; it goes out at the next pump (the exchange's flush, or the end).

        Not pumped here, so that the last piece of a response read together
        with its end carries END_STREAM itself instead of an empty DATA
        frame after it.
        """
        if self.response_ended or not data:
            return
        self.queue.append(data)
        self.queued += len(data)

    def end_response(self) -> None:
        """The response is complete: END_STREAM after the queued DATA (and flush)."""
        if not self.response_ended:
            self.end_pending = True
            self.pump()
        self.conn.flush()

    def pump(self) -> None:
        """Send queued DATA as far as the windows allow; END_STREAM once all is out."""
        if self.response_ended:
            return
        try:
            self._pump()
        except StreamClosedError:
            self.on_reset()

    def _pump(self) -> None:
        codec = self.conn.codec
        sid = self.stream_id
        queue = self.queue
        sent = False
        ended = False
        if queue:
            frame = codec.max_outbound_frame_size
            while queue:
                window = codec.local_flow_control_window(sid)
                if window <= 0:
                    break
                chunk = queue[0]
                size = min(window, frame)
                if len(chunk) <= size:
                    queue.popleft()
                    # The response's last DATA frame carries END_STREAM.
                    ended = not queue and self.end_pending
                    codec.send_data(sid, chunk, end_stream=ended)
                    self.queued -= len(chunk)
                else:
                    queue[0] = chunk[size:]
                    codec.send_data(sid, chunk[:size])
                    self.queued -= size
                sent = True
        if queue:
            if not self.window_blocked or sent:
                # The client's window is closed: it has client_send to open it.
                self.window_blocked = True
                self.deadline.set_after(self.ctx.client_send_timeout)
        elif self.window_blocked:
            self.window_blocked = False
            if self.request_done or self.exchange is None or self.exchange.finished:
                self.deadline.clear()
            else:
                self.deadline.set_after(self.ctx.client_body_timeout)
        self.update_writable()
        if ended:
            self.end_pending = False
            self._ended()
        elif not queue and self.end_pending:
            self.end_pending = False
            codec.end_stream(sid)
            self._ended()

    def update_writable(self) -> None:
        """Pause the upstream while this stream's queue or the connection is full."""
        if self.write_paused:
            full = self.conn.write_paused or self.queued > STREAM_SEND_HIGH // 2
        else:
            full = self.conn.write_paused or self.queued > STREAM_SEND_HIGH
        if full != self.write_paused:
            self.write_paused = full
            exchange = self.exchange
            if exchange is not None and not exchange.finished:
                exchange.on_client_writable(not full)

    def _refuse(self, refusal: LocalResponse, head: RequestHead) -> None:
        """Answer a refused request (404, 413, 403, 429...) and log it, as HTTP/1 does."""
        sent = self.respond_local(refusal.status, refusal.extra, counted=True, method=head.method)
        self.ctx.local_durations.observe(self.ctx.now() - refusal.started_at)
        access_log = self.ctx.access_log
        if access_log is not None and refusal.log:
            refusal.head = head
            refusal.body_size = sent
            access_log.log(refusal)

    def respond_local(
        self, status: int, extra: bytes, *, counted: bool, method: bytes = b""
    ) -> int:
        """Answer with our own small text response (errors, refusals); its body size."""
        if self.response_ended:
            return 0
        ctx = self.ctx
        if counted:
            ctx.local_counts[count_index(0, method, status)] += 1
        body = b"%d %s\n" % (status, reason(status))
        fields = [
            (b":status", _STATUS.get(status) or b"%d" % status),
            (b"server", _SERVER_VALUE),
            (b"date", ctx.clock.date_line[6:-2]),
            _TEXT_PLAIN,
            (b"content-length", b"%d" % len(body)),
        ]
        if status == 503 and not extra:
            extra = b"Retry-After: 1\r\n"
        _lines_to_fields(extra + ctx.security_headers, fields)
        if self.head_only:
            sent = self.send_head(fields, True)
        else:
            sent = self.send_head(fields, False) + len(body)
            self.send_data(body)
            self.end_response()
        if counted:
            # As LocalResponse does for HTTP/1 (an exchange counts its own).
            ctx.bytes_out += sent
        self.conn.flush()
        return 0 if self.head_only else len(body)

    def _ended(self) -> None:
        """END_STREAM went out."""
        self.response_ended = True
        self.conn.completed += 1
        self.queue.clear()
        if not self.request_done:
            # The rest of the request is not needed (RFC 9113 8.1).
            self.request_done = True
            self.conn.codec.reset_stream(self.stream_id, _NO_ERROR)
        self.conn.stream_closed(self)

    # -- Downstream: what the exchange calls ---------------------------------------

    def write(self, data: bytes) -> None:
        raise RuntimeError("an HTTP/2 stream sends frames, not HTTP/1.1 bytes")

    def write_many(self, data: list[bytes]) -> None:
        raise RuntimeError("an HTTP/2 stream sends frames, not HTTP/1.1 bytes")

    def pause_reading(self, reason: int) -> None:
        """Withhold this stream's flow-control credit: the client stops sending."""
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.flow_held:
                held = self.flow_held
                self.flow_held = 0
                self.conn.codec.acknowledge_received_data(held, self.stream_id)
                self.conn.flush()

    def abort(self) -> None:
        """The response cannot be completed: reset the stream."""
        if self.response_ended:
            return
        self.response_ended = True
        self.request_done = True
        self.queue.clear()
        self.conn.codec.reset_stream(self.stream_id, _INTERNAL_ERROR)
        self.conn.flush()
        self.conn.stream_closed(self)

    def exchange_done(self, responder: object, keep_alive: bool) -> None:
        """The exchange is over; the stream ends when its queued DATA is out."""
        if not self.response_ended and not self.end_pending:
            # An exchange that ended without a response end (should not happen).
            self.abort()

    def _on_deadline(self) -> None:
        if self.response_ended:
            return
        if self.window_blocked:
            self.ctx.logger.info(
                "client %s stopped reading stream %d; resetting it",
                self.client_ip.decode(),
                self.stream_id,
            )
            self._cancel()
            return
        exchange = self.exchange
        if not self.request_done and exchange is not None and not exchange.finished:
            exchange.on_client_timeout()
            self.conn.flush()

    def _cancel(self) -> None:
        self.response_ended = True
        self.request_done = True
        self.queue.clear()
        self.conn.codec.reset_stream(self.stream_id, _CANCEL)
        exchange = self.exchange
        if exchange is not None:
            exchange.on_client_lost()
        self.conn.flush()
        self.conn.stream_closed(self)


class H2Connection(asyncio.Protocol):
    """One client connection speaking HTTP/2 (after ALPN chose "h2")."""

    __slots__ = (
        "_control",
        "_h2_goaway",
        "_on_close",
        "_resets",
        "_write",
        "client_ip",
        "closing",
        "codec",
        "completed",
        "ctx",
        "deadline",
        "header_block_limit",
        "held",
        "last_stream_id",
        "loop",
        "max_streams",
        "peer_ip",
        "proxied_ip",
        "reset_total",
        "streams",
        "tls_version",
        "transport",
        "write_paused",
    )

    def __init__(self, ctx: ListenerContext, on_close: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self._on_close = on_close
        self.transport: asyncio.Transport | None = None
        self._write: Callable[[bytes], object] | None = None
        #: frames taken from h2's buffer (to measure one), written by flush()
        self.held: list[bytes] = []
        self.peer_ip = b""
        self.client_ip = b""
        #: see Downstream.proxied_ip
        self.proxied_ip = b""
        self.tls_version = ""
        self.codec = H2State(config=_CONFIG)
        self._h2_goaway: Callable[[GoAwayFrame], Any] | None = None
        # h2 closes the whole connection on any GOAWAY it receives, dropping
        # the client's own open streams; a NO_ERROR GOAWAY only means "no
        # new streams" (RFC 9113 6.8), so those are taken over here.  (Left
        # to h2 should a future h2 have no such table.)
        table = getattr(self.codec, "_frame_dispatch_table", None)
        if isinstance(table, dict) and GoAwayFrame in table:
            self._h2_goaway = table[GoAwayFrame]
            table[GoAwayFrame] = self._receive_goaway
        # Response heads without h2's pure-Python dynamic table and Huffman
        # coding (most of a request's CPU otherwise): see hpack_static.py.
        self.codec.encoder = cast(Any, StaticTableEncoder())
        self.streams: dict[int, H2Stream] = {}
        self.max_streams: int = ctx.http2_max_streams
        #: no new streams: GOAWAY sent (graceful or not) or the connection ends
        self.closing = False
        #: streams above this id are refused (after a graceful GOAWAY); -1: none sent
        self.last_stream_id = -1
        self.write_paused = False
        self.completed = 0
        self.reset_total = 0
        self._resets: _Window | None = None
        self._control: _Window | None = None
        # HPACK input bound: the decompressed list (the decoder) and the
        # compressed block in progress (CONTINUATION frames).
        self.header_block_limit = max(4 * ctx.max_header_bytes, 65536)
        self.deadline = Deadline(ctx.loop, self._on_deadline)

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._write = transport.write
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0].encode() if peer else b"unix"
        self.client_ip = self.proxied_ip or self.peer_ip
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls_version = str(ssl_object.version() or "")
        ctx = self.ctx
        ctx.connections.add(self)
        ctx.accepted += 1
        ctx.h2_connections += 1
        codec = self.codec
        advertised = {
            SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: ctx.max_header_bytes,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        }
        # h2 enforces its local MAX_CONCURRENT_STREAMS with a connection error;
        # its limit is set above the advertised one so that we can refuse the
        # excess with REFUSED_STREAM instead (our SETTINGS frame says ours).
        enforced = dict(advertised)
        enforced[SettingCodes.MAX_CONCURRENT_STREAMS] = self.max_streams + STREAM_SLACK
        codec.local_settings = Settings(client=False, initial_values=enforced)
        codec.decoder.max_header_list_size = self.header_block_limit
        codec.initiate_connection()
        codec.data_to_send()
        frame = SettingsFrame(0)
        for setting, value in codec.local_settings.items():
            frame.settings[setting] = value
        frame.settings[SettingCodes.MAX_CONCURRENT_STREAMS] = self.max_streams
        transport.write(frame.serialize())
        codec.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()
        self.deadline.set_after(ctx.client_header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        ctx = self.ctx
        ctx.bytes_in += len(data)
        codec = self.codec
        try:
            events = codec.receive_data(data)
        except ProtocolError as exc:
            # h2 queued a GOAWAY with the error's code.
            if ctx.logger.isEnabledFor(10):
                ctx.logger.debug("client %s: HTTP/2 error: %s", self.client_ip.decode(), exc)
            self._shut(GOAWAY_GRACE)
            return
        reset_ids: set[int] | None = None
        if len(events) > 1:
            for event in events:
                if type(event) is StreamReset:
                    if reset_ids is None:
                        reset_ids = set()
                    reset_ids.add(event.stream_id or 0)
        for event in events:
            kind = type(event)
            if kind is DataReceived:
                self._on_data(cast(DataReceived, event))
            elif kind is RequestReceived:
                request = cast(RequestReceived, event)
                if reset_ids is not None and request.stream_id in reset_ids:
                    # Opened and reset in the same read: never started.
                    continue
                self._on_request(request)
            elif kind is StreamEnded:
                stream = self.streams.get(cast(StreamEnded, event).stream_id or 0)
                if stream is not None:
                    stream.on_end()
            elif kind is WindowUpdated:
                self._on_window(cast(WindowUpdated, event).stream_id or 0)
            elif kind is StreamReset:
                self._on_reset(cast(StreamReset, event))
            elif kind is PingReceived or kind is UnknownFrameReceived:
                self._control_frame()
            elif kind is RemoteSettingsChanged:
                self._control_frame()
                changed = cast(RemoteSettingsChanged, event).changed_settings
                if SettingCodes.INITIAL_WINDOW_SIZE in changed:
                    self._on_window(0)
            elif kind is PriorityUpdated:
                self._priority(cast(PriorityUpdated, event), events)
            elif kind is ConnectionTerminated:
                if cast(ConnectionTerminated, event).error_code == _NO_ERROR and not self.closing:
                    # Going away politely: its open streams still get answers.
                    self.close_idle()
                else:
                    # An error: h2 has closed the connection, nothing can be sent.
                    self._shut(0.0)
            if self.closing and self.last_stream_id < 0:
                break
        if not self.closing:
            self._check_header_block()
        self.flush()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.deadline.cancel()
        self.ctx.connections.discard(self)
        on_close = self._on_close
        if on_close is not None:
            self._on_close = None
            on_close()
        for stream in list(self.streams.values()):
            stream.on_reset()
        self.streams.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.deadline.set_after(self.ctx.client_send_timeout)
        for stream in self.streams.values():
            stream.update_writable()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._idle_deadline()
        for stream in list(self.streams.values()):
            stream.update_writable()

    # -- events ---------------------------------------------------------------------

    def _on_request(self, event: RequestReceived) -> None:
        sid = event.stream_id or 0
        codec = self.codec
        if self.closing or len(self.streams) >= self.max_streams:
            codec.reset_stream(sid, _REFUSED_STREAM)
            if not self.closing:
                self._count_reset()
            return
        headers = cast(list[tuple[bytes, bytes]], event.headers or [])
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        ctx = self.ctx
        ctx.requests += 1
        ctx.h2_streams += 1
        self.deadline.clear()
        stream.on_request(headers, event.stream_ended is not None)

    def _on_data(self, event: DataReceived) -> None:
        sid = event.stream_id or 0
        data = event.data or b""
        flow = event.flow_controlled_length or 0
        stream = self.streams.get(sid)
        if not data and event.stream_ended is None:
            # Empty DATA frames cost us a frame each and carry nothing.
            self._control_frame()
        if stream is None:
            if flow:
                self.codec.acknowledge_received_data(flow, sid)
            return
        stream.on_data(data, flow)

    def _on_window(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None and stream.queue:
                stream.pump()
            return
        for stream in list(self.streams.values()):
            if stream.queue:
                stream.pump()

    def _on_reset(self, event: StreamReset) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if event.remote_reset and (stream is None or not stream.response_ended):
            self._count_reset()
        if stream is not None:
            stream.on_reset()

    def _priority(self, event: PriorityUpdated, events: list[Any]) -> None:
        for other in events:
            if type(other) is RequestReceived and other.priority_updated is event:
                return  # part of a HEADERS frame
        self._control_frame()

    # -- abuse ------------------------------------------------------------------------

    def _count_reset(self) -> None:
        """A stream cancelled before its response (or refused, or malformed)."""
        self.reset_total += 1
        resets = self._resets
        if resets is None:
            resets = self._resets = _Window(RESET_LIMIT, FLOOD_WINDOW)
        total = self.reset_total
        if resets.hit(self.loop.time()) or (total > RESET_RATIO_FLOOR and total > self.completed):
            self._abuse("too many reset streams (rapid reset)")

    def _control_frame(self) -> None:
        control = self._control
        if control is None:
            control = self._control = _Window(CONTROL_LIMIT, FLOOD_WINDOW)
        if control.hit(self.loop.time()):
            self._abuse("control frame flood")

    def _check_header_block(self) -> None:
        # h2 keeps the frames of an unfinished header block here (private, so
        # looked up defensively); a block larger than the decoder will ever
        # accept is not waited for.
        frames = getattr(self.codec.incoming_buffer, "_headers_buffer", None)
        if frames:
            size = 0
            for frame in frames:
                size += len(frame.data)
            if size > self.header_block_limit:
                self._abuse("header block too large (CONTINUATION flood)")

    def _abuse(self, what: str) -> None:
        if self.closing and self.last_stream_id < 0:
            return
        self.ctx.logger.warning(
            "listener %s: client %s: %s; closing its HTTP/2 connection",
            self.ctx.name,
            self.client_ip.decode(),
            what,
        )
        self.codec.close_connection(_ENHANCE_YOUR_CALM)
        self._shut(GOAWAY_GRACE)

    def malformed(self, stream: H2Stream, why: str) -> None:
        """A malformed request: reset its stream (PROTOCOL_ERROR), count it."""
        if self.ctx.logger.isEnabledFor(20):
            self.ctx.logger.info(
                "client %s: malformed HTTP/2 request: %s", self.client_ip.decode(), why
            )
        stream.response_ended = True
        stream.request_done = True
        self.codec.reset_stream(stream.stream_id, _PROTOCOL_ERROR)
        self.stream_closed(stream)
        self._count_reset()

    # -- streams ------------------------------------------------------------------------

    def stream_closed(self, stream: H2Stream) -> None:
        """``stream`` is over on our side; the connection may go idle or close."""
        if self.streams.pop(stream.stream_id, None) is None:
            return
        stream.deadline.cancel()
        if stream.flow_held:
            # Give the connection window back (h2 credits only the connection
            # for a closed stream).
            held = stream.flow_held
            stream.flow_held = 0
            self.codec.acknowledge_received_data(held, stream.stream_id)
        if not self.streams:
            if self.closing:
                if self.last_stream_id >= 0:
                    self._close()
            else:
                self._idle_deadline()

    def flush(self) -> None:
        """Write the frames h2 has prepared (and those taken out to be measured)."""
        data = self.codec.data_to_send()
        held = self.held
        if held:
            held.append(data)
            data = b"".join(held)
            self.held = []
        if data and self._write is not None:
            self._write(data)

    # -- runtime interface (server/context.py's Downstream) -------------------------------

    def stub_state(self) -> int:
        return 1 if self.streams else 2

    def _receive_goaway(self, frame: GoAwayFrame) -> tuple[list[Any], list[Any]]:
        """h2's GOAWAY handler, except that NO_ERROR leaves the connection open."""
        original = self._h2_goaway
        assert original is not None  # installed together with this handler
        if frame.error_code != _NO_ERROR:
            return cast(tuple[list[Any], list[Any]], original(frame))
        event = ConnectionTerminated()
        event.error_code = ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def close_idle(self) -> bool:
        """Graceful shutdown: GOAWAY now, close when the open streams are done."""
        if self.transport is None or self.closing:
            return self.transport is None
        self.closing = True
        last = self.codec.highest_inbound_stream_id
        self.last_stream_id = last
        self.flush()
        # Written by hand: h2 accepts no frame after its own GOAWAY, and the
        # open streams still have to finish.
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = last
        goaway.error_code = _NO_ERROR
        if self._write is not None:
            self._write(goaway.serialize())
        if not self.streams:
            self._close()
            return True
        return False

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- internals --------------------------------------------------------------------

    def _idle_deadline(self) -> None:
        if self.write_paused:
            return
        if self.streams:
            self.deadline.clear()
        else:
            self.deadline.set_after(self.ctx.keepalive_timeout)

    def _shut(self, grace: float) -> None:
        """No more input: drop the streams, send what is queued, close after ``grace``."""
        self.closing = True
        self.last_stream_id = -1
        for stream in list(self.streams.values()):
            stream.on_reset()
        self.streams.clear()
        self.flush()
        transport = self.transport
        if transport is None:
            return
        if grace > 0.0:
            transport.pause_reading()
            self.deadline.set_after(grace)
        else:
            transport.close()

    def _close(self) -> None:
        self.closing = True
        self.flush()
        self.deadline.cancel()
        if self.transport is not None:
            self.transport.close()

    def _on_deadline(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.closing:
            # The grace after an abuse GOAWAY is over; a graceful close waits
            # for its streams (the runtime aborts them at its own deadline).
            if self.last_stream_id < 0 or not self.streams:
                transport.close()
            return
        if self.write_paused:
            self.ctx.logger.info("client %s stopped reading; closing", self.client_ip.decode())
            self.abort()
            return
        if not self.streams:
            # Idle: say goodbye properly.
            self.codec.close_connection(_NO_ERROR)
            self._close()


class AlpnDispatch(asyncio.Protocol):
    """Stands in during the TLS handshake, then hands over to HTTP/2 or HTTP/1.1 by ALPN."""

    __slots__ = ("_on_close", "chosen", "ctx", "proxied_ip", "transport")

    def __init__(self, ctx: ListenerContext, on_close: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        self._on_close = on_close
        self.transport: asyncio.BaseTransport | None = None
        self.chosen: asyncio.Protocol | None = None
        #: passed on to the connection ALPN chooses (see Downstream.proxied_ip)
        self.proxied_ip = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # With ssl=, the transport arrives after the handshake: ALPN is known.
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        chosen: H2Connection | H1Connection
        if alpn == "h2":
            chosen = H2Connection(self.ctx, self._on_close)
        else:
            chosen = H1Connection(self.ctx, self._on_close)
        chosen.proxied_ip = self.proxied_ip
        self.chosen = chosen
        transport.set_protocol(chosen)
        chosen.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.chosen is not None:
            self.chosen.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        chosen = self.chosen
        if chosen is not None:
            chosen.connection_lost(exc)
        elif self._on_close is not None:
            on_close = self._on_close
            self._on_close = None
            on_close()
