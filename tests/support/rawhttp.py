"""Raw-socket HTTP/1.1 client helpers for integration tests.

Tests of a proxy need to send bytes no well-behaved client library would send
(bad framing, pipelined requests, half-sent bodies) and to see exactly what
came back.  These helpers do that with plain blocking sockets and a small,
strict response parser of their own: nothing here uses httptools or
``phoenix_lb``, so a bug shared with the proxy cannot hide itself.

Strict means: CRLF line endings only, no obs-fold, no whitespace before the
colon, no control characters in field values, and Content-Length together
with Transfer-Encoding is an error (RFC 9112 sections 2.2, 5, 6).  A test
that gets a :class:`ProtocolError` from here has found bytes that a careful
client would also reject.

The same field-section parser (:func:`parse_head`) is used by the test
backend in ``backend.py`` for requests.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = [
    "IncompleteMessage",
    "ProtocolError",
    "RawClient",
    "Response",
    "field_values",
    "parse_head",
    "parse_responses",
    "send_raw",
]

# RFC 9110 5.6.2: token characters, for field names and methods.
TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# A response head larger than this is treated as garbage; the proxy's own
# limit is 16 KiB by default, so 1 MiB leaves room for tests that raise it.
MAX_HEAD_BYTES = 1 << 20
_RECV_SIZE = 65536

Headers = list[tuple[str, str]]


class ProtocolError(Exception):
    """The bytes are not a valid HTTP/1.1 message."""


class IncompleteMessage(ProtocolError):
    """The data (or the connection) ended before the message was complete."""


def parse_head(head: bytes) -> tuple[bytes, Headers]:
    """Split a message head into its start line and field list.

    ``head`` runs up to and including the blank line (``\\r\\n\\r\\n``).
    Field names keep their case and order; values are decoded as latin-1 so
    every byte round-trips, and optional whitespace around them is removed.
    Raises :class:`ProtocolError` naming the first rule broken.
    """
    if not head.endswith(b"\r\n\r\n"):
        raise ProtocolError("head does not end with CRLF CRLF")
    lines = head[:-4].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise ProtocolError(f"bare CR or LF in line {line!r}")
    start, fields = lines[0], lines[1:]
    if not start:
        raise ProtocolError("empty start line")
    headers: Headers = []
    for line in fields:
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError(f"obs-fold (line starts with whitespace): {line!r}")
        name, colon, value = line.partition(b":")
        if not colon:
            raise ProtocolError(f"field line without colon: {line!r}")
        if not name:
            raise ProtocolError(f"empty field name: {line!r}")
        if name[-1:] in (b" ", b"\t"):
            raise ProtocolError(f"whitespace before colon: {line!r}")
        if any(c not in TCHAR for c in name):
            raise ProtocolError(f"invalid field name: {name!r}")
        value = value.strip(b" \t")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise ProtocolError(f"control character in value of {name!r}")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return start, headers


def field_values(headers: Headers, name: str) -> list[str]:
    """All values of field ``name`` (case-insensitive), in order."""
    lname = name.lower()
    return [v for n, v in headers if n.lower() == lname]


def _tokens(headers: Headers, name: str) -> list[str]:
    """The comma-separated list elements of every ``name`` field, lowercased."""
    out: list[str] = []
    for value in field_values(headers, name):
        out.extend(t.strip().lower() for t in value.split(",") if t.strip())
    return out


@dataclass(frozen=True, slots=True)
class Response:
    """One parsed HTTP response.

    ``framing`` tells how the body was delimited: ``"content-length"``,
    ``"chunked"``, ``"close"`` (read to end of connection) or ``"none"``
    (HEAD, 1xx, 204, 304).  When the body was not kept (``keep_body=False``)
    ``body`` is empty, but ``body_len`` and ``body_sha256`` still describe it.
    """

    version: str
    status: int
    reason: str
    headers: Headers
    body: bytes
    raw_head: bytes
    framing: str
    trailers: Headers
    body_len: int
    body_sha256: str

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

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def keep_alive(self) -> bool:
        """Whether the sender intends to keep the connection open (RFC 9112 9.3)."""
        tokens = _tokens(self.headers, "connection")
        if "close" in tokens or self.framing == "close":
            return False
        return self.version == "HTTP/1.1" or "keep-alive" in tokens


class _Source:
    """A byte buffer refilled on demand from ``fill`` (b"" means end of data)."""

    def __init__(self, data: bytes = b"", fill: Callable[[], bytes] | None = None) -> None:
        self.buf = bytearray(data)
        self._fill = fill
        self.eof = fill is None

    def more(self) -> bool:
        """Read more into the buffer; False at end of data."""
        if self.eof or self._fill is None:
            return False
        data = self._fill()
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, sep: bytes, limit: int, what: str) -> bytes:
        start = 0
        while True:
            idx = self.buf.find(sep, start)
            if idx >= 0:
                end = idx + len(sep)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise ProtocolError(f"{what} longer than {limit} bytes")
            start = max(0, len(self.buf) - len(sep) + 1)
            if not self.more():
                raise IncompleteMessage(f"data ended inside {what} ({len(self.buf)} bytes)")

    def read_exact(self, n: int, what: str, sink: Callable[[bytes], None]) -> None:
        while n:
            if not self.buf and not self.more():
                raise IncompleteMessage(f"data ended inside {what}, {n} bytes missing")
            take = min(n, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            n -= take

    def read_to_eof(self, sink: Callable[[bytes], None]) -> None:
        while True:
            if self.buf:
                sink(bytes(self.buf))
                self.buf.clear()
            if not self.more():
                return


class _Body:
    """Counts and hashes body bytes, keeping them only if asked."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.parts: list[bytes] = []
        self.length = 0
        self.sha = hashlib.sha256()

    def __call__(self, data: bytes) -> None:
        self.length += len(data)
        self.sha.update(data)
        if self.keep:
            self.parts.append(data)


