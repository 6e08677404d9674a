"""What an active health probe sends and how its answer is judged (pure, no I/O).

The rules of nginx_upstream_check_module's ``check_http_send`` /
``check_http_expect_alive``, written once and used both by the config schema
(to reject a bad ``send`` or ``expect`` at load time) and by the prober
(:mod:`phoenix_lb.health.checker`):

* ``send`` is the raw request, written in YAML with ``\\r\\n`` escapes as in
  nginx (``"HEAD /health HTTP/1.0\\r\\n\\r\\n"``).  A double-quoted YAML string
  already turns them into CR LF; a plain or single-quoted one keeps the
  backslashes, so :func:`unescape_send` accepts both spellings.
* Only the status line of the answer is read (at most
  :data:`MAX_STATUS_LINE` bytes); its code must be in ``expect``: classes
  (``2xx``) or exact codes (``200``).

Reasons are short fixed strings, because they end up in logs, status pages
and metrics labels: ``status 503``, ``invalid response``, ``timeout``,
``connect refused``, ``connect error: <strerror>``, ``unresolved``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "MAX_STATUS_LINE",
    "check_send",
    "classify_status",
    "expect_codes",
    "parse_expect_item",
    "parse_status_line",
    "unescape_send",
]

# A status line is "HTTP/1.1 200 OK\r\n"; a peer sending 1 KiB without a
# newline is not an HTTP server.  (h11 caps a whole head at 16 KiB; the GSLB
# checker uses the same 1 KiB for the same line.)
MAX_STATUS_LINE = 1024

_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\"}
_ESCAPE = re.compile(r"\\(.?)", re.DOTALL)

# RFC 9110 5.6.2 token characters, for the method.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REQUEST_LINE = re.compile(r"([^ ]*) ([^ ]*) ([^ ]*)")
_VERSION = re.compile(r"HTTP/1\.[01]")
# RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
# The SP before an empty reason is often left out; accept both.
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([1-5][0-9][0-9])(?:[ \t][^\r\n]*)?\r?\n?")
_CLASS = re.compile(r"([1-5])xx", re.IGNORECASE)


def unescape_send(text: str) -> bytes:
    """The bytes of a ``send`` setting: ``\\r``, ``\\n``, ``\\t`` and ``\\\\`` decoded.

    Real CR/LF characters pass through, so the result is the same whether the
    YAML string was double-quoted (YAML decoded the escapes) or not.  Raises
    ValueError for any other escape or a non-ASCII character.
    """

    def replace(match: re.Match[str]) -> str:
        char = match.group(1)
        if char not in _ESCAPES:
            raise ValueError(f"unknown escape {match.group(0)!r} (use \\r, \\n, \\t or \\\\)")
        return _ESCAPES[char]

    if not text.isascii():
        raise ValueError("must be ASCII (it is sent as raw bytes)")
    return _ESCAPE.sub(replace, text).encode("ascii")


def check_send(text: str) -> bytes:
    """Validate an http ``send`` setting and return its bytes; ValueError says why not.

    The request must be one complete head without a body: a request line
    ``METHOD target HTTP/1.x``, CRLF line ends, and a blank line at the end
    (without it the server waits for more header fields until the timeout).
    HTTP/1.1 needs a Host field (RFC 9112 3.2: servers answer 400 without one).
    """
    data = unescape_send(text)
    head = data.decode("ascii")
    if not head.endswith("\r\n\r\n"):
        raise ValueError(
            'must end with a blank line ("\\r\\n\\r\\n"), or the server keeps '
            "waiting for more header fields"
        )
    if head.index("\r\n\r\n") != len(head) - 4:
        raise ValueError("must be a request head only: nothing may follow the blank line")
    lines = head[:-4].split("\r\n")
    if any("\n" in line or "\r" in line for line in lines):
        raise ValueError('every line must end with "\\r\\n" (found a bare CR or LF)')
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ValueError(
            f"must start with a request line like 'HEAD /health HTTP/1.0', not {lines[0]!r}"
        )
    method, target, version = match.groups()
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"{method!r} is not an HTTP method")
    if not target or not target.isprintable():
        raise ValueError(f"{target!r} is not a request target")
    if not _VERSION.fullmatch(version):
        raise ValueError(f"version {version!r} must be HTTP/1.0 or HTTP/1.1")
    names = []
    for line in lines[1:]:
        name, colon, _ = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ValueError(f"{line!r} is not a header field (name: value)")
        names.append(name.lower())
    if version == "HTTP/1.1" and "host" not in names:
        raise ValueError(
            "an HTTP/1.1 request needs a Host field (servers answer 400 without "
            "one), e.g. 'GET /health HTTP/1.1\\r\\nHost: app\\r\\n\\r\\n'; or use HTTP/1.0"
        )
    return data


def parse_expect_item(value: object) -> str:
    """Normalise one ``expect`` item: a class ``"2xx"`` or a code 100-599 (int or digits).

    Returns the canonical text (``"2xx"``, ``"200"``); ValueError otherwise.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a status class or code")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f"{value!r} is not a status class or code")
    match = _CLASS.fullmatch(text)
    if match is not None:
        return f"{match.group(1)}xx"
    if text.isascii() and text.isdigit() and 100 <= int(text) <= 599:
        return str(int(text))
    raise ValueError(f"{value!r} is neither a status class (1xx to 5xx) nor a code from 100 to 599")


def expect_codes(items: Iterable[object]) -> frozenset[int]:
    """The status codes an ``expect`` list accepts (classes expanded)."""
    codes: set[int] = set()
    for item in items:
        text = parse_expect_item(item)
        if text.endswith("xx"):
            base = int(text[0]) * 100
            codes.update(range(base, base + 100))
        else:
            codes.add(int(text))
    return frozenset(codes)


def parse_status_line(line: bytes) -> int | None:
    """The status code of an HTTP/1.x status line (with or without its CRLF), or None."""
    match = _STATUS_LINE.fullmatch(line)
    return int(match.group(1)) if match is not None else None


def classify_status(line: bytes, expect: frozenset[int]) -> tuple[bool, str]:
    """Judge a probe's first response line: ``(ok, reason)``.

    ``(True, "status 200")``, ``(False, "status 503")``, or
    ``(False, "invalid response")`` when the line is not an HTTP/1.x status line.
    """
    status = parse_status_line(line)
    if status is None:
        return False, "invalid response"
    return status in expect, f"status {status}"
