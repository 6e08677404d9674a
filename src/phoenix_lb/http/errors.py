"""Responses the proxy writes itself (errors, 100 Continue), built once.

Bodies are short, plain text, and name no internal address or version.
"""

from __future__ import annotations

from typing import Final

from phoenix_lb.http.response import SERVER_HEADER
from phoenix_lb.http.status import reason, status_line

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_response(
    status: int,
    *,
    date: bytes = b"",
    close: bool = True,
    head_only: bool = False,
    extra: bytes = b"",
) -> bytes:
    """A complete response for ``status`` with a one-line text body.

    ``date`` is a ready ``Date: ...\\r\\n`` line; ``extra`` more header lines.
    """
    body = b"%d %s\n" % (status, reason(status))
    parts = [
        status_line(status),
        SERVER_HEADER,
        date,
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        extra,
        b"Connection: close\r\n\r\n" if close else b"\r\n",
    ]
    if not head_only:
        parts.append(body)
    return b"".join(parts)
