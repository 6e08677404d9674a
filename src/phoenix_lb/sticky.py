"""Sticky sessions by cookie: opaque server ids, finding and stripping our cookie.

Pure: bytes in, decisions and bytes out; no clock except an optional ``now``
for the ``Expires`` attribute.

Flow per request (nginx Plus ``sticky cookie``, HAProxy ``cookie ... insert
indirect nocache``):

1. ``StickyCookie.find(cookie_values)`` returns the id in our cookie, if
   any, and the request's ``Cookie`` values without it (``None`` when the
   request had no cookie of ours, so the common case forwards the head as
   is).  The backend never sees our cookie (HAProxy's ``indirect``).
2. ``StickyTable.lookup(id)`` maps the id to a server index of the group;
   -1 for a missing, unknown or tampered id.  If that server is available
   the request goes there; otherwise the balancer picks, and the response
   sets a new cookie.
3. A response from a server chosen by balancing gets
   ``StickyTable.set_cookie_line(index)`` and ``CACHE_CONTROL_LINE`` so that
   shared caches do not store one client's cookie for everybody.

Server ids are ``HMAC-SHA256(secret, identity)`` truncated to 96 bits and
base64url-encoded (16 characters).  The identity is the server's configured
address (or name): the id reveals nothing about it, is the same in every
worker and after a restart or a reorder of the server list, and cannot be
forged for a server without the secret.  A forged or stale id simply maps
to no server.  Ids are routing hints, not credentials: a client may present
any id it was given earlier.

The secret: every process (and every instance behind one address) must use
the same one, or clients are re-pinned at each hop.  The runtime reads it
from the config (``secret_file`` or an environment variable) or, when none
is configured, generates 32 random bytes once (``secrets.token_bytes``) and
keeps them in the state directory (mode 0600), so that ids survive restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from email.utils import formatdate
from typing import Final

__all__ = ["CACHE_CONTROL_LINE", "StickyCookie", "StickyTable"]

#: added to responses that set the cookie (HAProxy ``nocache``; RFC 9111 5.2.2.4)
CACHE_CONTROL_LINE: Final = b'Cache-Control: no-cache="Set-Cookie"\r\n'

# 96 bits of HMAC: far beyond guessing, and 16 base64url characters without padding.
ID_BYTES: Final = 12
# Secrets shorter than this are refused: they could be brute-forced from ids.
MIN_SECRET: Final = 16
# Domain separation: the same secret may key other things later.
_CONTEXT: Final = b"phoenix-lb sticky server id v1\x00"

# RFC 6265 4.1.1: cookie-name is an RFC 2616 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Domain and Path attribute values: no ';', no controls, no spaces.
DOMAIN_PATTERN: Final = re.compile(r"\.?[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?")
PATH_PATTERN: Final = re.compile(r"/[\x21-\x3a\x3c-\x7e]*")
_SAMESITE: Final = {"lax": "Lax", "strict": "Strict", "none": "None"}


class StickyCookie:
    """The proxy's affinity cookie: its attributes, server ids, parsing."""

    __slots__ = (
        "_attrs",
        "_name",
        "_secret",
        "domain",
        "expires",
        "httponly",
        "name",
        "path",
        "samesite",
        "secure",
    )

    def __init__(
        self,
        name: str = "SERVERID",
        expires: float | None = 3600.0,
        domain: str | None = None,
        path: str | None = "/",
        httponly: bool = True,
        secure: bool = False,
        samesite: str | None = "Lax",
        *,
        secret: bytes,
    ) -> None:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"sticky cookie name {name!r} is not a valid cookie name")
        if expires is not None and expires < 1:
            raise ValueError(f"sticky cookie expires must be at least 1s, not {expires}")
        if domain is not None and not DOMAIN_PATTERN.fullmatch(domain):
            raise ValueError(f"sticky cookie domain {domain!r} is not a host name")
        if path is not None and not PATH_PATTERN.fullmatch(path):
            raise ValueError(f"sticky cookie path {path!r} must start with '/' (no ';')")
        if samesite is not None:
            if samesite.lower() not in _SAMESITE:
                raise ValueError(f"sticky cookie samesite {samesite!r}: Lax, Strict or None")
            samesite = _SAMESITE[samesite.lower()]
        if len(secret) < MIN_SECRET:
            raise ValueError(f"sticky cookie secret must be at least {MIN_SECRET} bytes")
        self.name = name
        self.expires = expires
        self.domain = domain
        self.path = path
        self.httponly = httponly
        #: default for ``secure``; ``secure: auto`` passes it per listener
        self.secure = secure
        self.samesite = samesite
        self._secret = secret
        self._name = name.encode()
        # Attributes after Max-Age/Expires except Secure, built once.
        attrs = b""
        if domain is not None:
            attrs += b"; Domain=" + domain.encode()
        if path is not None:
            attrs += b"; Path=" + path.encode()
        if httponly:
            attrs += b"; HttpOnly"
        self._attrs = attrs

    def server_id(self, server_key: str) -> bytes:
        """The opaque, stable id of the server whose identity is ``server_key``."""
        mac = hmac.new(self._secret, _CONTEXT + server_key.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:ID_BYTES])

    def find(self, cookie_header_values: list[bytes]) -> tuple[bytes | None, list[bytes] | None]:
        """Our cookie's value, and the ``Cookie`` values with our cookie removed.

        ``cookie_header_values`` are the values of every ``Cookie`` field of
        the request, in order.  The first value of our cookie wins; every
        copy is removed.  The second result is None when nothing was removed
        (forward the fields unchanged); otherwise it lists the new values in
        order, without fields that held only our cookie.  ``SERVERID2`` or
        ``XSERVERID`` are other cookies and stay.
        """
        # The name alone, not "name=": browsers send no space before "=",
        # but RFC 6265 5.2 parsing trims it, and so do we.  find() rather
        # than ``in``: compiled, ``bytes in bytes`` first tries an int lookup
        # and swallows a TypeError (about 1.8k instructions under callgrind).
        name = self._name
        for value in cookie_header_values:
            if value.find(name) >= 0:
                break
        else:
            return None, None  # the hot path: not even a substring match
        found: bytes | None = None
        changed = False
        out: list[bytes] = []
        for value in cookie_header_values:
            if value.find(name) < 0:
                out.append(value)
                continue
            kept: list[bytes] = []
            removed = False
            for part in value.split(b";"):
                pair = part.strip()
                if not pair:
                    continue
                eq = pair.find(b"=")
                if eq >= 0 and pair[:eq].rstrip() == name:
                    removed = True
                    if found is None:
                        found = pair[eq + 1 :].lstrip()
                        if len(found) >= 2 and found[0] == 0x22 and found[-1] == 0x22:
                            found = found[1:-1]  # RFC 6265: DQUOTE cookie-value DQUOTE
                    continue
                kept.append(pair)
            if removed:
                changed = True
                if kept:
                    out.append(b"; ".join(kept))
            else:
                out.append(value)
        return found, out if changed else None

    def set_cookie_header(
        self, server_id: bytes, now: float | None = None, secure: bool | None = None
    ) -> bytes:
        """The full ``Set-Cookie: ...\\r\\n`` line pinning a client to ``server_id``.

        ``Max-Age`` always when the cookie expires (every current browser
        honours it); ``Expires`` too when ``now`` (Unix time) is given, for
        old clients.  ``secure`` overrides the configured default (``auto``
        is Secure on TLS listeners).
        """
        line = b"Set-Cookie: " + self._name + b"=" + server_id
        expires = self.expires
        if expires is not None:
            line += b"; Max-Age=%d" % int(expires)
            if now is not None:
                line += b"; Expires=" + formatdate(now + expires, usegmt=True).encode()
        line += self._attrs
        if self.secure if secure is None else secure:
            line += b"; Secure"
        if self.samesite is not None:
            line += b"; SameSite=" + self.samesite.encode()
        return line + b"\r\n"


