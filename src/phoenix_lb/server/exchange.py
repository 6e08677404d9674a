"""One proxied request: choose a server, lend a connection, stream both ways, retry.

An ``Exchange`` is created by the downstream connection when a request head
is complete and is driven by callbacks from both sides; it never awaits
except while opening a new upstream connection.

Attempts and retries (nginx ``proxy_next_upstream error timeout``):

* connect refused or timed out: nothing reached the server, so the request
  goes to the next server whatever its method; the failure counts against
  the server (``max_fails``);
* a *reused* keep-alive connection that dies before any response byte was
  most likely closed by the server while idle: an idempotent request is sent
  again on a fresh connection to the same server, without counting a failure;
* a fresh connection reset before any response byte: the server failed; an
  idempotent request goes to the next server;
* never re-send a non-idempotent request whose bytes may have reached a
  server, and never a request whose body we no longer hold (bodies are kept
  for replay only up to ``REPLAY_LIMIT``);
* each server is tried at most once per request; when all were tried the
  client gets 502 (or 504 when the last attempt timed out);
* no response within ``read`` timeout: 504, no retry (a slow request sent
  elsewhere would run twice).

Once the response head went to the client nothing can be retried: a broken
upstream then breaks the client connection, so the client sees a truncated
response rather than a wrong one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from phoenix_lb.http.errors import CONTINUE, error_response
from phoenix_lb.http.request import (
    RequestHead,
    build_upstream_head,
    remove_fields,
    usable_request_id,
)
from phoenix_lb.http.response import (
    BODY_CHUNKED,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    ResponseHead,
    body_mode,
    build_client_head,
    build_switch_head,
)
from phoenix_lb.server.tunnel import Tunnel
from phoenix_lb.stats import count_index
from phoenix_lb.sticky import CACHE_CONTROL_LINE, StickyTable
from phoenix_lb.upstream.group import HASH_HEADER, HASH_REMOTE_ADDR, HASH_URI

if TYPE_CHECKING:
    from phoenix_lb.limits import ConnLimit
    from phoenix_lb.server.downstream import Downstream
    from phoenix_lb.server.route import Route
    from phoenix_lb.upstream.connection import UpstreamConnection
    from phoenix_lb.upstream.group import UpstreamGroup
    from phoenix_lb.upstream.server import Server

# Request bodies up to this size are kept so an idempotent request can be
# sent again after a reset; larger ones stream without a copy.
REPLAY_LIMIT: Final = 64 * 1024
_LAST_CHUNK: Final = b"0\r\n\r\n"
_CRLF: Final = b"\r\n"
_RETRY_AFTER: Final = b"Retry-After: 1\r\n"

# Reasons an attempt failed, for logs.
_CONNECT_ERROR, _CONNECT_TIMEOUT, _RESET, _TIMEOUT, _INVALID = (
    "connect error",
    "connect timeout",
    "connection reset before response",
    "read timeout",
    "invalid response",
)


# Retry reasons as metric label values (docs/metrics.md).
_RETRY_LABELS: Final = {_CONNECT_TIMEOUT: "connect_timeout", _RESET: "reset"}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Exchange:
    """A request in flight from a client through an upstream server and back."""

    __slots__ = (
        "_switch",
        "body_done",
        "body_received",
        "body_written",
        "bytes_out",
        "client_ip",
        "conn_limit",
        "delay",
        "down",
        "early",
        "finished",
        "group",
        "hash_key",
        "head",
        "head_bytes",
        "keep_alive",
        "last_error",
        "last_server",
        "log",
        "mode",
        "out",
        "pending",
        "replay",
        "replay_size",
        "request_id",
        "response_started",
        "reused",
        "route",
        "sent_continue",
        "server",
        "set_cookie",
        "started_at",
        "status",
        "tried",
        "tunnel",
        "up",
        "upgrade",
        "upstream_head",
        "upstream_started_at",
        "upstream_time",
    )

    def __init__(
        self,
        down: Downstream,
        head: RequestHead,
        group: UpstreamGroup,
        client_ip: bytes = b"",
    ) -> None:
        self.down = down
        self.head = head
        self.group = group
        #: the client's address (the peer, or what a trusted proxy reported)
        self.client_ip = client_ip or down.client_ip
        #: a concurrency limit this request holds a slot of (released at the end)
        self.conn_limit: ConnLimit | None = None
        #: seconds a rate limit wants this request held before it starts
        self.delay = 0.0
        #: a route whose admission (access, limits) is decided when this
        #: request's turn comes, not when it is parsed (pipelining)
        self.route: Route | None = None
        #: False on routes with access_log: false
        self.log = True
        #: the response must set the sticky cookie for the chosen server
        self.set_cookie = False
        #: the request's consistent-hashing key
        self.hash_key = b""
        #: the X-Request-ID this request carries upstream (None: ids are off)
        self.request_id: bytes | None = None
        #: b"websocket" when the client asked to switch protocols
        self.upgrade: bytes | None = None
        #: client bytes that followed the upgrade request (the new protocol's)
        self.early = b""
        #: the tunnel after a 101
        self.tunnel: Tunnel | None = None
        self._switch: ResponseHead | None = None
        self.server: Server | None = None
        self.up: UpstreamConnection | None = None
        self.reused = False
        self.tried = 0
        self.upstream_head = b""
        self.pending: list[bytes] = []
        self.replay: list[bytes] | None = [] if head.idempotent else None
        self.replay_size = 0
        self.body_received = 0
        self.body_written = 0
        self.body_done = not head.has_body
        self.sent_continue = False
        self.response_started = False
        self.finished = False
        self.keep_alive = head.keep_alive
        self.mode = BODY_NONE
        #: bytes for the client produced by the current upstream read
        self.out: list[bytes] = []
        self.status = 0
        self.bytes_out = 0
        #: size of the response head sent (phoenix_sent_bytes counts heads too)
        self.head_bytes = 0
        self.last_error = ""
        self.started_at = 0.0
        self.upstream_started_at = 0.0
        self.upstream_time = -1.0
        #: the server of the last attempt, for stats and the access log
        self.last_server: Server | None = None

    # -- driven by the downstream connection ------------------------------------

    def start(self) -> None:
        """Begin the first attempt (called when this request's turn comes)."""
        ctx = self.down.ctx
        now = self.started_at = ctx.now()
        ids = ctx.request_ids
        if ids is not None and self.request_id is None:
            given = self.head.request_id
            self.request_id = given if usable_request_id(given) else ids.new()
        if self.delay > 0.0:
            # limit_req without nodelay: hold the request.  Reading goes on
            # (a body waits in `pending`, as while connecting), so a client
            # that leaves meanwhile is noticed and never forwarded (nginx
            # watches the client during the delay too).
            self.down.loop.call_later(self.delay, self._start_delayed)
            return
        group = self.group
        if group.hash_kind:
            self.hash_key = self._key()
        sticky = group.sticky
        if sticky is not None:
            pinned = self._sticky(sticky, now)
            if pinned is not None:
                self._use(pinned, now)
                return
        self._try_next(now)

    def _start_delayed(self) -> None:
        self.delay = 0.0
        if not self.finished:
            self.start()

    def _key(self) -> bytes:
        """The request's hash key (hash_key: remote_addr, uri, header:X, cookie:X)."""
        kind = self.group.hash_kind
        head = self.head
        if kind == HASH_REMOTE_ADDR:
            return self.client_ip
        if kind == HASH_URI:
            return head.target
        if kind == HASH_HEADER:
            return head.field(self.group.hash_name) or b""
        wanted = self.group.hash_name + b"="
        for value in head.field_values(b"cookie"):
            for item in value.split(b";"):
                item = item.strip()
                if item.startswith(wanted):
                    return item[len(wanted) :]
        return b""

    def _sticky(self, sticky: StickyTable, now: float) -> Server | None:
        """The server the client's cookie pins (our cookie is removed either way)."""
        head = self.head
        values = head.field_values(b"cookie")
        server_id: bytes | None = None
        if values:
            server_id, rest = sticky.cookie.find(values)
            if rest is not None:
                remove_fields(head.forward, {b"cookie"})
                for value in rest:
                    head.forward += (b"Cookie", b": ", value, b"\r\n")
        pinned = self.group.pinned(sticky.lookup(server_id), now, self.tried)
        if pinned is None:
            # No cookie, an unknown or tampered one, or its server cannot take
            # requests: balance, and pin the client to the chosen server.
            self.set_cookie = True
        return pinned

    def on_body(self, data: bytes) -> None:
        """A piece of request body arrived from the client."""
        self.body_received += len(data)
        if self.finished:
            return
        max_body = self.down.ctx.max_body
        if max_body and self.body_received > max_body:
            # Only chunked bodies get here: a Content-Length over the limit
            # was refused before the exchange started.
            self._fail(413, _INVALID)
            return
        replay = self.replay
        if replay is not None:
            self.replay_size += len(data)
            if self.replay_size <= REPLAY_LIMIT:
                replay.append(data)
            else:
                self.replay = None
        up = self.up
        if up is None:
            self.pending.append(data)
            self.down.pause_reading(_WAIT_UPSTREAM)
            return
        up.write(_chunk(data) if self.head.chunked else data)
        self.body_written += len(data)

    def on_body_end(self) -> None:
        """The request body is complete."""
        self.body_done = True
        if self.finished:
            return
        up = self.up
        if up is not None:
            if self.head.chunked:
                up.write(_LAST_CHUNK)
            up.request_sent()

    def on_client_lost(self) -> None:
        """The client went away: abandon the upstream side."""
        if self.tunnel is not None:
            self.tunnel.close()
            return
        if self.finished:
            return
        self.finished = True
        up = self.up
        if up is not None:
            # abort, not close: an unfinished body must not look complete.
            self.up = None
            up.abort()
        self._release_server()
        self.status = self.status or 499
        self._account()

    def on_client_timeout(self) -> None:
        """The client stopped sending its body."""
        if not self.finished:
            self._fail(408, "client body timeout")

    def on_client_error(self, status: int) -> None:
        """The rest of the request is invalid (a broken chunked body)."""
        self._fail(status, "invalid request body")

    def on_client_writable(self, writable: bool) -> None:
        """The client's write buffer crossed its high/low water mark."""
        up = self.up
        if up is not None and up.transport is not None:
            if writable:
                up.transport.resume_reading()
                if up.awaiting_response:
                    up.deadline.set_after(up.read_timeout)
            else:
                up.transport.pause_reading()
                # We stopped reading the server because the client is slow:
                # client_send rules, the server's read timeout must not run.
                up.deadline.clear()

    # -- attempts ----------------------------------------------------------------

    def _try_next(self, now: float) -> None:
        group = self.group
        server = group.pick(now, self.tried, self.hash_key)
        if server is None and group.try_all:
            server = group.pick_any(self.tried)
        if server is None:
            if self.tried == 0:
                self.down.ctx.logger.warning(
                    "upstream %s: no server available, answering 503", group.name
                )
                self._fail(503, "no live upstreams")
            else:
                self._fail(504 if self.last_error in (_TIMEOUT, _CONNECT_TIMEOUT) else 502, "")
            return
        if group.sticky is not None:
            self.set_cookie = True
        self._use(server, now)

    def _use(self, server: Server, now: float) -> None:
        """Send this attempt to ``server``."""
        self.tried |= 1 << server.index
        self.server = server
        # The attempt's clock (upstream response time) starts before connecting.
        self.upstream_started_at = now
        server.in_flight += 1
        server.requests += 1
        if server.passive.fails:
            server.on_selected(now)
        conn = server.pool.acquire(now)
        if conn is not None:
            self._attach(conn, True, now)
        else:
            self._connect(server)

    def _connect(self, server: Server) -> None:
        if not self.body_done:
            self.down.pause_reading(_WAIT_UPSTREAM)
        self.down.loop.create_task(self._open(server))

    async def _open(self, server: Server) -> None:
        pool = server.pool
        try:
            conn = await pool.open(self.down.ctx.connect_timeout)
        except TimeoutError:
            self._attempt_failed(server, _CONNECT_TIMEOUT, resend_ok=True)
            return
        except OSError as exc:
            self._attempt_failed(
                server, f"{_CONNECT_ERROR} ({exc.strerror or exc})", resend_ok=True
            )
            return
        now = self.down.ctx.now()
        if self.finished or self.server is not server:
            # The client left while we were connecting: keep the connection.
            pool.release(conn, now)
            return
        self._attach(conn, False, now)

    def _attach(self, conn: UpstreamConnection, reused: bool, now: float) -> None:
        down = self.down
        self.up = conn
        self.reused = reused
        head = self.head
        data = self.upstream_head
        if not data:
            data = self.upstream_head = build_upstream_head(
                head,
                self.client_ip,
                down.ctx.scheme,
                down.default_host(self.group),
                down.peer_ip,
                self.upgrade,
                self.request_id,
            )
        pending = self.pending
        if pending:
            self.pending = []
            self.body_written += sum(len(p) for p in pending)
            if head.chunked:
                data += b"".join([_chunk(p) for p in pending])
            else:
                data += b"".join(pending)
        body_done = self.body_done
        if head.chunked and body_done:
            data += _LAST_CHUNK
        conn.start(
            self,
            data,
            head.method == b"HEAD",
            body_done,
            now,
            bool(down.ctx.security_headers),
            self.upgrade is not None,
            self.request_id is not None,
        )
        if down.write_paused:
            conn.transport.pause_reading()  # type: ignore[union-attr]
        if (
            not body_done
            and head.expect_continue
            and not self.sent_continue
            and not self.body_received
        ):
            self.sent_continue = True
            down.write(CONTINUE)
        # Reading may have been paused while connecting (even if the whole
        # body arrived meanwhile, in the same read as the head).
        down.resume_reading(_WAIT_UPSTREAM)

    def _attempt_failed(self, server: Server, reason: str, *, resend_ok: bool) -> None:
        """An attempt on ``server`` failed before any response byte."""
        if self.finished:
            return
        self.last_error = reason
        down = self.down
        now = down.ctx.now()
        group = self.group
        # One observation per attempt, failed ones too: a server that times
        # out shows as slow in its response time histogram, not as absent.
        server.response_time.observe(now - self.upstream_started_at)
        timeout = reason in (_TIMEOUT, _CONNECT_TIMEOUT)
        if group.count_timeouts if timeout else group.count_errors:
            self._count_failure(server, reason, now)
        else:
            down.ctx.logger.info(
                "upstream %s: server %s failed: %s", group.name, server.address, reason
            )
        self._release_server()
        if resend_ok and self._can_resend():
            self._count_retry(_RETRY_LABELS.get(reason, "connect_error"))
            self._try_next(now)
        else:
            self._fail(504 if reason in (_TIMEOUT, _CONNECT_TIMEOUT) else 502, "")

    def _count_failure(self, server: Server, reason: str, now: float) -> None:
        """A failure that counts toward max_fails (fail_on)."""
        if self.group.on_failure(server, now):
            self.down.ctx.logger.warning(
                "upstream %s: server %s out for %gs after %d failures (last: %s)",
                self.group.name,
                server.address,
                server.passive.fail_timeout,
                server.passive.fails,
                reason,
            )
        else:
            self.down.ctx.logger.info(
                "upstream %s: server %s failed: %s", self.group.name, server.address, reason
            )

    def _count_retry(self, label: str) -> None:
        retries = self.group.retries
        retries[label] = retries.get(label, 0) + 1

    def _can_resend(self) -> bool:
        """Can the whole request (head and body so far) be sent again?"""
        if self.body_written == 0:
            return True
        if self.replay is None:
            return False
        # Everything written so far is in the replay buffer: queue it again.
        self.pending = list(self.replay) + self.pending
        self.body_written = 0
        return True

    def _release_server(self) -> None:
        server = self.server
        if server is not None:
            self.server = None
            server.in_flight -= 1
            self.last_server = server

    # -- driven by the upstream connection (ResponseSink) ------------------------

    def on_upstream_head(self, response: ResponseHead) -> None:
        down = self.down
        ctx = down.ctx
        now = ctx.now()
        self.upstream_time = now - self.upstream_started_at
        head = self.head
        status = response.status
        if status == 101:
            # Written with the switch (on_upstream_switched), right after.
            self._switch = response
            return
        mode = self.mode = body_mode(response, head.method, head.version)
        self.status = status
        group = self.group
        server = self.server
        if server is not None:
            if group.feedback:
                group.on_response(server, self.upstream_time, now)
            if status in group.fail_statuses:
                # fail_on: http_50x counts toward max_fails (the response still
                # goes to the client: the request was not retried).
                self._count_failure(server, f"status {status}", now)
        keep_alive = self.keep_alive and mode != BODY_UNTIL_CLOSE and not down.close_after
        self.keep_alive = keep_alive
        self.response_started = True
        extra = ctx.security_headers
        if self.request_id is not None:
            extra = extra + b"X-Request-ID: %s\r\n" % self.request_id
        if self.set_cookie and server is not None and group.sticky is not None:
            extra = extra + group.sticky.set_cookie_line(
                server.index, True if ctx.tls and group.sticky_secure_on_tls else None
            )
            if group.sticky_cache_control:
                extra += CACHE_CONTROL_LINE
        self._emit_head(response, extra)

    def _emit_head(self, response: ResponseHead, extra: bytes) -> None:
        """Queue the client's response head; ``extra`` are our own ``Name: value\r\n`` lines.

        Output seam: the HTTP/2 exchange (server/h2.py) sends HEADERS instead.
        """
        # Corked: written with the body bytes of the same read (flush()), so
        # a small response costs the client one send, not two.
        data = build_client_head(
            response,
            self.mode,
            self.keep_alive,
            self.head.version,
            self.down.ctx.clock.date_line,
            extra,
        )
        self.head_bytes = len(data)
        self.out.append(data)

    def on_upstream_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.mode == BODY_CHUNKED:
            self.out += (b"%x\r\n" % len(data), data, _CRLF)
        else:
            self.out.append(data)

    def flush(self) -> None:
        """Send what the last upstream read produced for the client."""
        out = self.out
        if out:
            self.out = []
            self.down.write_many(out)

    def on_upstream_done(self, reusable: bool) -> None:
        conn = self.up
        self.up = None
        down = self.down
        if self.server is not None:
            # To the last byte, as nginx's $upstream_response_time (the
            # balancers were fed the time to the head in on_upstream_head).
            self.upstream_time = down.ctx.now() - self.upstream_started_at
        self._end_body()
        server = self.server
        if server is not None:
            self.server = None
            server.in_flight -= 1
            self.last_server = server
            if conn is not None:
                if reusable and self.body_done:
                    server.pool.release(conn, down.ctx.now())
                else:
                    conn.close()
            if server.passive.fails:
                server.on_success()
        self.finished = True
        self._account()
        down.exchange_done(self, self.keep_alive and self.body_done)

    def _end_body(self) -> None:
        """The response body is complete: send the rest (and the last chunk).

        Output seam: the HTTP/2 exchange ends its stream instead.
        """
        out = self.out
        if self.mode == BODY_CHUNKED:
            out.append(_LAST_CHUNK)
        if out:
            self.out = []
            self.down.write_many(out)

    def on_upstream_switched(self, rest: bytes) -> None:
        """The upstream accepted the upgrade: from now on both sides are a tunnel."""
        conn = self.up
        response = self._switch
        if conn is None or response is None or self.finished or self.upgrade is None:
            if conn is not None:
                conn.close()
            return
        down = self.down
        ctx = down.ctx
        self.status = 101
        self.response_started = True
        extra = ctx.security_headers
        server = self.server
        group = self.group
        if self.set_cookie and server is not None and group.sticky is not None:
            extra = extra + group.sticky.set_cookie_line(
                server.index, True if ctx.tls and group.sticky_secure_on_tls else None
            )
        if self.request_id is not None:
            extra = extra + b"X-Request-ID: %s\r\n" % self.request_id
        switch = build_switch_head(response, self.upgrade, extra)
        self.head_bytes = len(switch)
        down.write(switch)
        tunnel = Tunnel(down, conn, self, ctx.tunnel_idle)
        self.tunnel = tunnel
        down.tunnel = tunnel
        conn.tunnel = tunnel
        if rest:
            tunnel.from_upstream(rest)
        if self.early:
            early, self.early = self.early, b""
            tunnel.from_client(early)
        down.resume_reading(_SWITCHING)

    def tunnel_ended(self, bytes_down: int) -> None:
        """The tunnel closed: the request is over."""
        self.up = None
        self.bytes_out = bytes_down
        server = self.server
        if server is not None and server.passive.fails:
            server.on_success()
        self._release_server()
        if not self.finished:
            self.finished = True
            self._account()

    def on_upstream_lost(self, got_response_bytes: bool) -> None:
        self.up = None
        server = self.server
        if server is None or self.finished:
            return
        if self.response_started:
            self.down.ctx.logger.warning(
                "upstream %s: server %s closed the connection mid-response",
                self.group.name,
                server.address,
            )
            self._failed_mid_response(server, _RESET)
            return
        if got_response_bytes:
            self._attempt_failed(server, _INVALID, resend_ok=False)
            return
        idempotent = self.head.idempotent
        if self.reused and idempotent and self._can_resend():
            # Most likely the server closed this idle keep-alive connection
            # as we sent: not the server's fault, try a fresh connection.
            self.down.ctx.logger.debug(
                "upstream %s: reused connection to %s closed, retrying on a new one",
                self.group.name,
                server.address,
            )
            self.reused = False
            self._count_retry("stale_connection")
            self._connect(server)
            return
        self._attempt_failed(server, _RESET, resend_ok=idempotent)

    def on_upstream_invalid(self, reason: str) -> None:
        self.up = None
        server = self.server
        if server is None or self.finished:
            return
        self.down.ctx.logger.warning(
            "upstream %s: server %s: %s", self.group.name, server.address, reason
        )
        if self.response_started:
            self._failed_mid_response(server, _INVALID)
            return
        self._attempt_failed(server, _INVALID, resend_ok=False)

    def on_upstream_timeout(self) -> None:
        self.up = None
        server = self.server
        if server is None or self.finished:
            return
        if self.response_started:
            self._failed_mid_response(server, _TIMEOUT)
            return
        self._attempt_failed(server, _TIMEOUT, resend_ok=False)

    def _failed_mid_response(self, server: Server, reason: str) -> None:
        """The response broke off after its head went out: cut the client off.

        It counts toward max_fails only when ``fail_on`` lists its kind, as
        a failure before the response would.
        """
        group = self.group
        now = self.down.ctx.now()
        self.upstream_time = now - self.upstream_started_at  # to the failure
        if group.count_timeouts if reason == _TIMEOUT else group.count_errors:
            self._count_failure(server, reason, now)
        self._release_server()
        self._abort_client()

    def on_upstream_writable(self, writable: bool) -> None:
        down = self.down
        if writable:
            down.resume_reading(_UPSTREAM_FULL)
        else:
            down.pause_reading(_UPSTREAM_FULL)

    # -- endings -----------------------------------------------------------------

    def _fail(self, status: int, reason: str) -> None:
        """Answer with an error of our own, or break the client connection."""
        if self.finished:
            return
        up = self.up
        if up is not None:
            self.up = None
            up.abort()
        self._release_server()
        if self.response_started:
            self._abort_client()
            return
        if reason:
            self.last_error = reason
        down = self.down
        self.status = status
        # After 408/413 the rest of the body is unknown: close.
        keep_alive = self.keep_alive and self.body_done and status not in (408, 413)
        self.keep_alive = keep_alive
        extra = (_RETRY_AFTER if status == 503 else b"") + down.ctx.security_headers
        self._emit_error(status, extra)
        self._finish()

    def _emit_error(self, status: int, extra: bytes) -> None:
        """Send our own error response for ``status`` (``extra``: header lines).

        Output seam: the HTTP/2 exchange sends it as HEADERS and DATA.
        """
        down = self.down
        data = error_response(
            status,
            date=down.ctx.clock.date_line,
            close=not self.keep_alive,
            head_only=self.head.method == b"HEAD",
            extra=extra,
        )
        self.head_bytes = len(data)  # counted in phoenix_sent_bytes
        down.write(data)

    def _abort_client(self) -> None:
        self.finished = True
        self.keep_alive = False
        self._account()
        self.down.abort()

    def _finish(self) -> None:
        self.finished = True
        self._account()
        self.down.exchange_done(self, self.keep_alive and self.body_done)

    def _account(self) -> None:
        """Stats and access log for the finished request (runs once per request)."""
        ctx = self.down.ctx
        elapsed = ctx.now() - self.started_at
        index = count_index(ctx.index, self.head.method, self.status)
        server = self.last_server
        if server is not None:
            server.counts[index] += 1
            if self.upstream_time >= 0.0:
                server.response_time.observe(self.upstream_time)
        else:
            self.group.counts[index] += 1
        self.group.durations[ctx.index].observe(elapsed)
        ctx.bytes_out += self.bytes_out + self.head_bytes
        conn_limit = self.conn_limit
        if conn_limit is not None:
            self.conn_limit = None
            conn_limit.release(self.client_ip)
        access_log = ctx.access_log
        if access_log is not None and self.log:
            access_log.log(self)

    def log_fields(self) -> dict[str, object]:
        """Fields for the access log (only called when logging is on)."""
        down = self.down
        head = self.head
        referer = head.field(b"referer") or b""
        agent = head.field(b"user-agent") or b""
        loop_now = down.ctx.now()
        return {
            "time": time.time(),
            "time_local": down.ctx.clock.log_time,
            # After trusted_proxies/real_ip_header, as nginx's $remote_addr.
            "remote_addr": self.client_ip.decode(),
            "listener": down.ctx.name,
            "request": b"%s %s HTTP/%s" % (head.method, head.target, head.version.encode()),
            "method": head.method,
            "uri": head.target,
            "status": self.status,
            "body_bytes_sent": self.bytes_out,
            "request_length": self.body_received,
            "request_time": round(loop_now - self.started_at, 3),
            "upstream": self.group.name,
            "upstream_addr": self.last_server.address if self.last_server else "",
            "upstream_response_time": round(self.upstream_time, 3)
            if self.upstream_time >= 0
            else None,
            "referer": referer,
            "user_agent": agent,
            "request_id": self.request_id or b"",
            "tls": down.tls_version,
        }


# Reasons the downstream connection stops reading (a bitmask there).
_WAIT_UPSTREAM: Final = 1
_UPSTREAM_FULL: Final = 2
# (h1.py owns 4 and 8; 16 is free.)
_SWITCHING: Final = 32


class LocalResponse:
    """A response the proxy makes itself (404, 413, 400...), queued in order.

    It takes the place of an Exchange in the downstream connection's queue
    so that pipelined responses keep their order even when one is an error.
    """

    __slots__ = (
        "body_done",
        "body_size",
        "client_ip",
        "close",
        "down",
        "extra",
        "finished",
        "head",
        "head_only",
        "log",
        "started_at",
        "status",
    )

    def __init__(
        self,
        down: Downstream,
        status: int,
        *,
        close: bool,
        head_only: bool = False,
        body_done: bool = True,
        extra: bytes = b"",
        client_ip: bytes = b"",
    ) -> None:
        self.down = down
        self.status = status
        self.close = close
        #: the client's address as admission decided it (realip), for the log
        self.client_ip = client_ip or down.client_ip
        self.started_at = down.ctx.now()
        self.head_only = head_only
        self.body_done = body_done
        self.extra = extra
        self.finished = False
        #: the refused request, when it was parsed (for the access log)
        self.head: RequestHead | None = None
        #: False on routes with access_log: false
        self.log = True
        self.body_size = 0

    def start(self) -> None:
        down = self.down
        keep_alive = not self.close and self.body_done
        ctx = down.ctx
        head = self.head
        ctx.local_counts[count_index(0, head.method if head is not None else b"", self.status)] += 1
        ctx.local_durations.observe(ctx.now() - self.started_at)
        data = error_response(
            self.status,
            date=ctx.clock.date_line,
            close=not keep_alive,
            head_only=self.head_only,
            extra=self.extra + ctx.security_headers,
        )
        ctx.bytes_out += len(data)
        down.write(data)
        self.finished = True
        access_log = ctx.access_log
        if access_log is not None and self.log and self.head is not None:
            # Refusals are logged like nginx logs its own 403/404/429s: an
            # operator looking for rate-limited clients finds them here.
            self.body_size = 0 if self.head_only else len(data) - data.find(b"\r\n\r\n") - 4
            access_log.log(self)
        down.exchange_done(self, keep_alive)

    def on_body(self, data: bytes) -> None:
        """Bodies of refused requests are read and dropped."""

    def on_body_end(self) -> None:
        self.body_done = True

    def on_client_lost(self) -> None:
        self.finished = True

    def on_client_timeout(self) -> None:
        self.down.abort()

    def on_client_writable(self, writable: bool) -> None:
        pass

    def on_client_error(self, status: int) -> None:
        if not self.finished:
            self.status = status
        self.close = True

    def log_fields(self) -> dict[str, object]:
        """Fields for the access log (only called when there is a head)."""
        down = self.down
        head = self.head
        assert head is not None
        return {
            "time": time.time(),
            "time_local": down.ctx.clock.log_time,
            "remote_addr": self.client_ip.decode(),
            "listener": down.ctx.name,
            "request": b"%s %s HTTP/%s" % (head.method, head.target, head.version.encode()),
            "method": head.method,
            "uri": head.target,
            "status": self.status,
            "body_bytes_sent": self.body_size,
            "request_length": 0,
            "request_time": 0.0,
            "upstream": "",
            "upstream_addr": "",
            "upstream_response_time": None,
            "referer": head.field(b"referer") or b"",
            "user_agent": head.field(b"user-agent") or b"",
            "request_id": head.request_id or b"",
            "tls": down.tls_version,
        }
