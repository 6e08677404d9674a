"""Request head rules (RFC 9112 framing, RFC 9110 header policy), sans-IO.

httptools (llhttp in strict mode) already refuses most malformed input: bare
CR or LF, whitespace before the colon, obs-fold, control characters in
values, invalid header names and methods, invalid or duplicate
Content-Length, Content-Length together with Transfer-Encoding, and invalid
chunk sizes.  This module adds the rules a parser cannot know: the versions
we serve, Host (exactly one in HTTP/1.1), the Transfer-Encoding we accept,
HTTP/1.0 with Transfer-Encoding (RFC 9112 6.1: treat as faulty framing),
request targets, ``Expect``, limits on the header section, and which headers
are hop-by-hop.

``RequestHeadBuilder`` receives the parser's ``on_url``/``on_header``
callbacks directly (the parser calls its bound methods, no trampoline) and
classifies each header as it arrives; ``finish()`` applies the rules that
need the whole head and returns a ``RequestHead`` whose end-to-end header
lines are ready to forward, or raises ``RequestError`` with the status to
answer.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "IDEMPOTENT_METHODS",
    "RequestError",
    "RequestHead",
    "RequestHeadBuilder",
    "analyze_request",
    "build_upstream_head",
    "remove_fields",
]

# RFC 9110 9.2.2.  A request with one of these methods may be sent again.
IDEMPOTENT_METHODS: Final = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})


class RequestError(Exception):
    """The request must be answered with ``status`` and the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# Header kinds that need more than "forward as is".
# Final one by one: the compiled build inlines them (a tuple unpacking
# would leave a dictionary lookup at every use).
_HOST: Final = 0
_CL: Final = 1
_TE: Final = 2
_CONNECTION: Final = 3
_DROP: Final = 4
_EXPECT: Final = 5
_XFF: Final = 6
_UPGRADE: Final = 7
_X_REAL_IP: Final = 8
_REQUEST_ID: Final = 9
_SPECIAL: Final[dict[bytes, int]] = {
    b"host": _HOST,
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"connection": _CONNECTION,
    # RFC 9110 7.6.1 hop-by-hop fields, plus Proxy-Connection (never standard,
    # still sent by old clients).
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _UPGRADE,
    b"expect": _EXPECT,
    b"x-forwarded-for": _XFF,
    # Set by the proxy from what it knows; a client's values are not forwarded
    # (X-Real-IP is kept aside for trusted proxies, see realip.py).
    b"x-real-ip": _X_REAL_IP,
    b"x-forwarded-proto": _DROP,
    # Kept aside: forwarded as given, or replaced by ours (request_id on).
    b"x-request-id": _REQUEST_ID,
}

# Length of every special name: a field whose name has another length is
# forwarded without lowercasing it (most are: Content-Type, Cookie, Accept...).
_SPECIAL_LENGTHS: Final = frozenset(len(name) for name in _SPECIAL)
# The spellings clients actually send, looked up before lowercasing.
_SPECIAL_EXACT: Final[dict[bytes, int]] = {
    **{name.title(): kind for name, kind in _SPECIAL.items()},
    **_SPECIAL,
    b"TE": _DROP,
    b"X-Real-IP": _X_REAL_IP,
    b"X-Request-ID": _REQUEST_ID,
    b"X-Request-Id": _REQUEST_ID,
}

# Connection options that name no header to remove.
_CONNECTION_OPTIONS: Final = frozenset({b"close", b"keep-alive", b"upgrade", b""})
# Never removed by a Connection nomination: the request would lose its target.
_PROTECTED: Final = frozenset({b"host"})

# RFC 3986 host (reg-name or IP-literal) with optional port.
_HOST_RE: Final = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
# Hosts already found valid.  A client sends the same Host on every request,
# so a dictionary hit (a hash of the value) replaces the regex almost always.
_VALID_HOSTS: Final[dict[bytes, bool]] = {}
_VALID_HOSTS_MAX: Final = 4096


def _valid_host(host: bytes) -> bool:
    if host in _VALID_HOSTS:
        return True
    if _HOST_RE.fullmatch(host) is None:
        return False
    if len(_VALID_HOSTS) >= _VALID_HOSTS_MAX:
        _VALID_HOSTS.clear()
    _VALID_HOSTS[host] = True
    return True