def _parse_status_line(line: bytes) -> tuple[str, int, str]:
    # RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    version, sp1, rest = line.partition(b" ")
    code, sp2, reason = rest.partition(b" ")
    if not sp1 or not sp2:
        raise ProtocolError(f"malformed status line {line!r}")
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise ProtocolError(f"unexpected version in status line {line!r}")
    if len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"malformed status code in {line!r}")
    if any((c < 0x20 and c != 0x09) or c == 0x7F for c in reason):
        raise ProtocolError(f"control character in reason phrase {line!r}")
    return version.decode(), int(code), reason.decode("latin-1")


def _read_chunked(src: _Source, body: _Body) -> Headers:
    """Read a chunked body into ``body``; return the trailer fields."""
    while True:
        line = src.read_until(b"\r\n", 4096, "chunk size line")[:-2]
        size_part = line.split(b";", 1)[0]
        # RFC 9112 7.1: chunk-size = 1*HEXDIG; we tolerate BWS before ';' only.
        size_part = size_part.rstrip(b" \t") if b";" in line else size_part
        if not size_part or any(c not in _HEX for c in size_part):
            raise ProtocolError(f"invalid chunk size line {line!r}")
        size = int(size_part, 16)
        if size == 0:
            break
        src.read_exact(size, "chunk data", body)
        crlf = bytearray()
        src.read_exact(2, "chunk data CRLF", crlf.extend)
        if crlf != b"\r\n":
            raise ProtocolError(f"chunk data not followed by CRLF but {bytes(crlf)!r}")
    # Trailer section: field lines, then an empty line.
    block = bytearray()
    while True:
        line = src.read_until(b"\r\n", MAX_HEAD_BYTES, "trailer section")
        block += line
        if line == b"\r\n":
            break
    if block == b"\r\n":
        return []
    _, trailers = parse_head(b"X\r\n" + bytes(block))
    return trailers


