"""Status lines built once at import, so the hot path only indexes a table."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

_REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
_REASONS[429] = b"Too Many Requests"


def reason(status: int) -> bytes:
    """Reason phrase for ``status`` (empty for unknown codes, as RFC 9112 allows)."""
    return _REASONS.get(status, b"")


STATUS_LINES: Final[dict[int, bytes]] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in _REASONS.items()
}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <code> <reason>\\r\\n`` for any three-digit status."""
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line
