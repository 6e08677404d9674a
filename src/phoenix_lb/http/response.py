"""Response head rules for relaying an upstream response to a client, sans-IO.

Upstream responses arrive as HTTP/1.x with their own framing.  The client
gets the same status and end-to-end headers, with the framing re-decided for
the client's connection (RFC 9112 6):

* no body (HEAD, 1xx, 204, 304): headers only, Content-Length kept as
  metadata;
* Content-Length: passed through and the body copied as is;
* chunked or close-delimited upstream: re-chunked for HTTP/1.1 clients
  (so their connection stays reusable), close-delimited for HTTP/1.0.

Hop-by-hop headers are dropped, the upstream's ``Server`` header is replaced
by ours (it may carry a version), and a ``Date`` is added when missing
(RFC 9110 6.6.1).

``ResponseHeadBuilder`` receives the upstream parser's ``on_header``
callbacks directly and classifies each field as it arrives.
"""

from __future__ import annotations

from typing import Final

from phoenix_lb.http.status import status_line

__all__ = [
    "BODY_CHUNKED",
    "BODY_LENGTH",
    "BODY_NONE",
    "BODY_UNTIL_CLOSE",
    "SERVER_HEADER",
    "ResponseHead",
    "ResponseHeadBuilder",
    "analyze_response",
    "body_mode",
    "build_client_head",
]

# How the body travels on the client side.
BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE = range(4)

SERVER_HEADER: Final = b"Server: phoenix-lb\r\n"

_CL, _TE, _CONNECTION, _DROP, _DATE = range(5)
_SPECIAL: Final[dict[bytes, int]] = {
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"connection": _CONNECTION,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _DROP,
    b"server": _DROP,
    b"date": _DATE,
}
_CONNECTION_OPTIONS: Final = frozenset({b"close", b"keep-alive", b"upgrade", b""})
# See http/request.py: a field whose name length matches no special name is
# forwarded without lowercasing; the usual spellings are looked up first.
_SPECIAL_LENGTHS: Final = frozenset(len(name) for name in _SPECIAL)
_SPECIAL_EXACT: Final[dict[bytes, int]] = {
    **{name.title(): kind for name, kind in _SPECIAL.items()},
    **_SPECIAL,
    b"TE": _DROP,
}

# Status line and our Server header, per status, built once.
_STATUS_SERVER: Final[dict[int, bytes]] = {}


class ResponseHead:
    """An upstream response head, classified."""

    __slots__ = ("chunked", "close", "content_length", "forward", "has_date", "status")

    def __init__(self, status: int, forward: list[bytes]) -> None:
        self.status = status
        #: end-to-end fields as flat pieces: name, b": ", value, b"\r\n" each
        self.forward = forward
        self.content_length: int | None = None
        self.chunked = False
        #: the upstream said Connection: close
        self.close = False
        self.has_date = False


class ResponseHeadBuilder:
    """Collects one upstream response head from parser callbacks; reusable."""

    __slots__ = (
        "_chunked",
        "_close",
        "_content_length",
        "_has_date",
        "_lines",
        "_nominated",
        "done",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the current head (a new response, or a 1xx just ended)."""
        #: True once the head is complete: later fields are trailers
        self.done = False
        self._lines: list[bytes] = []
        self._content_length: int | None = None
        self._chunked = False
        self._close = False
        self._has_date = False
        self._nominated: list[bytes] | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser callback: one header field (trailers are dropped)."""
        if self.done:
            return
        kind = -1
        if len(name) in _SPECIAL_LENGTHS:
            kind = _SPECIAL_EXACT.get(name, -1)
            if kind < 0:
                kind = _SPECIAL.get(name.lower(), -1)
        if kind < 0 or kind == _DATE:
            # Pieces, joined once with the whole head (cheaper than formatting).
            lines = self._lines
            lines.append(name)
            lines.append(b": ")
            lines.append(value)
            lines.append(b"\r\n")
            if kind == _DATE:
                self._has_date = True
        elif kind == _CL:
            self._content_length = int(value)
        elif kind == _TE:
            self._chunked = True
        elif kind == _CONNECTION:
            for token in value.split(b","):
                token = token.strip().lower()
                if token == b"close":
                    self._close = True
                elif token not in _CONNECTION_OPTIONS:
                    if self._nominated is None:
                        self._nominated = []
                    self._nominated.append(token)

    def finish(self, status: int) -> ResponseHead:
        """The head is complete."""
        self.done = True
        head = ResponseHead(status, self._lines)
        head.chunked = self._chunked
        head.content_length = None if self._chunked else self._content_length
        head.close = self._close
        head.has_date = self._has_date
        if self._nominated:
            drop = set(self._nominated)
            lines = self._lines
            head.forward = []
            for i in range(0, len(lines), 4):
                if lines[i].lower() not in drop:
                    head.forward += lines[i : i + 4]
        return head


def analyze_response(status: int, headers: list[tuple[bytes, bytes]]) -> ResponseHead:
    """Classify a whole response head at once (tests and tools)."""
    builder = ResponseHeadBuilder()
    for name, value in headers:
        builder.on_header(name, value)
    return builder.finish(status)


def body_mode(head: ResponseHead, request_method: bytes, client_version: str) -> int:
    """How the response body must be framed toward the client."""
    status = head.status
    if request_method == b"HEAD" or status < 200 or status == 204 or status == 304:
        return BODY_NONE
    if head.content_length is not None:
        return BODY_LENGTH
    if client_version == "1.1":
        return BODY_CHUNKED
    return BODY_UNTIL_CLOSE


def build_client_head(
    head: ResponseHead, mode: int, keep_alive: bool, client_version: str, date: bytes
) -> bytes:
    """Serialize the response head for the client.

    ``keep_alive`` is the final decision for the client connection; HTTP/1.0
    clients need it spelled out, HTTP/1.1 clients only need ``close``.
    """
    status = head.status
    first = _STATUS_SERVER.get(status)
    if first is None:
        first = _STATUS_SERVER[status] = status_line(status) + SERVER_HEADER
    if mode == BODY_LENGTH or (mode == BODY_NONE and head.content_length is not None):
        framing = b"Content-Length: %d\r\n" % head.content_length  # type: ignore[str-format]
    elif mode == BODY_CHUNKED:
        framing = b"Transfer-Encoding: chunked\r\n"
    else:
        framing = b""
    if not keep_alive:
        end = b"Connection: close\r\n\r\n"
    elif client_version == "1.0":
        end = b"Connection: keep-alive\r\n\r\n"
    else:
        end = b"\r\n"
    return b"%s%s%s%s%s" % (
        first,
        b"" if head.has_date else date,
        b"".join(head.forward),
        framing,
        end,
    )