class StickyTable:
    """Server ids of one upstream group and the way back, built when its servers change.

    ``keys`` are the servers' identities (configured addresses) in group
    order; indexes are ``Server.index``.  If two servers share an identity
    the first one gets the id.
    """

    __slots__ = ("_by_id", "_ids", "_lines", "_lines_secure", "cookie")

    def __init__(self, cookie: StickyCookie, keys: Sequence[str]) -> None:
        self.cookie = cookie
        self._ids = [cookie.server_id(key) for key in keys]
        self._by_id: dict[bytes, int] = {}
        for index, server_id in enumerate(self._ids):
            self._by_id.setdefault(server_id, index)
        # Set-Cookie lines without Expires are constant: built once per server.
        self._lines = [cookie.set_cookie_header(i, secure=False) for i in self._ids]
        self._lines_secure = [cookie.set_cookie_header(i, secure=True) for i in self._ids]

    def lookup(self, server_id: bytes | None) -> int:
        """The server index of ``server_id``; -1 when missing, unknown or tampered."""
        if not server_id:
            return -1
        return self._by_id.get(server_id, -1)

    def server_id(self, index: int) -> bytes:
        """The id of the server at ``index``."""
        return self._ids[index]

    def set_cookie_line(self, index: int, secure: bool | None = None) -> bytes:
        """The prebuilt ``Set-Cookie`` line (no ``Expires``) for the server at ``index``."""
        if self.cookie.secure if secure is None else secure:
            return self._lines_secure[index]
        return self._lines[index]