def _read_response(src: _Source, method: str, keep_body: bool) -> Response:
    """Parse one response (interim or final) from ``src``."""
    raw_head = src.read_until(b"\r\n\r\n", MAX_HEAD_BYTES, "response head")
    start, headers = parse_head(raw_head)
    version, status, reason = _parse_status_line(start)
    body = _Body(keep_body)
    trailers: Headers = []
    te = _tokens(headers, "transfer-encoding")
    cls = field_values(headers, "content-length")
    if te and cls:
        raise ProtocolError("response has both Transfer-Encoding and Content-Length")
    if method.upper() == "HEAD" or status < 200 or status in (204, 304):
        framing = "none"
    elif te:
        if te[-1] != "chunked":
            raise ProtocolError(f"unsupported Transfer-Encoding {te!r}")
        framing = "chunked"
        trailers = _read_chunked(src, body)
    elif cls:
        values = {v.strip() for c in cls for v in c.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise ProtocolError(f"invalid Content-Length {cls!r}")
        framing = "content-length"
        src.read_exact(int(values.pop()), "body", body)
    else:
        framing = "close"
        src.read_to_eof(body)
    return Response(
        version=version,
        status=status,
        reason=reason,
        headers=headers,
        body=b"".join(body.parts),
        raw_head=raw_head,
        framing=framing,
        trailers=trailers,
        body_len=body.length,
        body_sha256=body.sha.hexdigest(),
    )


def parse_responses(
    data: bytes,
    methods: Sequence[str] | None = None,
    *,
    include_interim: bool = False,
    keep_body: bool = True,
) -> list[Response]:
    """Parse every response in ``data`` (e.g. the output of :func:`send_raw`).

    ``methods`` gives the request method for each final response in order,
    so responses to HEAD are read without a body; missing entries count as
    GET.  Interim (1xx) responses are skipped unless ``include_interim``.
    Raises :class:`IncompleteMessage` if the data ends inside a message and
    :class:`ProtocolError` on invalid bytes.
    """
    src = _Source(data)
    out: list[Response] = []
    index = 0
    while src.buf:
        method = methods[index] if methods is not None and index < len(methods) else "GET"
        resp = _read_response(src, method, keep_body)
        if resp.status < 200:
            if include_interim:
                out.append(resp)
            continue
        out.append(resp)
        index += 1
    return out


def send_raw(
    port: int,
    data: bytes,
    *,
    read_timeout: float = 5.0,
    host: str = "127.0.0.1",
    half_close: bool = False,
) -> bytes:
    """Send ``data`` on a fresh connection and return everything read back.

    Reading stops at end of connection (FIN or RST) or when no byte arrived
    for ``read_timeout`` seconds, so send ``Connection: close`` (or expect
    to wait) when the server would keep the connection open.  A reset or a
    failed send (server closed early) is not an error: what was read is
    returned.  ``half_close`` shuts down the write side after sending.
    """
    chunks: list[bytes] = []
    with socket.create_connection((host, port), timeout=read_timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while True:
            try:
                chunk = sock.recv(_RECV_SIZE)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


class RawClient:
    """One persistent client connection for keep-alive and pipelining tests.

    ``timeout`` bounds every blocking read (a :class:`TimeoutError` is
    raised).  A reset by the peer is treated as end of data and remembered
    in ``was_reset``.
    """

    def __init__(self, port: int, *, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.was_reset = False
        self._src = _Source(fill=self._recv)

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(_RECV_SIZE)
        except ConnectionResetError:
            self.was_reset = True
            return b""

    def send(self, data: bytes) -> None:
        """Send all of ``data``."""
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        *,
        headers: Headers | None = None,
        body: bytes = b"",
        host: str = "test",
    ) -> Response:
        """Send one simple request with Content-Length framing and read its response."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{n}: {v}" for n, v in headers or []]
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        self.send("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)
        return self.read_response(head_only=method.upper() == "HEAD")

    def read_response(
        self,
        head_only: bool = False,
        *,
        keep_body: bool = True,
        include_interim: bool = False,
        timeout: float | None = None,
    ) -> Response:
        """Read the next response.

        ``head_only`` says the request was HEAD, so no body follows.
        Interim 1xx responses are skipped unless ``include_interim``.
        ``keep_body=False`` streams the body through a hash without storing
        it (for very large downloads).
        """
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            while True:
                resp = _read_response(self._src, "HEAD" if head_only else "GET", keep_body)
                if resp.status >= 200 or include_interim:
                    return resp
        finally:
            self.sock.settimeout(self.timeout)

    def recv(self, max_bytes: int = _RECV_SIZE, timeout: float | None = None) -> bytes:
        """Raw read: buffered bytes first, else one ``recv``; b"" at end of data."""
        if not self._src.buf:
            self.sock.settimeout(self.timeout if timeout is None else timeout)
            try:
                self._src.more()
            finally:
                self.sock.settimeout(self.timeout)
        out = bytes(self._src.buf[:max_bytes])
        del self._src.buf[:max_bytes]
        return out

    def read_until_closed(self, timeout: float | None = None) -> bytes:
        """Read until the peer closes; raises TimeoutError if it does not."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._src.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("peer did not close the connection")
            self.sock.settimeout(remaining)
            try:
                self._src.more()
            finally:
                self.sock.settimeout(self.timeout)
        out = bytes(self._src.buf)
        self._src.buf.clear()
        return out

    def is_closed(self, timeout: float = 1.0) -> bool:
        """True if the peer closes (FIN or RST) within ``timeout`` seconds.

        Bytes that arrive meanwhile are kept for the next read.
        """
        deadline = time.monotonic() + timeout
        while not self._src.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                self._src.more()
            except TimeoutError:
                return False
            finally:
                self.sock.settimeout(self.timeout)
        return True

    @property
    def buffered(self) -> bytes:
        """Bytes received but not yet consumed."""
        return bytes(self._src.buf)

    def shutdown_write(self) -> None:
        """Half-close: send FIN, keep reading."""
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
