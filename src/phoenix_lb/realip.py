"""The real client address behind trusted proxies (nginx ``realip``, recursive), pure.

``RealIp(["10.0.0.0/8"], "X-Forwarded-For").client_ip(peer, header_value)``
follows ``ngx_http_get_forwarded_addr_internal`` with ``real_ip_recursive on``:

1. a peer that is not trusted is the client: return it, whatever the header
   says (anyone can write an X-Forwarded-For header);
2. otherwise take the header's entries from the right (entries are separated
   by commas and/or spaces, as nginx splits them); each entry becomes the
   candidate; stop at the first candidate that is not trusted: that is the
   client;
3. if every entry is trusted, the leftmost one is the client;
4. an entry that is not an address (``unknown``, garbage, an empty element
   at the far left) stops the walk and the last valid candidate stands: the
   peer itself when the rightmost entry is invalid (nginx returns
   NGX_DECLINED there and keeps the connection address).

So a client that sends ``X-Forwarded-For: 6.6.6.6`` through a trusted proxy
that appends the real address gets ``"6.6.6.6, 198.51.100.7"``, and the walk
stops at ``198.51.100.7``: values a client prepends are never reached unless
every proxy on the right of them is trusted.

Entries are parsed like ``ngx_parse_addr_port``: ``192.0.2.1``,
``192.0.2.1:8080``, ``2001:db8::1`` or ``[2001:db8::1]:8080`` (the port is
dropped).  One deliberate difference: results are canonical text (IPv6
compressed, IPv4-mapped IPv6 written as IPv4), so the same client cannot be
two rate-limit keys by writing its address two ways.

``header``: ``X-Forwarded-For`` (default), ``X-Real-IP`` or any other
header name (nginx accepts any), or ``proxy_protocol``: the caller then
passes the PROXY protocol source address as ``header_value``, and it is used
only when the peer (the L4 balancer) is trusted, as in nginx.
``recursive=False`` is nginx's default ``real_ip_recursive off``: only the
rightmost entry is considered.

With several X-Forwarded-For header lines, pass them joined with ", " in
arrival order (``RequestHead.xff``); nginx walks them last line first, which
gives the same result.

``trusted`` entries are CIDRs, single addresses or ``unix:`` (a peer on a
Unix socket, whose address is ``b"unix"``); an empty list trusts nobody and
``client_ip`` always returns the peer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Final

from phoenix_lb.access import AccessRules, parse_network

__all__ = ["PROXY_PROTOCOL", "RealIp", "normalize_ip"]

#: ``header`` value meaning "the PROXY protocol source address".
PROXY_PROTOCOL: Final = "proxy_protocol"

# RFC 9110 5.6.2 token.
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Canonical forms of header entries already seen; b"" marks an invalid entry.
# Proxies repeat the same few addresses, clients come back: a dictionary hit
# replaces the address parser almost always.
_CANON_MAX: Final = 8192


def _parse_addr(text: bytes) -> bytes | None:
    """Canonical text of a bare address, or None."""
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not s or "%" in s:
        return None
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return str(mapped).encode("ascii")
        return addr.compressed.encode("ascii")
    return str(addr).encode("ascii")


def _valid_port(text: bytes) -> bool:
    # ngx_atoi: digits only; ngx_parse_addr_port wants 1..65535.
    return 0 < len(text) <= 5 and text.isdigit() and 1 <= int(text) <= 65535


def normalize_ip(text: bytes) -> bytes | None:
    """Canonical address of ``text`` (an address, optionally with a port), or None.

    Accepts what ``ngx_parse_addr_port`` accepts: ``a.b.c.d``,
    ``a.b.c.d:port``, a bare IPv6 address, ``[v6]:port``.  IPv6 comes back
    compressed, IPv4-mapped IPv6 as IPv4.
    """
    addr = _parse_addr(text)
    if addr is not None:
        return addr
    if text[:1] == b"[":
        close = text.find(b"]")
        # nginx: "[v6]" without a port is refused, like "[v6]:" and "[v6]x".
        if close < 0 or text[close + 1 : close + 2] != b":":
            return None
        host = text[1:close]
        port = text[close + 2 :]
    else:
        colon = text.find(b":")
        if colon < 0:
            return None
        host = text[:colon]
        port = text[colon + 1 :]
    if not _valid_port(port):
        return None
    return _parse_addr(host)


class RealIp:
    """Finds the client address from the peer and one header (see the module docstring)."""

    __slots__ = ("_canon", "_trusted", "header", "header_name", "recursive", "uses_proxy_protocol")

    def __init__(
        self, trusted: Sequence[str], header: str = "X-Forwarded-For", recursive: bool = True
    ) -> None:
        if isinstance(trusted, str):
            raise ValueError("trusted proxies must be a list of addresses or CIDRs, not a string")
        rules: list[tuple[str, str]] = []
        raw: Sequence[object] = trusted  # checked below, not by mypyc (TypeError)
        for entry in raw:
            if not isinstance(entry, str):
                raise ValueError(f"trusted proxy {entry!r}: expected an address or CIDR string")
            if entry.strip().lower() == "all":
                raise ValueError(
                    "trusted proxy 'all' would let every client choose its address; "
                    "list the proxies' networks instead"
                )
            try:
                parse_network(entry)
            except ValueError as exc:
                raise ValueError(f"trusted proxy {entry!r}: {exc}") from None
            rules.append(("allow", entry))
        # Strict default of AccessRules: a non-empty list denies what it does
        # not match; an empty one would allow all, so say "nobody" explicitly.
        rules.append(("deny", "all"))
        self._trusted = AccessRules(rules)
        if header == PROXY_PROTOCOL:
            self.header_name: bytes | None = None
            self.uses_proxy_protocol = True
        elif isinstance(header, str) and _TOKEN_RE.fullmatch(header):
            self.header_name = header.lower().encode("ascii")
            self.uses_proxy_protocol = False
        else:
            raise ValueError(
                f"invalid real_ip_header {header!r}: use a header name such as "
                f"X-Forwarded-For or X-Real-IP, or {PROXY_PROTOCOL}"
            )
        #: the configured header, as written
        self.header = header
        self.recursive = recursive
        self._canon: dict[bytes, bytes] = {}

    def trusted(self, ip: bytes) -> bool:
        """True when ``ip`` is one of the trusted proxies."""
        return self._trusted.allowed(ip)

    def client_ip(self, peer_ip: bytes, header_value: bytes | None) -> bytes:
        """The client address: ``peer_ip`` unless it is trusted and ``header_value`` says more."""
        if header_value is None or not self._trusted.allowed(peer_ip):
            return peer_ip
        addr = peer_ip
        # Split as nginx does: spaces and commas both separate entries.
        entries = header_value.replace(b",", b" ").split(b" ")
        i = len(entries)
        while i > 0:
            i -= 1
            entry = entries[i]
            if not entry:
                continue
            canon = self._canonical(entry)
            if not canon:
                break
            addr = canon
            if not self.recursive or not self._trusted.allowed(addr):
                break
        return addr

    def _canonical(self, entry: bytes) -> bytes:
        cache = self._canon
        hit = cache.get(entry)
        if hit is not None:
            return hit
        canon = normalize_ip(entry)
        result = canon if canon is not None else b""
        if len(cache) >= _CANON_MAX:
            cache.clear()
        cache[entry] = result
        return result
