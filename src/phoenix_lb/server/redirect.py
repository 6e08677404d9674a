"""The ``redirect_https`` listener: every request gets ``301`` to ``https://<server_name><target>``.

nginx's ``return 301 https://$server_name$request_uri;``.  The host is the
listener's configured ``server_name``, never the client's ``Host``: a
redirect that echoed ``Host`` would send users wherever a forged link says
(an open redirect, and a cache-poisoning aid).  The path and query are the
request's own (origin-form; an absolute-form target contributes only its
path and query; ``OPTIONS *`` goes to ``/``), with bytes outside visible ASCII
percent-encoded so nothing a client sends can end the header line.

A connection lives like an HTTP/1.1 one, parsed by the same httptools
parser and limits as ``h1.py``::

    IDLE --first byte--> HEAD --head complete--> BODY (discarded) --complete--> answer
      ^                                                                           |
      +---------------------------- keep-alive -----------------------------------+

Keep-alive is kept when the client asked for it and the request had no
body or a small one (read and discarded, up to :data:`MAX_DISCARD`); otherwise
the answer says ``Connection: close`` and the connection closes once it is
written.  Malformed requests get 400, oversized heads 431, both closing.
Deadlines: ``client_header`` for a head, ``client_body`` between body reads,
``keepalive`` while idle.  The listener's security headers are added to
every answer (HSTS is left out of them on plain-HTTP listeners: RFC 6797 8.1
has browsers ignore it there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

import httptools

from phoenix_lb.deadline import Deadline
from phoenix_lb.http.errors import error_response
from phoenix_lb.http.proxy_protocol import ProxyProtocolError, feed_proxy_header
from phoenix_lb.http.response import SERVER_HEADER
from phoenix_lb.http.status import status_line
from phoenix_lb.stats import count_index

if TYPE_CHECKING:
    from phoenix_lb.server.context import ListenerContext

__all__ = ["MAX_DISCARD", "RedirectConnection", "redirect_target"]

#: Request body bytes read and dropped to keep a connection reusable; a
#: larger body gets its answer and a close (nginx discards bodies the same way).
MAX_DISCARD: Final = 64 * 1024

_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2

_BODY_TEXT: Final = (
    b"<html><head><title>301 Moved Permanently</title></head>"
    b"<body><h1>301 Moved Permanently</h1></body></html>\n"
)
_HEAD_START: Final = (
    status_line(301)
    + SERVER_HEADER
    + b"Content-Type: text/html\r\nContent-Length: %d\r\n" % len(_BODY_TEXT)
)
# Visible ASCII stays as it is; everything else is percent-encoded.
_SAFE: Final = frozenset(range(0x21, 0x7F))


def redirect_target(target: bytes) -> bytes | None:
    """The path and query to append to ``https://<server_name>``; None when unusable."""
    if target.startswith(b"/"):
        path = target
    elif target == b"*":
        path = b"/"
    else:
        # absolute-form (a client that talks to us as to a proxy)
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            return None
        if url.schema is None:
            return None
        path = url.path or b"/"
        if url.query is not None:
            path += b"?" + url.query
        if not path.startswith(b"/"):
            return None
    if all(byte in _SAFE for byte in path):
        return path
    return b"".join(bytes((b,)) if b in _SAFE else b"%%%02X" % b for b in path)


