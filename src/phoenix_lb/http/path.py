"""Request path normalization for routing and access decisions (not for forwarding).

Routing on the raw path would let ``/%6detrics`` or ``/x/../metrics`` reach a
location its prefix rule should guard.  Like nginx, we decide on a
normalized path: percent-encoded unreserved characters decoded, dot segments
removed (RFC 3986 5.2.4) and repeated slashes merged; the request itself is
forwarded exactly as received.
"""

from __future__ import annotations

import re

_UNRESERVED_PCT = re.compile(rb"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")


def _decode(match: re.Match[bytes]) -> bytes:
    return bytes([int(match.group(1), 16)])


def normalize_path(path: bytes) -> bytes:
    """Canonical form of an origin-form path used to choose a route."""
    if b"%" not in path and b"/." not in path and b"//" not in path:
        return path
    if b"%" in path:
        path = _UNRESERVED_PCT.sub(_decode, path)
    segments: list[bytes] = []
    for segment in path.split(b"/")[1:]:
        if segment == b"..":
            if segments:
                segments.pop()
        elif segment != b"." and segment != b"":
            segments.append(segment)
    trailing = path.endswith((b"/", b"/.", b"/..")) and segments
    return b"/" + b"/".join(segments) + (b"/" if trailing else b"")
