"""An independent HTTP/1.1 origin server for integration tests.

:class:`Backend` is a small asyncio server that runs on its own event loop in
a background thread, so synchronous pytest tests can start one per upstream
server, point the proxy at ``backend.address`` and then look at what arrived
(``backend.requests``, ``backend.connections_accepted``, ``backend.errors``).

It parses requests by hand from plain asyncio streams, not with httptools
and not with anything from ``phoenix_lb``: the backend is the proxy's peer,
and a parsing bug shared by both would be invisible.  Parsing is strict
(RFC 9112): a request the proxy should never have forwarded -- ambiguous
framing, obs-fold, a missing Host -- is answered 400, closed, and noted in
``backend.errors`` instead of ``backend.requests``, so a test can assert that
nothing bad reached the backend with ``backend.requests == []`` and
``backend.errors == []``.

Routes (query parameters in brackets; every path also answers HEAD with the
same head and no body)::

    /                    200 "<name>\\n" (also any unknown path)
    /health              200 "ok", or 503 while backend.healthy is False
    /echo                200 JSON describing the request as received
    /slow[?delay=0.5]    sleeps, then 200
    /big[?size=N&chunked=0|1]  N bytes of pattern_body(), 64 KiB per write,
                         each write awaited with drain() (flow control)
    /drip[?count=5&interval=0.1&size=16&chunked=1]  body pieces with pauses
    /status/NNN          that status with a small body (none for 204/304)
    /204                 204, no body
    /headers?Name=Value  200 with those extra response fields, in order
    /close               read the request, close without answering (FIN)
    /reset               read the request, abort with RST (SO_LINGER 0)
    /hang                read the request, never answer until the peer
                         closes or the backend stops
    /close-delimited[?size=N]  HTTP/1.1 200 without Content-Length or
                         Transfer-Encoding; the body ends at close
    /sink                count and hash the body without storing it; answer
                         JSON {body_len, body_sha256}

Every response carries ``X-Backend: <name>`` and ``X-Backend-Conn: <id>``
(the backend's connection id, also in :attr:`RecordedRequest.conn_id`).

Switches, settable from the test thread at any time: ``healthy``, ``delay``
(seconds added before every response), ``fail_mode`` (``None``,
``"close"``, ``"reset"`` or ``"503"`` applied to every request after it has
been read and recorded), ``send_100_continue``, ``keepalive_timeout`` and
``max_requests_per_connection``.

:class:`RefusingPort`, :class:`BlackholePort` and :class:`SilentPort` are
ports that refuse, never complete a connect, or accept and never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit

from .rawhttp import TCHAR, Headers, ProtocolError, field_values, parse_head

__all__ = [
    "Backend",
    "BlackholePort",
    "FailMode",
    "RecordedRequest",
    "RefusingPort",
    "SilentPort",
    "pattern_body",
    "pattern_sha256",
]

FailMode = Literal["close", "reset", "503"] | None
_FAIL_MODES = (None, "close", "reset", "503")

# A request head larger than this gets 431.  The proxy's default limit is
# 16 KiB; 1 MiB lets tests raise it and still reach the backend.  The same
# number bounds the StreamReader buffer, which pauses reading at twice this.
_HEAD_LIMIT = 1 << 20
# /big and /sink move data in 64 KiB pieces, the size of asyncio's default
# write-buffer high-water mark, so each drain() actually waits for the peer.
_PIECE = 65536
_PATTERN_BLOCK = bytes(range(256)) * (_PIECE // 256)
_STOP_TIMEOUT = 10.0

_T = TypeVar("_T")


def pattern_body(size: int) -> bytes:
    """The first ``size`` bytes of the /big pattern: 0x00..0xff repeated."""
    full, rest = divmod(size, _PIECE)
    return _PATTERN_BLOCK * full + _PATTERN_BLOCK[:rest]


def pattern_sha256(size: int) -> str:
    """SHA-256 hex digest of ``pattern_body(size)``, computed in pieces."""
    sha = hashlib.sha256()
    full, rest = divmod(size, _PIECE)
    for _ in range(full):
        sha.update(_PATTERN_BLOCK)
    sha.update(_PATTERN_BLOCK[:rest])
    return sha.hexdigest()


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A complete request as the backend received it.

    ``headers`` keep the received case and order; ``raw_head`` is the exact
    head bytes (request line through the blank line).  ``body`` is the
    de-chunked body (empty for /sink, whose size is still in ``body_len``).
    ``chunked`` tells whether the body came with chunked framing.
    """

    conn_id: int
    method: str
    target: str
    version: str
    headers: Headers
    body: bytes
    body_len: int
    body_sha256: str
    raw_head: bytes
    chunked: bool
    trailers: Headers
    received_at: float = field(compare=False)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (case-insensitive), or None."""
        values = field_values(self.headers, name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        """Every value of ``name`` (case-insensitive), in order."""
        return field_values(self.headers, name)

    def header_names(self) -> list[str]:
        """Field names in received order and case."""
        return [n for n, _ in self.headers]


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(slots=True)
class _Head:
    method: str
    target: str
    version: str
    headers: Headers
    raw: bytes


@dataclass(slots=True)
class _Conn:
    conn_id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None


def _tokens(headers: Headers, name: str) -> list[str]:
    out: list[str] = []
    for value in field_values(headers, name):
        out.extend(t.strip().lower() for t in value.split(",") if t.strip())
    return out


def _parse_request_head(raw: bytes) -> _Head:
    """Strictly parse a request head; raise _BadRequest naming the fault."""
    try:
        start, headers = parse_head(raw)
    except ProtocolError as exc:
        raise _BadRequest(400, str(exc)) from None
    parts = start.split(b" ")
    if len(parts) != 3:
        raise _BadRequest(400, f"malformed request line {start!r}")
    method, target, version = parts
    if not method or any(c not in TCHAR for c in method):
        raise _BadRequest(400, f"invalid method {method!r}")
    if not target or any(c <= 0x20 or c >= 0x7F for c in target):
        raise _BadRequest(400, f"invalid request target {target!r}")
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        if len(version) == 8 and version[:5] == b"HTTP/" and version[6:7] == b".":
            raise _BadRequest(505, f"unsupported version {version!r}")
        raise _BadRequest(400, f"invalid version {version!r}")
    head = _Head(method.decode(), target.decode("ascii"), version.decode(), headers, raw)
    hosts = field_values(headers, "host")
    if head.version == "HTTP/1.1" and len(hosts) != 1:
        raise _BadRequest(400, f"HTTP/1.1 request with {len(hosts)} Host fields")
    return head


def _body_framing(head: _Head) -> tuple[bool, int]:
    """(chunked, content_length) per RFC 9112 6.3, rejecting ambiguity."""
    te = _tokens(head.headers, "transfer-encoding")
    cls = field_values(head.headers, "content-length")
    if te and cls:
        raise _BadRequest(400, "both Transfer-Encoding and Content-Length")
    if te:
        if head.version == "HTTP/1.0":
            raise _BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
        if te != ["chunked"]:
            raise _BadRequest(400, f"Transfer-Encoding other than chunked: {te!r}")
        return True, 0
    if cls:
        values = {v.strip() for c in cls for v in c.split(",")}
        if len(values) != 1:
            raise _BadRequest(400, f"differing Content-Length values {cls!r}")
        value = values.pop()
        if not value.isdigit() or not value.isascii():
            raise _BadRequest(400, f"invalid Content-Length {value!r}")
        return False, int(value)
    return False, 0


def _keep_alive(head: _Head) -> bool:
    tokens = _tokens(head.headers, "connection")
    if "close" in tokens:
        return False
    return head.version == "HTTP/1.1" or "keep-alive" in tokens


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _BodySink:
    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.parts: list[bytes] = []
        self.length = 0
        self.sha = hashlib.sha256()

    def add(self, data: bytes) -> None:
        self.length += len(data)
        self.sha.update(data)
        if self.keep:
            self.parts.append(data)


class _Incomplete(Exception):
    """The client went away inside a request body."""


class Backend:
    """A test HTTP/1.1 server on 127.0.0.1 running in a background thread.

    ``port=0`` picks an ephemeral port on the first start; later starts
    (after a stop) bind the same port again, so a test can take a server
    down and bring it back at the same address.
    """

    def __init__(self, name: str, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        #: /health answers 503 while False.
        self.healthy = True
        #: Seconds to wait before every response (after the request is read).
        self.delay = 0.0
        #: Force every request to close, reset or get 503 (None: off).
        self.fail_mode: FailMode = None
        #: Answer ``Expect: 100-continue`` with an interim 100 before reading the body.
        self.send_100_continue = True
        #: Close a keep-alive connection idle this long between requests (None: never).
        self.keepalive_timeout: float | None = None
        #: Answer this many requests on a connection, the last with
        #: ``Connection: close`` (nginx ``keepalive_requests``; None: no limit).
        self.max_requests_per_connection: int | None = None
        self._port = port
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._accepted = 0
        self._next_conn_id = 1
        self._conns: dict[int, _Conn] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # ----------------------------------------------------------------- control

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"backend {self.name!r} has not been started")
        return self._port

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``, the form used in the proxy's config."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> Backend:
        """Bind and serve; returns once the port is listening.  No-op if running."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._startup_error = None
        thread = threading.Thread(
            target=self._run, args=(ready,), name=f"backend-{self.name}", daemon=True
        )
        thread.start()
        if not ready.wait(_STOP_TIMEOUT):
            raise RuntimeError(f"backend {self.name!r} did not start")
        if self._startup_error is not None:
            thread.join(_STOP_TIMEOUT)
            raise self._startup_error
        self._thread = thread
        return self

    def stop(self) -> None:
        """Close the listener and every connection, join the thread.  Idempotent."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or stop_event is None:
            return
        self._thread = None
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"backend {self.name!r} thread did not stop")

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def kill_connections(self, *, rst: bool = False) -> int:
        """Abort every open client connection (RST if ``rst``); return how many.

        Returns after the connections are closed and their handlers ended.
        The listener keeps accepting.
        """
        return self._call(self._abort_all(rst))

    # ----------------------------------------------------------------- records

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the complete requests received, in arrival order."""
        with self._cond:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        """Protocol faults seen: rejected requests, clients gone mid-body."""
        with self._cond:
            return list(self._errors)

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted since start (or the last :meth:`reset`)."""
        with self._cond:
            return self._accepted

    @property
    def open_connections(self) -> int:
        """Client connections open right now."""
        with self._cond:
            return len(self._conns)

    def reset(self) -> None:
        """Forget recorded requests and errors and zero ``connections_accepted``."""
        with self._cond:
            self._requests.clear()
            self._errors.clear()
            self._accepted = 0

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests are recorded; return them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"backend {self.name!r}: {len(self._requests)} of {count} requests "
                    f"after {timeout}s"
                )
            return list(self._requests)

    def wait_until(self, predicate: Callable[[Backend], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate(self)`` until true; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"backend {self.name!r}: condition not met in {timeout}s")
            time.sleep(0.005)

    # ------------------------------------------------------------- loop thread

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if self._thread is None or loop is None:
            coro.close()
            raise RuntimeError(f"backend {self.name!r} is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_STOP_TIMEOUT)

    def _run(self, ready: threading.Event) -> None:
        # A plain selector loop, whatever policy the process installed: the
        # proxy under test may run uvloop, and the backend should not share it.
        loop = asyncio.SelectorEventLoop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # surfaced by start() or kept in errors
            if not ready.is_set():
                self._startup_error = exc
            else:
                self._record_error(0, f"backend loop failed: {exc!r}")
        finally:
            ready.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        server = await asyncio.start_server(
            self._handle, self.host, self._port, limit=_HEAD_LIMIT, backlog=1024
        )
        try:
            self._port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop_event.wait()
        finally:
            server.close()
            await self._abort_all(rst=False)
            # A connection accepted just before close() registers itself
            # only when its handler first runs: sweep until none is left, or
            # its transport leaks (a ResourceWarning, an error in the suite).
            for _ in range(20):
                await asyncio.sleep(0)
                if not self._conns:
                    break
                await self._abort_all(rst=False)
            await server.wait_closed()

    async def _abort_all(self, rst: bool) -> int:
        conns = list(self._conns.values())
        for conn in conns:
            transport = conn.writer.transport
            if rst:
                _set_linger_zero(conn.writer)
            transport.abort()
        tasks = [c.task for c in conns if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # abort() closes the socket in a callback scheduled for the next
        # iteration; let it run so no transport outlives this call.
        await asyncio.sleep(0)
        return len(conns)

    def _record_error(self, conn_id: int, message: str) -> None:
        with self._cond:
            self._errors.append(f"conn {conn_id}: {message}")
            self._cond.notify_all()

    def _record_request(self, request: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._cond:
            conn_id = self._next_conn_id
            self._next_conn_id += 1
            self._accepted += 1
            conn = _Conn(conn_id, reader, writer, asyncio.current_task())
            self._conns[conn_id] = conn
        try:
            await self._serve_connection(conn)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:
            self._record_error(conn_id, f"handler failed: {exc!r}")
        finally:
            try:
                writer.close()
                await writer.wait_closed()
            except (Exception, asyncio.CancelledError):
                writer.transport.abort()
            with self._cond:
                self._conns.pop(conn_id, None)

    async def _serve_connection(self, conn: _Conn) -> None:
        reader, writer = conn.reader, conn.writer
        served = 0
        while True:
            timeout = None if served == 0 else self.keepalive_timeout
            served += 1
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    self._record_error(conn.conn_id, f"EOF inside request head: {exc.partial!r}")
                return
            except asyncio.LimitOverrunError:
                self._record_error(conn.conn_id, "request head too large")
                await self._send_error(writer, 431, "request head too large")
                return
            except TimeoutError:
                return  # keepalive_timeout: close the idle connection
            try:
                head = _parse_request_head(raw)
                chunked, length = _body_framing(head)
            except _BadRequest as exc:
                self._record_error(conn.conn_id, f"rejected {raw[:200]!r}: {exc}")
                await self._send_error(writer, exc.status, str(exc))
                return
            received_at = time.monotonic()
            path = urlsplit(head.target).path
            if (
                self.send_100_continue
                and head.version == "HTTP/1.1"
                and "100-continue" in _tokens(head.headers, "expect")
                and (chunked or length)
            ):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
            sink = _BodySink(keep=path != "/sink")
            try:
                trailers = await self._read_body(reader, chunked, length, sink)
            except _BadRequest as exc:
                self._record_error(conn.conn_id, f"bad body for {head.target}: {exc}")
                await self._send_error(writer, exc.status, str(exc))
                return
            except _Incomplete as exc:
                self._record_error(conn.conn_id, f"{head.method} {head.target}: {exc}")
                return
            request = RecordedRequest(
                conn_id=conn.conn_id,
                method=head.method,
                target=head.target,
                version=head.version,
                headers=head.headers,
                body=b"".join(sink.parts),
                body_len=sink.length,
                body_sha256=sink.sha.hexdigest(),
                raw_head=head.raw,
                chunked=chunked,
                trailers=trailers,
                received_at=received_at,
            )
            self._record_request(request)
            limit = self.max_requests_per_connection
            keep_alive = _keep_alive(head) and (limit is None or served < limit)
            if not await self._respond(conn, request, keep_alive):
                return

    async def _read_body(
        self, reader: asyncio.StreamReader, chunked: bool, length: int, sink: _BodySink
    ) -> Headers:
        async def read_data(n: int) -> None:
            try:
                sink.add(await reader.readexactly(n))
            except asyncio.IncompleteReadError as exc:
                sink.add(exc.partial)
                raise

        try:
            if not chunked:
                while sink.length < length:
                    await read_data(min(_PIECE, length - sink.length))
                return []
            while True:
                line = (await reader.readuntil(b"\r\n"))[:-2]
                size_part = line.split(b";", 1)[0]
                if b";" in line:
                    size_part = size_part.rstrip(b" \t")
                if not size_part or any(c not in b"0123456789abcdefABCDEF" for c in size_part):
                    raise _BadRequest(400, f"invalid chunk size line {line!r}")
                size = int(size_part, 16)
                if size == 0:
                    break
                while size:
                    n = min(_PIECE, size)
                    await read_data(n)
                    size -= n
                if await reader.readexactly(2) != b"\r\n":
                    raise _BadRequest(400, "chunk data not followed by CRLF")
            block = b""
            while True:
                line = await reader.readuntil(b"\r\n")
                block += line
                if line == b"\r\n":
                    break
                if b"\n" in line[:-2] or b"\r" in line[:-2]:
                    raise _BadRequest(400, "bare CR or LF in trailer")
            if block == b"\r\n":
                return []
            try:
                return parse_head(b"X\r\n" + block)[1]
            except ProtocolError as exc:
                raise _BadRequest(400, f"bad trailer: {exc}") from None
        except asyncio.IncompleteReadError:
            expected = "chunked" if chunked else str(length)
            raise _Incomplete(
                f"client closed inside the body after {sink.length} of {expected} bytes"
            ) from None
        except asyncio.LimitOverrunError:
            raise _BadRequest(400, "chunk size or trailer line too long") from None

    # ---------------------------------------------------------------- responses

    def _head_bytes(
        self,
        conn: _Conn,
        request: RecordedRequest,
        status: int,
        fields: Headers,
        keep_alive: bool,
    ) -> bytes:
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += [f"{n}: {v}" for n, v in fields]
        lines.append(f"X-Backend: {self.name}")
        lines.append(f"X-Backend-Conn: {conn.conn_id}")
        if not keep_alive:
            lines.append("Connection: close")
        elif request.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(
        self,
        conn: _Conn,
        request: RecordedRequest,
        status: int,
        body: bytes,
        keep_alive: bool,
        *,
        content_type: str = "text/plain",
        extra: Headers | None = None,
    ) -> bool:
        fields: Headers = list(extra or [])
        if status not in (204, 304):
            fields.append(("Content-Type", content_type))
            fields.append(("Content-Length", str(len(body))))
        writer = conn.writer
        writer.write(self._head_bytes(conn, request, status, fields, keep_alive))
        if request.method != "HEAD" and status not in (204, 304):
            writer.write(body)
        await writer.drain()
        return keep_alive

    async def _send_error(self, writer: asyncio.StreamWriter, status: int, reason: str) -> None:
        body = f"{reason}\n".encode("latin-1", "replace")
        writer.write(
            (
                f"HTTP/1.1 {status} {_reason(status)}\r\nX-Backend: {self.name}\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()

    async def _respond(self, conn: _Conn, request: RecordedRequest, keep_alive: bool) -> bool:
        """Answer one request; return whether the connection stays open."""
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        mode = self.fail_mode
        if mode not in _FAIL_MODES:
            raise ValueError(f"unknown fail_mode {mode!r}")
        path = request.path
        query = request.query
        if mode == "close" or path == "/close":
            return False
        if mode == "reset" or path == "/reset":
            _set_linger_zero(conn.writer)
            conn.writer.transport.abort()
            return False
        if mode == "503":
            return await self._send(conn, request, 503, b"forced failure\n", keep_alive)
        if path == "/health":
            if self.healthy:
                return await self._send(conn, request, 200, b"ok", keep_alive)
            return await self._send(conn, request, 503, b"unhealthy", keep_alive)
        if path == "/echo":
            return await self._send(
                conn,
                request,
                200,
                self._echo_body(conn, request),
                keep_alive,
                content_type="application/json",
            )
        if path == "/sink":
            body = json.dumps(
                {"body_len": request.body_len, "body_sha256": request.body_sha256}
            ).encode()
            return await self._send(
                conn, request, 200, body, keep_alive, content_type="application/json"
            )
        if path == "/slow":
            await asyncio.sleep(float(query.get("delay", "0.5")))
            return await self._send(conn, request, 200, b"slow\n", keep_alive)
        if path == "/big":
            size = int(query.get("size", str(1 << 20)))
            chunked = query.get("chunked", "0") == "1"
            return await self._stream(conn, request, keep_alive, size, chunked, 1, 0.0)
        if path == "/drip":
            count = int(query.get("count", "5"))
            size = int(query.get("size", "16"))
            chunked = query.get("chunked", "1") == "1"
            interval = float(query.get("interval", "0.1"))
            return await self._stream(conn, request, keep_alive, size, chunked, count, interval)
        if path == "/hang":
            while await conn.reader.read(_PIECE):
                pass
            return False
        if path == "/close-delimited":
            size_text = query.get("size")
            body = pattern_body(int(size_text)) if size_text else f"{self.name}\n".encode()
            conn.writer.write(self._head_bytes(conn, request, 200, [], True))
            if request.method != "HEAD":
                conn.writer.write(body)
            await conn.writer.drain()
            return False
        if path == "/204":
            return await self._send(conn, request, 204, b"", keep_alive)
        if path.startswith("/status/"):
            code_text = path.removeprefix("/status/")
            if not (code_text.isdigit() and 200 <= int(code_text) <= 599):
                return await self._send(conn, request, 400, b"bad status\n", keep_alive)
            code = int(code_text)
            return await self._send(conn, request, code, f"status {code}\n".encode(), keep_alive)
        if path == "/headers":
            extra = parse_qsl(urlsplit(request.target).query, keep_blank_values=True)
            return await self._send(conn, request, 200, b"headers\n", keep_alive, extra=extra)
        return await self._send(conn, request, 200, f"{self.name}\n".encode(), keep_alive)

    def _echo_body(self, conn: _Conn, request: RecordedRequest) -> bytes:
        return json.dumps(
            {
                "backend": self.name,
                "conn": conn.conn_id,
                "method": request.method,
                "target": request.target,
                "version": request.version,
                "headers": [[n, v] for n, v in request.headers],
                "chunked": request.chunked,
                "body_len": request.body_len,
                "body_sha256": request.body_sha256,
            }
        ).encode()

    async def _stream(
        self,
        conn: _Conn,
        request: RecordedRequest,
        keep_alive: bool,
        size: int,
        chunked: bool,
        count: int,
        interval: float,
    ) -> bool:
        """Send ``count`` pieces of ``size`` pattern bytes, ``interval`` apart."""
        writer = conn.writer
        fields: Headers = [("Content-Type", "application/octet-stream")]
        if chunked and request.version == "HTTP/1.0":
            # No chunked coding towards an HTTP/1.0 client: delimit by close.
            chunked, keep_alive = False, False
            total = None
        else:
            total = size * count
        if chunked:
            fields.append(("Transfer-Encoding", "chunked"))
        elif total is not None:
            fields.append(("Content-Length", str(total)))
        writer.write(self._head_bytes(conn, request, 200, fields, keep_alive))
        await writer.drain()
        if request.method == "HEAD":
            return keep_alive
        for i in range(count):
            if i and interval > 0:
                await asyncio.sleep(interval)
            remaining = size
            while remaining:
                n = min(_PIECE, remaining)
                piece = _PATTERN_BLOCK if n == _PIECE else _PATTERN_BLOCK[:n]
                if chunked:
                    writer.write(b"%x\r\n" % n + piece + b"\r\n")
                else:
                    writer.write(piece)
                await writer.drain()
                remaining -= n
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return keep_alive


def _set_linger_zero(writer: asyncio.StreamWriter) -> None:
    """Make the next close send RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --------------------------------------------------------------- special ports


