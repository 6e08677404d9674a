"""Which requests the admin listener answers: Host and Origin checks, sans-IO.

The admin listener sits on loopback without a token by default, so "only
this machine can reach it" is its whole protection.  Two attacks turn the
operator's own browser into a client on this machine:

* **DNS rebinding.**  A page on ``evil.example`` re-points its name to
  127.0.0.1, then reads ``http://evil.example:9000/api/status``: same origin
  for the browser, our admin listener on the wire.  The browser still sends
  ``Host: evil.example:9000``, so answering only the listener's own names
  stops it (Jupyter's ``local_hostnames``, webpack-dev-server's and Vite's
  ``allowedHosts``).  Names: ``localhost``, ``127.0.0.1``, ``::1``, the
  ``admin.bind`` host, the address the connection arrived on (so a
  wildcard bind answers to the IP a client used), each with the port the
  connection arrived on, plus ``admin.allowed_hosts``: names, and addresses
  rewritten on the way (NAT, a container's published port), need listing.
  Refused with 421 (Misdirected Request: "not an authority I serve").
* **Cross-site request forgery.**  Any page can make the browser POST to
  ``http://127.0.0.1:9000/api/...`` (a form, or ``fetch`` in ``no-cors``
  mode); it cannot read the answer, but the server is drained.  Browsers mark
  such requests with ``Sec-Fetch-Site`` (all of them since 2023) and
  ``Origin``, which a page can neither set nor remove.  A state-changing
  request (any method but GET and HEAD) is refused with 403 when
  ``Sec-Fetch-Site`` is other than ``same-origin`` or ``none`` (typed by the
  user), or when ``Origin`` is not this listener, i.e. not ``Host``.  This is
  the algorithm of Go 1.25's ``net/http.CrossOriginProtection``, made
  stricter: the Origin check also runs when Sec-Fetch-Site is present
  (Go skips it), since a browser that sends both never makes them disagree.

Clients that are not browsers (curl, ``phoenix-lb ctl``, Prometheus,
keepalived's check) send neither Sec-Fetch-Site nor Origin and are not
affected.  A request without Host cannot come from a browser either (it
always sends one): HTTP/1.0 allows that and is answered; HTTP/1.1 requires
Host (RFC 9112 section 3.2) and gets 400, as from nginx.

The bearer token (``admin.auth_token_file``) is a separate defence that
these checks do not replace: a browser never attaches it on its own.  They
still apply with a token, and cover what it leaves public (``/health``, the
status page).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

# Names a loopback admin listener is always reached by (RFC 6761 reserves
# "localhost"; browsers resolve it to loopback without asking DNS).
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
# Methods that must not change state (RFC 9110 section 9.2.1); every admin
# handler for them only reads.
SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
# Sec-Fetch-Site values that mean "not another site": the listener's own page,
# or the user typing the URL / opening a bookmark.
SAME_SITE_VALUES: Final = frozenset({"same-origin", "none"})
# Refusal texts echo what was sent; cap it (headers may be up to 16 KiB).
_SHOWN: Final = 100
_HOSTNAME: Final = re.compile(
    r"(?=.{1,253}\.?$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
    r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not served: the status to answer and a one-line reason."""

    status: int
    reason: str