class RequestHead:
    """What the proxy needs to know about one request head."""

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "forward",
        "host",
        "idempotent",
        "keep_alive",
        "method",
        "path",
        "request_id",
        "target",
        "upgrade",
        "version",
        "x_real_ip",
        "xff",
    )

    def __init__(self, method: bytes, version: str, forward: list[bytes]) -> None:
        self.method = method
        self.version = version
        #: end-to-end header fields in arrival order, as flat pieces:
        #: name, b": ", value, b"\r\n" for each (see ``fields()``)
        self.forward = forward
        self.target = b""
        #: the target's path (no query), for routing
        self.path = b""
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.expect_continue = False
        self.idempotent = method in IDEMPOTENT_METHODS
        #: the client's X-Forwarded-For values joined with ", ", or None
        self.xff: bytes | None = None
        #: the Upgrade header value when the client asked for one
        self.upgrade: bytes | None = None
        #: the client's X-Real-IP (not forwarded; trusted proxies' one is used)
        self.x_real_ip: bytes | None = None
        #: the client's X-Request-ID (the proxy decides what is forwarded)
        self.request_id: bytes | None = None

    @property
    def has_body(self) -> bool:
        """True when a body follows the head (chunked or Content-Length > 0)."""
        return self.chunked or bool(self.content_length)

    def fields(self) -> list[tuple[bytes, bytes]]:
        """The forwarded header fields as (name, value) pairs."""
        forward = self.forward
        return [(forward[i], forward[i + 2]) for i in range(0, len(forward), 4)]

    def field_values(self, lowercase_name: bytes) -> list[bytes]:
        """Every forwarded value of a field, by lowercase name, in order."""
        forward = self.forward
        return [
            forward[i + 2]
            for i in range(0, len(forward), 4)
            if len(forward[i]) == len(lowercase_name) and forward[i].lower() == lowercase_name
        ]

    def field(self, lowercase_name: bytes) -> bytes | None:
        """The first forwarded value of a field, by lowercase name (logging, routing)."""
        forward = self.forward
        for i in range(0, len(forward), 4):
            if forward[i].lower() == lowercase_name:
                return forward[i + 2]
        return None


def remove_fields(forward: list[bytes], lowercase_names: set[bytes]) -> None:
    """Drop fields by lowercase name from a flat ``forward`` piece list."""
    kept: list[bytes] = []
    for i in range(0, len(forward), 4):
        if forward[i].lower() not in lowercase_names:
            kept += forward[i : i + 4]
    forward[:] = kept