class _Logged:
    """An answered request, as the access log wants it."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, object]) -> None:
        self.fields = fields

    def log_fields(self) -> dict[str, object]:
        return self.fields


class RedirectConnection(asyncio.Protocol):
    """One client connection of a ``redirect_https`` listener."""

    def __init__(self, ctx: ListenerContext, on_close: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        self._on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.deadline = Deadline(ctx.loop, self._on_deadline)
        self.client_ip = b""
        self.closing = False
        self._phase = _IDLE
        self._head_bytes = 0
        self._head_size = 0
        self._headers = 0
        self._url = b""
        self._referer = b""
        self._agent = b""
        self._body_bytes = 0
        self._started = 0.0
        #: bytes of a PROXY protocol header still incomplete (None: none expected)
        self._proxy_buf: bytes | None = b"" if ctx.proxy_protocol else None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0].encode() if peer else b"unix"
        ctx = self.ctx
        ctx.connections.add(self)
        ctx.accepted += 1
        self.deadline.set_after(ctx.client_header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.ctx.bytes_in += len(data)
        if self._proxy_buf is not None:
            data = self._proxy_header(data)
            if not data:
                return
        if self._phase == _IDLE:
            self._phase = _HEAD
            self._head_bytes = 0
            self._started = self.ctx.now()
            self.deadline.set_after(self.ctx.client_header_timeout)
        if self._phase == _HEAD:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade (WebSocket, h2c): the 301 went out with Connection: close
            # at message complete; whatever follows is not HTTP/1.1.
            self._close()
        except (httptools.HttpParserError, httptools.HttpParserCallbackError):
            if not self.closing:
                self._refuse(400)
            return
        if self.closing:
            return
        if self._phase == _HEAD and self._head_bytes > self.ctx.max_header_bytes:
            self._refuse(431)

    def eof_received(self) -> bool | None:
        return None  # close: an answer in progress is complete already

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.deadline.cancel()
        self.ctx.connections.discard(self)
        on_close = self._on_close
        if on_close is not None:
            self._on_close = None
            on_close()

    def pause_writing(self) -> None:
        # A client that sends requests without reading the answers.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # -- httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = 0
        self._head_size = 0
        self._referer = b""
        self._agent = b""
        self._body_bytes = 0
        # Raw bytes count from the next read on (earlier requests of this read
        # are not this head's); the parsed size is checked in on_header.
        self._head_bytes = 0
        if self._phase != _HEAD:
            # A pipelined request in the same read as the previous one.
            self._phase = _HEAD
            self._started = self.ctx.now()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        # The head's size as parsed (a whole head may arrive in one read).
        self._head_size += len(name) + len(value) + 4
        if self._headers > self.ctx.max_headers or self._head_size > self.ctx.max_header_bytes:
            self._refuse(431)
            raise OverflowError("request head too large")
        if self.ctx.access_log is not None:
            lower = name.lower()
            if lower == b"referer":
                self._referer = value
            elif lower == b"user-agent":
                self._agent = value

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self.deadline.set_after(self.ctx.client_body_timeout)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_DISCARD:
            # Not worth reading further: answer now and close.
            self._answer(keep_alive=False)
            self._close()
            raise OverflowError("body too large to discard")

    def on_message_complete(self) -> None:
        self._answer(keep_alive=self.parser.should_keep_alive())

    # -- answering --------------------------------------------------------------------

    def _answer(self, *, keep_alive: bool) -> None:
        ctx = self.ctx
        method = self.parser.get_method()
        path = redirect_target(self._url) if method != b"CONNECT" else None
        if path is None or ctx.redirect_to is None:
            self._refuse(400)
            return
        upgrade = self.parser.should_upgrade()
        keep_alive = keep_alive and not upgrade
        head = [
            _HEAD_START,
            ctx.clock.date_line,
            b"Location: ",
            ctx.redirect_to,
            path,
            b"\r\n",
            ctx.security_headers,
            b"\r\n" if keep_alive else b"Connection: close\r\n\r\n",
        ]
        if method != b"HEAD":
            head.append(_BODY_TEXT)
        response = b"".join(head)
        self._send(response)
        self._done(method, 301, len(_BODY_TEXT) if method != b"HEAD" else 0)
        if keep_alive:
            self._phase = _IDLE
            self.deadline.set_after(ctx.keepalive_timeout)
        else:
            self._close()

    def _refuse(self, status: int) -> None:
        method = self.parser.get_method() if self._phase != _IDLE else b""
        body = error_response(
            status, date=self.ctx.clock.date_line, close=True, extra=self.ctx.security_headers
        )
        self._send(body)
        self._done(method, status, 0)
        self._close()

    def _send(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closing:
            transport.write(data)
            self.ctx.bytes_out += len(data)

    def _done(self, method: bytes, status: int, body_bytes: int) -> None:
        ctx = self.ctx
        ctx.requests += 1
        ctx.local_counts[count_index(0, method, status)] += 1
        elapsed = ctx.now() - self._started if self._started else 0.0
        ctx.local_durations.observe(elapsed)
        access_log = ctx.access_log
        if access_log is not None:
            version = self.parser.get_http_version() if method else "1.1"
            access_log.log(
                _Logged(
                    {
                        "time": time.time(),
                        "time_local": ctx.clock.log_time,
                        "remote_addr": self.client_ip.decode(),
                        "listener": ctx.name,
                        "request": b"%s %s HTTP/%s" % (method, self._url, version.encode()),
                        "method": method,
                        "uri": self._url,
                        "status": status,
                        "body_bytes_sent": body_bytes,
                        "request_length": self._body_bytes,
                        "request_time": round(elapsed, 3),
                        "upstream": "",
                        "upstream_addr": "",
                        "upstream_response_time": None,
                        "referer": self._referer,
                        "user_agent": self._agent,
                    }
                )
            )

    def _close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.deadline.cancel()
        if self.transport is not None:
            self.transport.close()  # after what is buffered is written

    def _on_deadline(self) -> None:
        self._close()

    def _proxy_header(self, data: bytes) -> bytes:
        try:
            complete, info, rest = feed_proxy_header(self._proxy_buf or b"", data)
        except ProxyProtocolError:
            self.abort()
            return b""
        if not complete:
            self._proxy_buf = rest
            return b""
        self._proxy_buf = None
        realip = self.ctx.realip
        if info is not None and realip is not None and realip.trusted(self.client_ip):
            self.client_ip = info.src_addr
        return rest

    # -- for the runtime ----------------------------------------------------------------

    def stub_state(self) -> int:
        """0 reading a request, 2 idle (answers are written at once)."""
        return 2 if self._phase == _IDLE else 0

    def close_idle(self) -> bool:
        """Close now unless a request is being read."""
        if self._phase == _IDLE:
            self._close()
            return True
        return False

    def abort(self) -> None:
        """Drop the connection at once."""
        self.closing = True
        self.deadline.cancel()
        if self.transport is not None:
            self.transport.abort()
