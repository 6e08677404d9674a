"""Allow/deny rules per route (nginx ``ngx_http_access_module``), pure.

``AccessRules([("allow", "127.0.0.1"), ("allow", "10.0.0.0/8"), ("deny", "all")])``
evaluates the rules in order for a client address and the first rule that
matches decides.  Targets are ``all``, an IPv4 or IPv6 network in CIDR form,
a single address (a /32 or /128), or ``unix:`` (connections over a Unix
socket, whose peer has no IP address).

One deliberate difference from nginx: when the list is not empty and no rule
matches, the request is **denied** (nginx allows it).  A list written as
``allow 127.0.0.1`` without the closing ``deny all`` would otherwise leave an
admin location open to everyone; here forgetting ``deny all`` fails closed.
An empty list allows everything (no access control on that route).

Addresses: an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a
dual-stack socket reports for an IPv4 client) is an IPv4 address, matched by
IPv4 rules, as nginx does.  Likewise a rule written as a mapped network
(``::ffff:10.0.0.0/104``) is the IPv4 rule ``10.0.0.0/8``; so ``::/0`` does
not cover IPv4 clients: use ``all``.  A client "address" that is not an IP
(``b"unix"`` for a Unix-socket peer) is matched only by ``all`` and ``unix:``.

Cost per request: one dictionary lookup.  Decisions are cached per address
string; the cache is emptied when it reaches ``cache_size`` entries, so
a flood of distinct addresses costs one parse each and bounded memory.

``parse_ip`` and ``parse_network`` are shared with ``realip``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

__all__ = ["DEFAULT_CACHE_SIZE", "AccessRules", "parse_ip", "parse_network"]

#: Decisions remembered per ``AccessRules``.  4096 distinct client addresses
#: cover the clients of a busy admin route many times over; beyond that the
#: cache restarts (one parse, about 2 us, per address).
DEFAULT_CACHE_SIZE: Final = 4096

# Address families as used here.  UNIX stands for any peer that is not an IP.
FAMILY_UNIX: Final = 0
FAMILY_V4: Final = 4
FAMILY_V6: Final = 6


def parse_ip(text: bytes | str) -> tuple[int, int] | None:
    """``(4, value)`` or ``(6, value)`` for an IP address; None when ``text`` is not one.

    IPv4-mapped IPv6 addresses come back as IPv4.  Only the textual forms are
    accepted (bytes are decoded as ASCII, never taken as a packed address);
    IPv6 zone identifiers (``%eth0``) are refused.
    """
    if isinstance(text, bytes):
        try:
            s = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    else:
        s = text
    if not s or "%" in s:
        return None
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return (FAMILY_V4, int(mapped))
        return (FAMILY_V6, int(addr))
    return (FAMILY_V4, int(addr))


def parse_network(text: str) -> tuple[int, int, int]:
    """``(family, network, prefix_length)`` for a CIDR, a single address or ``unix:``.

    ``family`` is 4, 6, or 0 for ``unix:``.  IPv4-mapped IPv6 networks
    (prefix >= 96) come back as IPv4.  Host bits set after the prefix are an
    error (nginx only warns; a typo in an access list deserves more), as are
    zone identifiers.  Raises ValueError with the reason.
    """
    s = text.strip() if isinstance(text, str) else ""
    if s == "unix:":
        return (FAMILY_UNIX, 0, 0)
    hint = "expected an address or CIDR such as 10.0.0.0/8, 2001:db8::/32 or 127.0.0.1"
    if not s or "%" in s:
        raise ValueError(f"invalid address {text!r}: {hint}")
    try:
        net = ipaddress.ip_network(s, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(s, strict=False)
        except ValueError:
            raise ValueError(f"invalid address {text!r}: {hint}") from None
        raise ValueError(
            f"invalid network {text!r}: bits are set after the /{loose.prefixlen} prefix; "
            f"did you mean {loose}?"
        ) from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return (FAMILY_V4, int(mapped), net.prefixlen - 96)
    return (net.version, int(net.network_address), net.prefixlen)


def _mask(family: int, prefix: int) -> int:
    width = 32 if family == FAMILY_V4 else 128
    return ((1 << prefix) - 1) << (width - prefix)


class AccessRules:
    """Ordered allow/deny rules; ``allowed(ip)`` is the per-request call.

    ``rules`` is a sequence of ``(action, target)``: action ``allow`` or
    ``deny``; target ``all``, ``unix:``, a CIDR or an address.  Raises
    ValueError naming the rule that does not parse.
    """

    __slots__ = ("_cache", "_cache_size", "_other", "_v4", "_v6", "rules")

    def __init__(
        self, rules: Sequence[tuple[str, str]] = (), cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        if cache_size <= 0:
            raise ValueError("cache_size must be positive")
        # Per family, in order: (network, mask, allow).  ``all`` goes into
        # every list, so first-match order holds within each family exactly
        # as in nginx's per-family rule arrays.
        v4: list[tuple[int, int, bool]] = []
        v6: list[tuple[int, int, bool]] = []
        other: list[tuple[int, int, bool]] = []
        normalized: list[tuple[str, str]] = []
        # Iterated as plain objects: configuration mistakes must become a
        # ValueError here, not a TypeError from mypyc's runtime type checks.
        raw: Sequence[object] = rules
        for index, rule in enumerate(raw):
            if not (isinstance(rule, tuple | list) and len(rule) == 2):
                raise ValueError(
                    f"access rule {index + 1}: expected (action, address), got {rule!r}"
                )
            action, target = rule
            verb = action.strip().lower() if isinstance(action, str) else ""
            if verb not in ("allow", "deny"):
                raise ValueError(
                    f"access rule {index + 1}: action must be 'allow' or 'deny', got {action!r}"
                )
            allow = verb == "allow"
            where = target.strip() if isinstance(target, str) else ""
            if where.lower() == "all":
                v4.append((0, 0, allow))
                v6.append((0, 0, allow))
                other.append((0, 0, allow))
                normalized.append((verb, "all"))
                continue
            try:
                family, network, prefix = parse_network(where)
            except ValueError as exc:
                raise ValueError(f"access rule {index + 1} ({verb} {target!r}): {exc}") from None
            if family == FAMILY_UNIX:
                other.append((0, 0, allow))
            else:
                (v4 if family == FAMILY_V4 else v6).append((network, _mask(family, prefix), allow))
            normalized.append((verb, where))
        self._v4 = v4
        self._v6 = v6
        self._other = other
        #: the rules as given (normalized), for display and logs
        self.rules: tuple[tuple[str, str], ...] = tuple(normalized)
        self._cache: dict[bytes | str, bool] = {}
        self._cache_size = cache_size

    def __repr__(self) -> str:
        return f"AccessRules({list(self.rules)!r})"

    def __bool__(self) -> bool:
        """False for an empty list (which allows everything)."""
        return bool(self.rules)

    def allowed(self, ip: bytes | str) -> bool:
        """True when the first matching rule allows ``ip`` (see the module docstring)."""
        if not self.rules:
            return True
        cache = self._cache
        hit = cache.get(ip)
        if hit is not None:
            return hit
        result = self._decide(ip)
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[ip] = result
        return result

    def _decide(self, ip: bytes | str) -> bool:
        parsed = parse_ip(ip)
        if parsed is None:
            rules = self._other
            value = 0
        else:
            family, value = parsed
            rules = self._v4 if family == FAMILY_V4 else self._v6
        for network, mask, allow in rules:
            if value & mask == network:
                return allow
        # Non-empty list, nothing matched: deny (stricter than nginx).
        return False