class _PortBase:
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RefusingPort(_PortBase):
    """A port where every connect is refused at once (ECONNREFUSED).

    The port stays reserved: the socket is bound but never listens, and on
    Linux a SYN to a bound, non-listening port is answered with RST.  So
    there is no window in which another process could take the port, as
    there would be with bind-then-close.  ``close()`` releases it.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self.port = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()


class SilentPort(_PortBase):
    """A port that completes TCP connects (kernel backlog) but never reads or
    answers: for read and send timeouts.  Up to ``backlog`` connections are
    accepted by the kernel; the application never calls accept().
    """

    def __init__(self, host: str = "127.0.0.1", backlog: int = 128) -> None:
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(backlog)
        self.port = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()


class BlackholePort(_PortBase):
    """A port where connect() neither succeeds nor fails: for connect timeouts.

    How: a socket listens with backlog 0 and never accepts.  Linux admits
    ``backlog + 1`` connections to the accept queue (``sk_acceptq_is_full``
    compares with ``>``); once it is full, ``tcp_conn_request`` drops every
    further SYN without answering (``net.ipv4.tcp_abort_on_overflow`` = 0,
    the default), so the client stays in SYN-SENT and retransmits (after 1 s,
    3 s, ...) until its own timeout.  The constructor fills the queue with
    filler connections until a probe connect does not complete within
    ``probe_timeout``, which verifies the behaviour; if it cannot get there
    it raises RuntimeError (e.g. ``tcp_abort_on_overflow`` = 1, where connects
    are reset instead).  No network beyond loopback is involved.

    The kernel may log "possible SYN flooding on port N" once; harmless.
    """

    def __init__(
        self, host: str = "127.0.0.1", *, max_fill: int = 64, probe_timeout: float = 0.3
    ) -> None:
        self.host = host
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._fillers: list[socket.socket] = []
        try:
            self._listener.bind((host, 0))
            self._listener.listen(0)
            self.port = self._listener.getsockname()[1]
            self._fill(max_fill, probe_timeout)
        except BaseException:
            self.close()
            raise

    def _fill(self, max_fill: int, probe_timeout: float) -> None:
        for _ in range(max_fill):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setblocking(False)
            rc = probe.connect_ex((self.host, self.port))
            if rc not in (0, errno.EINPROGRESS):
                probe.close()
                raise RuntimeError(f"BlackholePort: probe connect failed: {errno.errorcode[rc]}")
            _, writable, _ = select.select([], [probe], [], probe_timeout)
            if not writable:
                probe.close()  # still in SYN-SENT: the queue is full
                return
            err = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                probe.close()
                raise RuntimeError(
                    f"BlackholePort: connect to a full backlog failed with "
                    f"{errno.errorcode.get(err, err)} instead of hanging"
                )
            self._fillers.append(probe)
        raise RuntimeError(f"BlackholePort: {max_fill} connects did not fill the backlog")

    def close(self) -> None:
        for sock in self._fillers:
            sock.close()
        self._fillers.clear()
        self._listener.close()