class RequestHeadBuilder:
    """Collects one request head from parser callbacks; reusable across requests.

    ``max_headers`` and ``max_bytes`` bound the header section (431 beyond);
    a request line longer than ``max_bytes`` gets 414.
    """

    __slots__ = (
        "_connection",
        "_count",
        "_done",
        "_expect",
        "_host",
        "_hosts",
        "_lines",
        "_request_id",
        "_size",
        "_te",
        "_upgrade",
        "_x_real_ip",
        "_xff",
        "content_length",
        "max_bytes",
        "max_headers",
        "url",
    )

    def __init__(self, max_headers: int = 100, max_bytes: int = 16384) -> None:
        self.max_headers = max_headers
        self.max_bytes = max_bytes
        self._reset()

    def _reset(self) -> None:
        self._done = False
        self.url = b""
        self._lines: list[bytes] = []
        self._count = 0
        self._size = 0
        self._hosts = 0
        self._host: bytes | None = None
        self.content_length: int | None = None
        self._te: bytes | None = None
        self._connection: list[bytes] | None = None
        self._xff: list[bytes] | None = None
        self._expect: bytes | None = None
        self._upgrade: bytes | None = None
        self._x_real_ip: bytes | None = None
        self._request_id: bytes | None = None

    @property
    def header_bytes(self) -> int:
        """Bytes of request target and header fields received so far."""
        return self._size

    def on_url(self, url: bytes) -> None:
        """Parser callback: (part of) the request target."""
        if self._done:
            self._reset()
        self.url += url
        self._size += len(url)
        if self._size > self.max_bytes:
            raise RequestError(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser callback: one header field (trailers, after finish(), are dropped)."""
        if self._done:
            return
        self._count += 1
        self._size += len(name) + len(value) + 4
        if self._count > self.max_headers or self._size > self.max_bytes:
            raise RequestError(431, "request header fields too large")
        kind = -1
        if len(name) in _SPECIAL_LENGTHS:
            kind = _SPECIAL_EXACT.get(name, -1)
            if kind < 0:
                kind = _SPECIAL.get(name.lower(), -1)
        if kind < 0 or kind == _HOST:
            # Pieces rather than one formatted line: appends are cheaper than
            # bytes formatting, and the head is joined once.
            lines = self._lines
            lines.append(name)
            lines.append(b": ")
            lines.append(value)
            lines.append(b"\r\n")
            if kind == _HOST:
                self._hosts += 1
                self._host = value
        elif kind == _CL:
            # llhttp has refused duplicates and non-digits already.
            self.content_length = int(value)
        elif kind == _TE:
            self._te = value if self._te is None else self._te + b"," + value
        elif kind == _CONNECTION:
            if self._connection is None:
                self._connection = []
            self._connection.extend(t.strip().lower() for t in value.split(b","))
        elif kind == _XFF:
            if self._xff is None:
                self._xff = []
            self._xff.append(value.strip())
        elif kind == _EXPECT:
            self._expect = value
        elif kind == _UPGRADE:
            self._upgrade = value
        elif kind == _X_REAL_IP:
            self._x_real_ip = value
        elif kind == _REQUEST_ID:
            self._request_id = value
        # _DROP: nothing to keep

    def finish(self, method: bytes, version: str) -> RequestHead:
        """Apply the whole-head rules; the builder is then ready for the next request."""
        self._done = True
        head = RequestHead(method, version, self._lines)
        if version != "1.1" and version != "1.0":
            # HTTP/0.9 has no headers to frame a body; "HTTP/2.0" on an HTTP/1
            # port is a client that skipped ALPN or prior-knowledge setup.
            raise RequestError(400, f"unsupported HTTP version {version}")
        if method == b"CONNECT":
            raise RequestError(405, "CONNECT is not supported")
        url = self.url
        if url[:1] == b"/":
            head.target = url
            head.path = url.partition(b"?")[0]
            head.host = self._host
        else:
            _absolute_target(head, url, self._host)

        tokens = self._connection
        if version == "1.1":
            if self._hosts != 1:
                raise RequestError(
                    400, "missing Host header" if self._hosts == 0 else "duplicate Host header"
                )
            if tokens is not None:
                head.keep_alive = b"close" not in tokens
        else:
            if self._hosts > 1:
                raise RequestError(400, "duplicate Host header")
            head.keep_alive = (
                tokens is not None and b"keep-alive" in tokens and b"close" not in tokens
            )
        host = self._host
        if host is not None and not _valid_host(host):
            raise RequestError(400, "invalid Host header")

        te = self._te
        if te is not None:
            if version == "1.0":
                # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has
                # faulty framing (an intermediary probably mangled it).
                raise RequestError(400, "Transfer-Encoding in an HTTP/1.0 request")
            codings = [c.strip().lower() for c in te.split(b",")]
            if codings != [b"chunked"]:
                if codings[-1] == b"chunked":
                    # Valid HTTP, but we would have to forward the other
                    # codings untouched; nginx answers 501 as well.
                    raise RequestError(501, "transfer codings other than chunked")
                raise RequestError(400, "invalid Transfer-Encoding")
            head.chunked = True
        else:
            head.content_length = self.content_length

        if self._expect is not None:
            if self._expect.strip().lower() != b"100-continue":
                raise RequestError(417, "unsupported expectation")
            head.expect_continue = version == "1.1"
        if self._xff is not None:
            head.xff = b", ".join(self._xff)
        head.upgrade = self._upgrade
        head.x_real_ip = self._x_real_ip
        head.request_id = self._request_id
        if tokens is not None:
            nominated = {t for t in tokens if t not in _CONNECTION_OPTIONS and t not in _PROTECTED}
            if nominated:
                remove_fields(head.forward, nominated)
                if b"x-forwarded-for" in nominated:
                    head.xff = None
        return head


def _absolute_target(head: RequestHead, target: bytes, host: bytes | None) -> None:
    lower = target[:8].lower()
    if lower.startswith((b"http://", b"https://")):
        # absolute-form (RFC 9112 3.2.2): the authority replaces Host.
        rest = target[target.index(b"//") + 2 :]
        ends = [i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0]
        cut = min(ends) if ends else -1
        authority = rest if cut < 0 else rest[:cut]
        origin = b"/" if cut < 0 else rest[cut:]
        if origin[:1] == b"?":
            origin = b"/" + origin
        if not authority or b"@" in authority or not _valid_host(authority):
            raise RequestError(400, "invalid authority in absolute-form target")
        head.target = origin
        q = origin.find(b"?")
        head.path = origin if q < 0 else origin[:q]
        head.host = authority
        remove_fields(head.forward, {b"host"})
        head.forward += (b"Host", b": ", authority, b"\r\n")
        return
    if target == b"*" and head.method == b"OPTIONS":
        head.target = head.path = b"*"
        head.host = host
        return
    raise RequestError(400, "invalid request target")


def analyze_request(
    method: bytes, target: bytes, version: str, headers: list[tuple[bytes, bytes]]
) -> RequestHead:
    """Validate a whole parsed request head at once (tests, tools, the HTTP/2 side)."""
    builder = RequestHeadBuilder(max_headers=1 << 30, max_bytes=1 << 30)
    builder.on_url(target)
    for name, value in headers:
        builder.on_header(name, value)
    return builder.finish(method, version)


_PROTO_LINE: Final = {
    b"http": b"X-Forwarded-Proto: http\r\n",
    b"https": b"X-Forwarded-Proto: https\r\n",
}


def build_upstream_head(
    head: RequestHead,
    client_ip: bytes,
    scheme: bytes,
    default_host: bytes,
    peer_ip: bytes | None = None,
    upgrade: bytes | None = None,
    request_id: bytes | None = None,
) -> bytes:
    """Serialize the request for an HTTP/1.1 upstream.

    The client's Host is kept (``default_host`` is used only when an
    HTTP/1.0 client sent none); X-Real-IP is the client address (the peer,
    or what a trusted proxy reported), X-Forwarded-For gets the peer
    appended (``peer_ip``, default the client: nginx
    ``$proxy_add_x_forwarded_for``) and X-Forwarded-Proto is our scheme.
    The body framing is the client's: Content-Length, or chunked.
    """
    hop = client_ip if peer_ip is None else peer_ip
    xff = hop if head.xff is None else head.xff + b", " + hop
    parts = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
    parts += head.forward
    if head.host is None:
        parts.append(b"Host: %s\r\n" % default_host)
    parts.append(b"X-Real-IP: ")
    parts.append(client_ip)
    parts.append(b"\r\nX-Forwarded-For: ")
    parts.append(xff)
    parts.append(b"\r\n")
    parts.append(_PROTO_LINE.get(scheme) or b"X-Forwarded-Proto: %s\r\n" % scheme)
    # Ours when ids are on; otherwise the client's, untouched.
    rid = head.request_id if request_id is None else request_id
    if rid is not None:
        parts.append(b"X-Request-ID: %s\r\n" % rid)
    if upgrade is not None:
        # Forwarded only for a client that asked (the seed sends Connection:
        # upgrade on every request, which makes keep-alive upstream impossible).
        parts.append(b"Upgrade: %s\r\nConnection: upgrade\r\n" % upgrade)
    if head.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
    elif head.content_length is not None:
        parts.append(b"Content-Length: %d\r\n\r\n" % head.content_length)
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


# A request id a client may choose: a plain token (log and header safe).
_REQUEST_ID_BYTES: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
)


def usable_request_id(value: bytes | None) -> bool:
    """True for a client X-Request-ID we pass on (1-128 token characters)."""
    if value is None or not 0 < len(value) <= 128:
        return False
    return all(byte in _REQUEST_ID_BYTES for byte in value)
