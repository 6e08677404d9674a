"""Response head rules for relaying an upstream response to a client, sans-IO.

Upstream responses arrive as HTTP/1.x with their own framing.  The client
gets the same status and end-to-end headers, with the framing re-decided for
the client's connection (RFC 9112 6):

* no body (HEAD, 1xx, 204, 304): headers only, Content-Length kept as
  metadata;
* Content-Length: passed through and the body copied as is;
* chunked upstream and an HTTP/1.1 client: the body is re-chunked as it
  arrives, so the upstream's Transfer-Encoding line stays true as it is;
* close-delimited upstream: chunked for HTTP/1.1 clients (their connection
  stays reusable), close-delimited for HTTP/1.0;
* any Transfer-Encoding other than one plain ``chunked`` (``gzip``,
  ``gzip, chunked``, two lines): ``te_invalid``, answered 502 as nginx 1.23+
  does, since the client could not frame it as relayed.

Fields a Connection header names are dropped too, except the framing
(Content-Length) and Date: an upstream cannot make a response unframed.

Hop-by-hop headers are dropped (RFC 9110 7.6.1: Connection, Keep-Alive,
Proxy-Connection, TE, Trailer, Upgrade and every field Connection names),
the upstream's ``Server`` is replaced by ours (it may carry a version), and
a ``Date`` is added when missing (RFC 9110 6.6.1).

``scan_head`` reads the raw head bytes once, in a loop over bytes that the
compiled build turns into C; lines that pass unchanged are kept as slices of
the original buffer.  (A parser callback per header field costs several
times more; the head was validated by llhttp before this runs, so every line
is ``name: value`` with a token name and no bare CR or LF.)
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import i64

from phoenix_lb.http.status import status_line

__all__ = [
    "BODY_CHUNKED",
    "BODY_LENGTH",
    "BODY_NONE",
    "BODY_UNTIL_CLOSE",
    "SERVER_HEADER",
    "ResponseHead",
    "analyze_response",
    "body_mode",
    "build_client_head",
    "build_switch_head",
    "scan_head",
]

# How the body travels on the client side.
# Final one by one: the compiled build inlines them (a tuple unpacking
# would leave a dictionary lookup at every use).
BODY_NONE: Final = 0
BODY_LENGTH: Final = 1
BODY_CHUNKED: Final = 2
BODY_UNTIL_CLOSE: Final = 3

SERVER_HEADER: Final = b"Server: phoenix-lb\r\n"

# Kinds of header lines scan_head recognizes.
# Final one by one: the compiled build inlines them (a tuple unpacking
# would leave a dictionary lookup at every use).
_PLAIN: Final = 0
_DROP: Final = 1
_CL: Final = 2
_TE: Final = 3
_CONNECTION: Final = 4
_DATE: Final = 5
_SECURITY: Final = 6
_REQUEST_ID: Final = 7
_CONNECTION_OPTIONS: Final = frozenset({b"close", b"keep-alive", b"upgrade", b""})
# Never dropped because Connection names them: the response's framing
# (Content-Length; Transfer-Encoding is handled apart) and its Date.
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"date"})

# Status line and our Server header (no final CRLF), per status, built once.
_STATUS_SERVER: Final[dict[int, bytes]] = {}


class ResponseHead:
    """An upstream response head, classified."""

    __slots__ = (
        "chunked",
        "close",
        "forward",
        "has_date",
        "has_length",
        "status",
        "te_invalid",
        "te_line",
    )

    def __init__(self, status: int, forward: list[bytes]) -> None:
        self.status = status
        #: end-to-end header lines as pieces reading ``\r\nName: value``...
        #: (no final CRLF), Content-Length included, Transfer-Encoding not
        self.forward = forward
        #: the response has a Content-Length (and no Transfer-Encoding)
        self.has_length = False
        self.chunked = False
        #: the upstream's own ``\r\nTransfer-Encoding: ...`` line (b"" if none)
        self.te_line = b""
        #: Transfer-Encoding other than one plain "chunked" (the upstream's
        #: framing cannot be relayed: 502, like nginx 1.23+)
        self.te_invalid = False
        #: the upstream said Connection: close
        self.close = False
        self.has_date = False


def _is_name(buf: bytes, pos: i64, name: bytes) -> bool:
    """Case-insensitive ``buf[pos:pos+len(name)] == name`` (name is lowercase)."""
    i: i64 = 0
    n: i64 = len(name)
    while i < n:
        c: i64 = buf[pos + i]
        if 65 <= c <= 90:
            c += 32
        if c != name[i]:
            return False
        i += 1
    return True


def _classify(buf: bytes, pos: i64, length: i64) -> int:
    """Kind of the header whose name is ``buf[pos:pos+length]``."""
    if length == 4:
        return _DATE if _is_name(buf, pos, b"date") else _PLAIN
    if length == 10:
        if _is_name(buf, pos, b"connection"):
            return _CONNECTION
        return _DROP if _is_name(buf, pos, b"keep-alive") else _PLAIN
    if length == 14:
        return _CL if _is_name(buf, pos, b"content-length") else _PLAIN
    if length == 6:
        return _DROP if _is_name(buf, pos, b"server") else _PLAIN
    if length == 17:
        return _TE if _is_name(buf, pos, b"transfer-encoding") else _PLAIN
    if length == 2:
        return _DROP if _is_name(buf, pos, b"te") else _PLAIN
    if length == 7:
        if _is_name(buf, pos, b"trailer") or _is_name(buf, pos, b"upgrade"):
            return _DROP
        return _PLAIN
    if length == 16:
        if _is_name(buf, pos, b"proxy-connection"):
            return _DROP
        return _SECURITY if _is_name(buf, pos, b"x-xss-protection") else _PLAIN
    if length == 15:
        return _SECURITY if _is_name(buf, pos, b"x-frame-options") else _PLAIN
    if length == 22:
        return _SECURITY if _is_name(buf, pos, b"x-content-type-options") else _PLAIN
    if length == 25:
        return _SECURITY if _is_name(buf, pos, b"strict-transport-security") else _PLAIN
    if length == 12:
        return _REQUEST_ID if _is_name(buf, pos, b"x-request-id") else _PLAIN
    return _PLAIN


def scan_head(
    status: int,
    buf: bytes,
    start: i64,
    end: i64,
    strip_security: bool = False,
    strip_request_id: bool = False,
) -> ResponseHead:
    """Classify the header lines ``buf[start:end]`` of an upstream response.

    With ``strip_security`` the upstream's own security headers (HSTS,
    X-Frame-Options, X-Content-Type-Options, X-XSS-Protection) are dropped:
    the listener adds its values, replacing rather than duplicating them.
    ``strip_request_id`` does the same for X-Request-ID (a backend that
    echoes the id it was sent would otherwise make it appear twice).

    ``start`` is the CR of the CRLF that ends the status line and ``end`` the
    CR of the final empty line, so the block reads ``\r\nName: value``...
    The kept lines end up in ``forward`` as slices of ``buf`` (joined once,
    with the rest of the client's head).
    """
    head = ResponseHead(status, [])
    pieces = head.forward
    keep_from: i64 = start
    nominated: list[bytes] | None = None
    # Native 64-bit positions: the compiled loops below then run as plain C.
    pos: i64 = start + 2  # first name
    while pos < end:
        colon: i64 = pos
        while colon < end and buf[colon] != 58:  # ':'
            colon += 1
        line_end: i64 = colon
        while line_end < end and buf[line_end] != 13:  # CR
            line_end += 1
        kind = _classify(buf, pos, colon - pos)
        if kind == _SECURITY:
            if not strip_security:
                kind = _PLAIN
        elif kind == _REQUEST_ID:
            kind = _DROP if strip_request_id else _PLAIN
        if kind != _PLAIN:
            if kind == _DATE:
                head.has_date = True
            elif kind == _CL:
                # llhttp validated the digits; only its presence matters here.
                head.has_length = True
            else:
                # Dropped from the forwarded block (TE is kept aside).
                pieces.append(buf[keep_from : pos - 2])
                keep_from = line_end
                if kind == _TE:
                    # One "chunked", nothing else: other codings (gzip,
                    # chunked), or a second line, would reach the client
                    # with framing it cannot read.
                    if head.te_line:
                        head.te_invalid = True
                    head.te_line = buf[pos - 2 : line_end]
                    head.chunked = buf[colon + 1 : line_end].strip().lower() == b"chunked"
                    if not head.chunked:
                        head.te_invalid = True
                elif kind == _CONNECTION:
                    value = buf[colon + 1 : line_end].strip()
                    if value == b"keep-alive":
                        pass
                    elif value == b"close":
                        head.close = True
                    else:
                        for token in value.split(b","):
                            token = token.strip().lower()
                            if token == b"close":
                                head.close = True
                            elif token not in _CONNECTION_OPTIONS and token not in _FRAMING:
                                if nominated is None:
                                    nominated = []
                                nominated.append(token)
        pos = line_end + 2
    pieces.append(buf[keep_from:end])
    if head.chunked:
        head.has_length = False
    if nominated:
        head.forward = [_drop_named(b"".join(pieces), nominated)]
    return head


def _drop_named(block: bytes, names: list[bytes]) -> bytes:
    """Remove the fields a Connection header named (rare: slow path)."""
    drop = set(names)
    kept = []
    for line in block.split(b"\r\n"):
        if line and line[: line.find(b":")].strip().lower() not in drop:
            kept.append(b"\r\n" + line)
    return b"".join(kept)


def analyze_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    strip_security: bool = False,
    strip_request_id: bool = False,
) -> ResponseHead:
    """Classify a response head given as (name, value) pairs (tests and tools)."""
    block = b"".join([b"\r\n%s: %s" % (name, value) for name, value in headers])
    raw = b"HTTP/1.1 %d X%s\r\n\r\n" % (status, block)
    start = raw.find(b"\r\n")
    return scan_head(status, raw, start, len(raw) - 4, strip_security, strip_request_id)


def body_mode(head: ResponseHead, request_method: bytes, client_version: str) -> int:
    """How the response body must be framed toward the client."""
    status = head.status
    if request_method == b"HEAD" or status < 200 or status == 204 or status == 304:
        return BODY_NONE
    if head.has_length:
        return BODY_LENGTH
    if client_version == "1.1":
        return BODY_CHUNKED
    return BODY_UNTIL_CLOSE


def build_client_head(
    head: ResponseHead,
    mode: int,
    keep_alive: bool,
    client_version: str,
    date: bytes,
    extra: bytes = b"",
) -> bytes:
    """Serialize the response head for the client.

    ``keep_alive`` is the final decision for the client connection; HTTP/1.0
    clients need it spelled out, HTTP/1.1 clients only need ``close``.
    ``extra`` are whole header lines of ours (security headers, Set-Cookie).
    """
    status = head.status
    first = _STATUS_SERVER.get(status)
    if first is None:
        first = _STATUS_SERVER[status] = status_line(status) + SERVER_HEADER[:-2]
    if mode == BODY_CHUNKED:
        # Re-chunked: the upstream's own "chunked" line if it had one, else ours.
        framing = head.te_line or b"\r\nTransfer-Encoding: chunked"
    elif mode == BODY_NONE:
        framing = head.te_line  # metadata of a HEAD/304 response
    else:
        framing = b""
    if not keep_alive:
        end = b"Connection: close\r\n\r\n"
    elif client_version == "1.0":
        end = b"Connection: keep-alive\r\n\r\n"
    else:
        end = b"\r\n"
    # ``first`` (status line and Server) has no final CRLF and every
    # forwarded line starts with one; ``date`` is a whole "Date: ...\r\n".
    parts = [first]
    parts += head.forward
    parts.append(framing)
    parts.append(b"\r\n")
    if not head.has_date:
        parts.append(date)
    if extra:
        parts.append(extra)
    parts.append(end)
    return b"".join(parts)


def build_switch_head(head: ResponseHead, upgrade: bytes, extra: bytes = b"") -> bytes:
    """The ``101 Switching Protocols`` head for the client.

    Upgrade and Connection are hop-by-hop and were dropped from the upstream's
    head; a switch needs them, so they are written again for this hop.
    """
    parts = [status_line(101), SERVER_HEADER[:-2]]
    parts += head.forward
    parts.append(b"\r\nUpgrade: %s\r\nConnection: upgrade\r\n" % upgrade)
    if extra:
        parts.append(extra)
    parts.append(b"\r\n")
    return b"".join(parts)