def canonical_host(host: str) -> str:
    """A host in one spelling: IP addresses normalised (IPv4-mapped IPv6 as
    IPv4, so a dual-stack socket's ``::ffff:10.0.0.5`` is ``10.0.0.5``),
    names lower-cased."""
    try:
        # A socket's link-local address carries its zone ("fe80::1%eth0");
        # a Host never does.
        address = ipaddress.ip_address(host.partition("%")[0] if ":" in host else host)
    except ValueError:
        return host.lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_authority(text: str) -> tuple[str, int | None] | None:
    """``host[:port]`` or ``[v6][:port]`` -> (canonical host, port or None); None if malformed."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, sep, port_text = text.partition(":")
        rest = sep + port_text
    if not host:
        return None
    if not rest:
        return canonical_host(host), None
    digits = rest[1:]
    # isdigit() alone would accept non-ASCII digits.
    if rest[0] != ":" or not (digits.isascii() and digits.isdigit()) or len(digits) > 5:
        return None
    port = int(digits)
    if port > 65535:
        return None
    return canonical_host(host), port


def parse_allowed_host(text: str) -> tuple[str, int | None]:
    """An ``admin.allowed_hosts`` entry: ``name``, ``name:port``, an IP, ``[v6]:port``.

    Raises ValueError naming what is wrong.
    """
    parsed = parse_authority(text) if isinstance(text, str) else None
    if parsed is None:
        raise ValueError(f"{text!r}: expected host or host:port (IPv6 in brackets)")
    host, port = parsed
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not (host.isascii() and _HOSTNAME.fullmatch(host)):
            raise ValueError(
                f"{text!r}: {host!r} is not a host name or IP address "
                "(no scheme or path; internationalised names in their xn-- form)"
            ) from None
    if port == 0:
        raise ValueError(f"{text!r}: port 0 (write the host alone to allow any port)")
    return host, port


class AdminHosts:
    """The names the admin listener answers to (see the module docstring).

    ``bind_host`` is the host of ``admin.bind``; ``allowed`` the entries of
    ``admin.allowed_hosts``, where one without a port allows any port.
    """

    __slots__ = ("allowed", "names")

    def __init__(self, bind_host: str, allowed: Iterable[str] = ()) -> None:
        self.names = frozenset({*LOOPBACK_NAMES, canonical_host(bind_host)})
        self.allowed = frozenset(parse_allowed_host(entry) for entry in allowed)

    def allows(self, authority: str, local: tuple[str, int]) -> bool:
        """Whether ``authority`` (a Host value) names this listener.

        ``local`` is the (address, port) the connection arrived on.  A Host
        without a port means port 80, HTTP's default.
        """
        parsed = parse_authority(authority)
        if parsed is None:
            return False
        host, port = parsed
        if port is None:
            port = 80
        local_ip, local_port = local
        if port == local_port and (host in self.names or host == canonical_host(local_ip)):
            return True
        if (host, None) in self.allowed or (host, port) in self.allowed:
            return True
        # An IP literal, whatever its port: DNS rebinding needs a name that
        # resolves to us, and NAT, `docker run -p` or an SSH tunnel change
        # the address or port a client sees; only names need allowed_hosts.
        return _is_ip(host)


def same_origin(origin: str, host: str | None) -> bool:
    """Whether an ``Origin`` value is the origin whose authority is ``host``.

    As in Go's CrossOriginProtection the scheme is not compared (Host has
    none; the admin listener speaks plain HTTP, an HTTPS origin means a proxy
    in front).  "null" (sandboxed frames, ``file:``) is never the same.
    """
    if host is None:
        return False
    scheme, sep, authority = origin.strip().partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return False
    return authority.lower() == host.strip().lower()


def _shown(value: str) -> str:
    return repr(value[:_SHOWN] + ("..." if len(value) > _SHOWN else ""))


def check_request(
    hosts: AdminHosts,
    local: tuple[str, int],
    method: str,
    headers: Mapping[str, str],
    *,
    http_version: str = "1.1",
    authority: str | None = None,
) -> Refusal | None:
    """None if the request may be served, else why not.

    ``headers`` has lower-case names (repeated fields joined with ", ", so a
    second Host or Origin makes the value malformed, never ignored);
    ``authority`` is the request target's, when it came in absolute form
    (``GET http://host:port/path``), which then stands for Host (RFC 9112
    section 3.2.2).
    """
    host = authority if authority is not None else headers.get("host")
    if host is None:
        if http_version != "1.0":
            return Refusal(400, "HTTP/1.1 requests need a Host header")
    elif not hosts.allows(host, local):
        return Refusal(
            421,
            f"Host {_shown(host)} is not a name of this admin listener "
            "(add it to admin.allowed_hosts if it is)",
        )
    if method in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in SAME_SITE_VALUES:
        return Refusal(
            403,
            f"cross-site request refused (Sec-Fetch-Site: {_shown(site)}); "
            "use the status page itself, curl or phoenix-lb ctl",
        )
    origin = headers.get("origin")
    if origin is not None and not same_origin(origin, host):
        return Refusal(
            403,
            f"cross-origin request refused (Origin {_shown(origin)} is not this admin "
            "listener); use the status page itself, curl or phoenix-lb ctl",
        )
    return None


__all__ = [
    "AdminHosts",
    "Refusal",
    "canonical_host",
    "check_request",
    "parse_allowed_host",
    "parse_authority",
    "same_origin",
]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
