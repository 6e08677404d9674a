"""The configuration schema: every setting declared once, with type, default and meaning.

Models are frozen and reject unknown keys, so a typo is an error rather than a
silently ignored setting.  Durations and sizes are written nginx-style in
YAML (``3s``, ``16k``) and held here as seconds (float) and bytes (int).
``docs/config.md`` is generated from these declarations
(``python -m phoenix_lb.config.docs``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from phoenix_lb.config.units import parse_duration, parse_size
from phoenix_lb.health.probe import check_send, parse_expect_item

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]

# A DNS name (RFC 1123 labels; '_' tolerated because service discovery names
# such as Consul's use it).  Anything else that is not an IP address is a typo.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)


def unit_of(field: FieldInfo) -> Literal["duration", "size"] | None:
    """Tell whether a schema field holds a Duration or a Size (for docs and error messages)."""
    for item in field.metadata:
        if isinstance(item, BeforeValidator):
            if item.func is parse_duration:
                return "duration"
            if item.func is parse_size:
                return "size"
    return None


def split_host_port(
    text: str, *, default_host: str | None = None, allow_port_zero: bool = False
) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` (or a bare port when ``default_host`` is given).

    ``allow_port_zero`` admits port 0 (listeners: let the kernel pick, for tests).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected host:port")
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after IPv6 address")
        host = text[1:end]
        rest = text[end + 1 :]
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [address]:port")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    elif text.isascii() and text.isdigit() and default_host is not None:
        host, port_text = default_host, text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r}: expected host:port")
        if ":" in host:
            raise ValueError(f"{text!r}: write IPv6 addresses in brackets, e.g. [::1]:8080")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{text!r}: {host!r} is not an IPv4 address") from None
        elif not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{text!r}: {host!r} is not a valid host name or IPv4 address")
    # isdigit() alone would accept non-ASCII digits (fullwidth U+FF10..U+FF19).
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"{text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host, port


def _bind_port_to_text(value: object) -> object:
    # `bind: [8080]` is how nginx users write `listen 8080`; YAML makes it an int.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_bind_address(value: str) -> str:
    split_host_port(value, default_host="0.0.0.0", allow_port_zero=True)
    return value


BindAddress = Annotated[
    str, BeforeValidator(_bind_port_to_text), AfterValidator(_check_bind_address)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Model):
    """One backend server of an upstream group."""

    address: str = Field(
        description="host:port of the server; a hostname is resolved when the balancer starts."
    )
    weight: StrictInt = Field(
        1, ge=1, le=1000, description="Relative share of requests (nginx weight)."
    )
    max_fails: StrictInt = Field(
        1,
        ge=0,
        description="Failures within fail_timeout that take the server out for fail_timeout "
        "(nginx semantics; 0 disables passive accounting).",
    )
    fail_timeout: Duration = Field(
        10.0, description="Window for counting failures, and how long a failed server rests."
    )
    backup: StrictBool = Field(
        False,
        description="Only used while no primary server of the upstream is available (round "
        "robin among backups: the seed's 'Backup: Round Robin').",
    )
    slow_start: Duration = Field(
        0.0,
        description="After the server comes back (health up, enabled), its weight ramps up "
        "linearly over this time instead of taking a full share at once (0 = off).",
    )

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        split_host_port(value)
        return value


ExpectItem = Annotated[str, BeforeValidator(parse_expect_item)]


class HealthCheckConfig(_Model):
    """Active health checks of an upstream's servers (nginx_upstream_check_module's ``check``).

    Each server is probed every ``interval``; ``fall`` failed probes in a row
    stop new requests to it (requests in flight finish), ``rise`` good probes
    in a row bring it back.  Every change is logged once with its reason.
    """

    type: Literal["http", "tcp"] = Field(
        "http",
        description="http: connect, write send, read the status line and compare it with "
        "expect; tcp: a completed connect is a success.",
    )
    interval: Duration = Field(
        3.0,
        ge=0.1,
        description="Between two probes of one server, +-10% so that servers are not probed "
        "in lockstep; the first probe waits a random part of it.",
    )
    timeout: Duration = Field(
        1.0,
        gt=0.0,
        description="Bounds one probe: connect, send and status line. At most interval.",
    )
    rise: StrictInt = Field(
        2, ge=1, le=100, description="Good probes in a row that bring a down server back."
    )
    fall: StrictInt = Field(
        5, ge=1, le=100, description="Failed probes in a row that take an up server out."
    )
    send: str = Field(
        "HEAD /health HTTP/1.0\\r\\n\\r\\n",
        description="http: the raw request, with \\r\\n escapes (quoted or not); a request "
        "head ending with a blank line. HTTP/1.1 needs a Host field.",
    )
    expect: list[ExpectItem] = Field(
        ["2xx", "3xx"],
        min_length=1,
        description="http: status classes (2xx) or codes (200) counted as healthy.",
    )
    initial_state: Literal["up", "down"] = Field(
        "up",
        description="State before the first probes: up takes traffic at once; down "
        "(nginx_upstream_check's default_down) waits for rise good probes. A server whose "
        "name does not resolve starts down.",
    )
    port: StrictInt | None = Field(
        None, ge=1, le=65535, description="Probe this port instead of the server's own."
    )

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: float, info: ValidationInfo) -> float:
        # Probes of one server run one after the other, so a timeout longer
        # than the interval would stretch the interval and break the promise
        # that a dead server is out within fall x interval.  Equal is allowed
        # (keepalived-style 1s/1s).
        interval = info.data.get("interval")
        if interval is not None and value > interval:
            raise ValueError(
                f"timeout ({value:g}s) must not exceed interval ({interval:g}s): probes of "
                "a server do not overlap, so a longer timeout would stretch the interval "
                "and delay marking a dead server down"
            )
        return value

    @field_validator("send", "expect")
    @classmethod
    def _check_http_only(cls, value: object, info: ValidationInfo) -> object:
        # Only runs for keys written in the file (defaults are not validated).
        if info.data.get("type") == "tcp":
            raise ValueError("type tcp only connects; use type http to send a request")
        if info.field_name == "send":
            assert isinstance(value, str)
            check_send(value)
        return value


FailureKind = Literal["error", "timeout", "http_502", "http_503", "http_504"]


def _default_fail_on() -> list[FailureKind]:
    return ["error", "timeout"]


class StickyConfig(_Model):
    """Sticky cookie sessions: a client keeps going to the server that answered it first."""

    cookie: str = Field(
        "SERVERID", pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$", description="Cookie name."
    )
    expires: Duration | None = Field(
        3600.0, description="Max-Age of the cookie; null makes it a session cookie."
    )
    domain: str | None = Field(None, description="Domain attribute (e.g. .phoenix-orch).")
    path: str = Field("/", description="Path attribute.")
    httponly: StrictBool = Field(True, description="HttpOnly attribute.")
    secure: Literal["auto", "true", "false"] | bool = Field(
        "auto", description="Secure attribute; auto sets it on TLS listeners."
    )
    samesite: Literal["Lax", "Strict", "None"] | None = Field(
        "Lax", description="SameSite attribute (None requires Secure)."
    )
    cache_control: StrictBool = Field(
        True,
        description='Add Cache-Control: no-cache="Set-Cookie" to responses that set the cookie, '
        "so shared caches do not hand one client's cookie to others.",
    )
    secret_file: str | None = Field(
        None,
        description="File holding the key for the opaque server ids (>= 16 bytes). Without "
        "it, a key is generated once and kept in state_dir. Every balancer behind the same "
        "address must use the same key.",
        json_schema_extra={"backup": "secret"},
    )
    secret_env: str | None = Field(
        None, description="Environment variable holding the key instead of secret_file."
    )

    @field_validator("expires")
    @classmethod
    def _check_expires(cls, value: float | None) -> float | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1s (null makes a session cookie)")
        return value

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: str | None) -> str | None:
        from phoenix_lb.sticky import DOMAIN_PATTERN

        if value is not None and not DOMAIN_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not a host name (letters, digits, '-', '.')")
        return value

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        from phoenix_lb.sticky import PATH_PATTERN

        if not PATH_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} must start with '/' and have no ';', space or control")
        return value

    @model_validator(mode="after")
    def _check_samesite_none(self) -> StickyConfig:
        if self.samesite == "None" and self.secure in ("false", False):
            # Browsers drop SameSite=None cookies without Secure: stickiness
            # would silently not work.
            raise ValueError("samesite: None needs secure: true or auto (browsers drop it)")
        return self


class UpstreamConfig(_Model):
    """A named group of servers that routes send requests to."""

    balance: Literal["least_conn", "round_robin", "random_two", "ewma", "hash"] = Field(
        "least_conn",
        description="least_conn: fewest in-flight requests relative to weight, ties by smooth "
        "weighted round robin; round_robin: smooth weighted round robin (both nginx); "
        "random_two: the less busy of two random servers; ewma: peak-EWMA of response time "
        "(slow servers get fewer requests); hash: consistent hashing on hash_key.",
    )
    hash_key: str | None = Field(
        None,
        description="With balance: hash, what requests are hashed on: remote_addr (the client "
        "address), uri, header:NAME or cookie:NAME. Requests without the key are spread "
        "randomly.",
    )
    sticky: StickyConfig | None = Field(
        None, description="Cookie-based session persistence (seed 4.3); null disables it."
    )
    all_down: Literal["fail_fast", "try_all"] = Field(
        "fail_fast",
        description="When no server is available: fail_fast answers 503 with Retry-After at "
        "once; try_all tries the servers anyway, as nginx does.",
    )
    fail_on: list[FailureKind] = Field(
        default_factory=_default_fail_on,
        description="Which failures count toward max_fails (nginx proxy_next_upstream "
        "names): connection errors, timeouts, and/or these upstream statuses.",
    )
    keepalive: StrictInt = Field(
        64, ge=0, description="Idle keep-alive connections kept per server (0 = none)."
    )
    keepalive_timeout: Duration = Field(
        60.0, description="How long an idle upstream connection is kept before it is closed."
    )
    keepalive_requests: StrictInt = Field(
        1000, ge=1, description="Requests sent over one upstream connection before it is retired."
    )
    servers: list[ServerConfig] = Field(min_length=1, description="The servers of the group.")
    health_check: HealthCheckConfig | None = Field(
        None, description="Active health checks; unset: passive checks only."
    )
    resolve_interval: Duration = Field(
        30.0,
        ge=1.0,
        description="How often server host names are resolved again, so a server that moved "
        "gets traffic at its new address. A name that never resolved keeps its server down; "
        "one that stops resolving keeps its last address.",
    )


class RateLimitRef(_Model):
    """A route's use of a rate_limits zone (nginx limit_req)."""

    zone: str = Field(description="Name of an entry under rate_limits.")
    burst: StrictInt = Field(0, ge=0, description="Requests allowed above the rate, queued.")
    nodelay: StrictBool = Field(
        False, description="Pass burst requests at once instead of spacing them at the rate."
    )
    delay: StrictInt = Field(
        0, ge=0, description="With burst: this many excess requests pass at once (nginx delay=)."
    )
    status: StrictInt = Field(429, ge=400, le=599, description="Status for refused requests.")

    @model_validator(mode="after")
    def _check_delay(self) -> RateLimitRef:
        if self.nodelay and self.delay:
            # nginx takes one or the other too (limit_req ... nodelay | delay=N).
            raise ValueError("delay: excludes nodelay: true (use one)")
        return self


class ConnLimitRef(_Model):
    """A route's use of a conn_limits zone (nginx limit_conn)."""

    zone: str = Field(description="Name of an entry under conn_limits.")
    max: StrictInt = Field(ge=1, description="Requests in flight allowed per key.")
    status: StrictInt = Field(429, ge=400, le=599, description="Status for refused requests.")


class RouteConfig(_Model):
    """Sends requests whose path starts with ``path`` to ``upstream`` (longest prefix wins)."""

    path: str = Field(description="Path prefix, starting with '/'.")
    upstream: str = Field(description="Name of an entry under upstreams.")
    access: list[dict[Literal["allow", "deny"], str]] | None = Field(
        None,
        description="Ordered allow/deny rules ({allow: 127.0.0.1}, {deny: all}, CIDRs); the "
        "first match decides, and when none matches the request is refused with 403 "
        "(stricter than nginx).",
    )
    rate_limit: RateLimitRef | None = Field(None, description="Rate limiting for this route.")
    conn_limit: ConnLimitRef | None = Field(None, description="Concurrency limit for this route.")
    access_log: StrictBool = Field(
        True,
        description="false: requests on this route are not written to the access log (nginx "
        "access_log off; the seed's /health). They are still counted in the metrics.",
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"route path {value!r} must start with '/'")
        if any(c in value for c in "?# ") or not value.isprintable():
            raise ValueError(
                f"route path {value!r} must be a plain path (no query, fragment or spaces)"
            )
        return value


class AccessLogConfig(_Model):
    """Where and how each request is logged."""

    path: str = Field("stdout", description="stdout, stderr or a file path.")
    format: Literal["combined", "json", "off"] = Field(
        "combined",
        description="combined (nginx/Apache combined, followed by rid=, upstream=, rt=, urt= "
        "and tls= fields), json (one object per line, every field) or off.",
    )


class ErrorLogConfig(_Model):
    """The balancer's own log (start, stop, failures)."""

    path: str = Field("stderr", description="stdout, stderr or a file path.")
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level written."
    )


class SecurityHeadersConfig(_Model):
    """Security headers (nginx add_header ... always); upstream values are replaced."""

    strict_transport_security: str | None = Field(
        "max-age=31536000; includeSubDomains",
        description="HSTS, sent on TLS listeners only.",
    )
    x_frame_options: str | None = Field("DENY", description="X-Frame-Options.")
    x_content_type_options: str | None = Field("nosniff", description="X-Content-Type-Options.")
    x_xss_protection: str | None = Field(
        "0",
        description="X-XSS-Protection. Current guidance (OWASP, MDN) is 0: the old filter "
        "could itself be abused; the seed's '1; mode=block' is accepted.",
    )


TLS_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
_REFUSED_PROTOCOLS = {
    "SSLv2": "broken since 1996 (RFC 6176)",
    "SSLv3": "broken by POODLE (RFC 7568)",
    "TLSv1": "deprecated by RFC 8996 (2021): no AEAD ciphers, SHA-1/MD5 handshakes, "
    "refused by current browsers",
    "TLSv1.0": "deprecated by RFC 8996 (2021): no AEAD ciphers, SHA-1/MD5 handshakes, "
    "refused by current browsers",
    "TLSv1.1": "deprecated by RFC 8996 (2021): no AEAD ciphers, SHA-1/MD5 handshakes, "
    "refused by current browsers",
}

# Mozilla's "intermediate" TLS 1.2 suites (server-side TLS guidelines v5.7)
# without the DHE ones, which would need DH parameters Python does not load:
# forward secrecy and AEAD only, ECDSA before RSA, AES-GCM before ChaCha20.
DEFAULT_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


def _check_tls_protocol(value: object) -> object:
    if isinstance(value, str) and value in _REFUSED_PROTOCOLS:
        raise ValueError(
            f"{value} is refused: {_REFUSED_PROTOCOLS[value]}; use TLSv1.2 and TLSv1.3"
        )
    if value not in TLS_PROTOCOLS:
        raise ValueError(f"expected TLSv1.2 or TLSv1.3, got {value!r}")
    return value


def _off_means_zero(value: object) -> object:
    return 0 if value == "off" else value


TlsProtocol = Annotated[str, BeforeValidator(_check_tls_protocol)]
# A size, or off (0).  parse_size runs second (BeforeValidators run last first).
SessionCacheSize = Annotated[int, BeforeValidator(parse_size), BeforeValidator(_off_means_zero)]


class CertificateConfig(_Model):
    """A certificate and its private key (PEM files)."""

    cert: str = Field(
        description="PEM file: the server's certificate first, then its intermediates. "
        "Relative to the config file's directory."
    )
    key: str = Field(
        description="PEM file holding the certificate's private key, unencrypted (mode 0600). "
        "Relative to the config file's directory."
    )


class TlsConfig(_Model):
    """TLS termination on a listener (nginx ssl_*; see docs/tls.md)."""

    certificates: list[CertificateConfig] = Field(
        min_length=1,
        description="Chosen by the client's SNI among their DNS names (exact, then *.wildcard); "
        "the first serves clients without SNI or with an unknown name. An RSA and an ECDSA "
        "certificate for the same names are both served.",
    )
    protocols: list[TlsProtocol] = Field(
        ["TLSv1.2", "TLSv1.3"],
        min_length=1,
        description="TLSv1.2 and/or TLSv1.3; older versions are refused (RFC 8996).",
    )
    ciphers: str = Field(
        DEFAULT_TLS12_CIPHERS,
        description="TLS 1.2 cipher list (OpenSSL syntax); the default is Mozilla's "
        "intermediate list (ECDHE with AES-GCM or ChaCha20). TLS 1.3 suites are OpenSSL's "
        "(all AEAD).",
    )
    prefer_server_ciphers: StrictBool = Field(
        True, description="Choose the TLS 1.2 cipher by the order of ciphers, not the client's."
    )
    session_cache: SessionCacheSize = Field(
        10 * 1024 * 1024,
        description="Session cache per worker process, about 4000 sessions per megabyte as "
        "in nginx; off disables resumption (cache and tickets).",
    )
    session_timeout: Duration = Field(
        300.0,
        ge=1.0,
        le=7 * 86400.0,
        description="How long a session (and a TLS 1.3 ticket) can be resumed (nginx "
        "ssl_session_timeout; at most 7d, RFC 8446).",
    )
    handshake_timeout: Duration = Field(
        10.0, gt=0.0, description="A client that has not completed the handshake is closed."
    )

    @field_validator("protocols")
    @classmethod
    def _check_protocols(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a protocol is listed twice")
        return value

    @field_validator("ciphers")
    @classmethod
    def _check_ciphers(cls, value: str) -> str:
        import ssl

        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
        except ssl.SSLError:
            raise ValueError(f"no cipher known to OpenSSL matches {value!r}") from None
        return value


class ListenerConfig(_Model):
    """A set of listening sockets and the routes served on them."""

    name: str = Field(min_length=1, description="Name used in logs and metrics.")
    bind: list[BindAddress] = Field(
        min_length=1,
        description="Addresses to listen on: host:port, [v6]:port, or a bare port for all "
        "IPv4 addresses.",
    )
    server_name: str | None = Field(
        None,
        description="Name of this site; used as Host for HTTP/1.0 requests that carry none.",
    )
    routes: list[RouteConfig] = Field(
        default_factory=list,
        description="Path prefix -> upstream; at least one, except on redirect_https listeners.",
    )
    request_id: StrictBool = Field(
        True,
        description="Give every request an id: the client's X-Request-ID when it is a plain "
        "token (up to 128 letters, digits, '.', '_', '-'), otherwise a generated one; it goes "
        "to the upstream and back to the client as X-Request-ID (replacing one the upstream "
        "sent) and into the access log.",
    )
    access_log: AccessLogConfig | None = Field(
        None, description="This listener's access log, instead of the top-level one."
    )
    error_log: ErrorLogConfig | None = Field(
        None,
        description="This listener's error log (its clients' and upstreams' errors), instead "
        "of the top-level one; start, stop and reload messages stay in the top-level log.",
    )
    proxy_protocol: StrictBool = Field(
        False,
        description="Every connection starts with a PROXY protocol v1/v2 header (behind an "
        "L4 balancer); its source address becomes the client address when the peer is in "
        "trusted_proxies.",
    )
    security_headers: SecurityHeadersConfig | None = Field(
        default_factory=lambda: SecurityHeadersConfig(),  # type: ignore[call-arg]
        description="Headers added to every response, errors and redirects included (null "
        "adds none).",
    )
    tls: TlsConfig | None = Field(
        None, description="Terminate TLS on this listener (https); null: plain HTTP."
    )
    http2: StrictBool = Field(
        False,
        description="Offer HTTP/2 by ALPN (needs tls): ALPN offers h2 and http/1.1, and "
        "HTTP/2 requests are proxied to the HTTP/1.1 upstreams.",
    )
    http2_max_concurrent_streams: StrictInt = Field(
        128,
        ge=1,
        le=10000,
        description="HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: requests one HTTP/2 connection "
        "may have in progress (nginx http2_max_concurrent_streams); more are refused with "
        "REFUSED_STREAM.",
    )
    redirect_https: StrictBool = Field(
        False,
        description="Answer every request with 301 to https://server_name + the request's "
        "path and query (never the client's Host); needs server_name, takes no routes.",
    )

    @model_validator(mode="after")
    def _check_kind(self) -> ListenerConfig:
        if self.redirect_https:
            if self.tls is not None:
                raise ValueError("redirect_https: for plain HTTP listeners, not with tls")
            if not self.server_name:
                raise ValueError(
                    "redirect_https: needs server_name: the redirect goes to "
                    "https://<server_name>, never to the Host a client sends (open redirect)"
                )
            if self.routes:
                raise ValueError("a redirect_https listener takes no routes: it only redirects")
        elif not self.routes:
            raise ValueError("routes: at least one route is needed (or redirect_https: true)")
        if self.http2 and self.tls is None:
            raise ValueError("http2: needs tls: HTTP/2 is offered by ALPN in the TLS handshake")
        return self


class TimeoutsConfig(_Model):
    """Timeouts, nginx names and defaults."""

    connect: Duration = Field(60.0, description="Connecting to an upstream server.")
    send: Duration = Field(
        60.0, description="Between two successful writes of the request to an upstream server."
    )
    read: Duration = Field(
        60.0, description="Between two successful reads of the response from an upstream server."
    )
    client_header: Duration = Field(
        60.0, description="Receiving a whole request header section from a client."
    )
    client_body: Duration = Field(
        60.0, description="Between two successful reads of a request body from a client."
    )
    keepalive: Duration = Field(
        65.0, description="Idle time before a client keep-alive connection is closed."
    )
    client_send: Duration = Field(
        60.0,
        description="Between two successful writes of the response to a client (nginx "
        "send_timeout): a client that stops reading is disconnected.",
    )
    tunnel_idle: Duration = Field(
        3600.0,
        description="A WebSocket connection with no byte in either direction for this long "
        "is closed (nginx uses proxy_read_timeout, 60s, which cuts quiet WebSockets).",
    )


class LimitsConfig(_Model):
    """Limits on what a client controls."""

    max_header_bytes: Size = Field(
        16 * 1024,
        ge=1024,
        description="Request line plus header section; larger gets 431. nginx allows 4x8k "
        "per line, Node 16k, Tomcat 8k: 16k fits real browsers with room for big cookies.",
    )
    max_headers: StrictInt = Field(100, ge=1, description="Number of header fields; more gets 431.")
    max_body: Size = Field(
        100 * 1024 * 1024, ge=0, description="Request body size; larger gets 413 (0 = no limit)."
    )


# -- high availability (keepalived) ----------------------------------------

# The seed's example VRRP password; it is published, so it protects nothing.
PLACEHOLDER_VRRP_SECRETS = frozenset({"phoenix123", "phoenix1"})

# Keys people write when they try to put the VRRP secret into the YAML.
_INLINE_SECRET_KEYS = ("auth_pass", "pass", "password", "secret")

# Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL).
_IFNAME = re.compile(r"[^\s/:]{1,15}")


class HaAuthConfig(_Model):
    """VRRP authentication (VRRPv2 only); the secret itself is never written in this file."""

    # VRRPv3 (RFC 5798) has no authentication: isolate the VRRP network instead.
    # docs/ha.md explains the trade-off between none, pass and ah.

    type: Literal["none", "pass", "ah"] = Field(
        "none",
        description="none (VRRPv3, or a VRRP network nobody else can reach), pass (VRRPv2 "
        "plain-text password, visible to anyone on the segment) or ah (VRRPv2 IPsec AH "
        "HMAC; keepalived's AH is non-standard, use only between keepalived nodes).",
    )
    secret_file: str | None = Field(
        None,
        description="File whose content (one line) is the 8-character secret; must not be "
        "group or world readable (chmod 600). Relative to the config file's directory. "
        "Left out of config backups unless asked.",
        json_schema_extra={"backup": "secret"},
    )
    secret_env: str | None = Field(
        None,
        description="Name of an environment variable holding the 8-character secret, read "
        "by phoenix-lb ha keepalived.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in _INLINE_SECRET_KEYS:
                if key in data:
                    raise ValueError(
                        f"{key}: the VRRP secret is never read from the config file; put it "
                        "in a file readable only by root (secret_file) or in an environment "
                        "variable (secret_env)"
                    )
        return data

    @field_validator("secret_env")
    @classmethod
    def _check_env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _check_source(self) -> HaAuthConfig:
        sources = [s for s in (self.secret_file, self.secret_env) if s is not None]
        if self.type == "none" and sources:
            raise ValueError("type none takes no secret_file or secret_env")
        if self.type != "none" and len(sources) != 1:
            raise ValueError(f"type {self.type} needs exactly one of secret_file or secret_env")
        return self


class HaConfig(_Model):
    """This node's half of a keepalived VRRP pair (`phoenix-lb ha keepalived`, docs/ha.md)."""

    # Both nodes share virtual_router_id, virtual_ips and vrrp_version and differ
    # in priority (and in peers and unicast_src_ip).

    interface: str = Field(description="Interface VRRP runs on and the virtual IPs are added to.")
    virtual_router_id: StrictInt = Field(
        ge=1, le=255, description="VRRP router id, the same on both nodes, unique on the network."
    )
    priority: StrictInt = Field(
        100,
        ge=1,
        le=254,
        description="Higher wins the election; give the primary about 50 more than the "
        "secondary (255, address owner, is left to routers).",
    )
    state: Literal["MASTER", "BACKUP"] = Field(
        "BACKUP",
        description="Initial state only; priority decides who becomes master. MASTER skips "
        "the 3-advert wait at start but rules out preempt: false and preempt_delay.",
    )
    peers: list[str] = Field(
        [],
        description="Unicast VRRP: the other nodes' addresses. Empty: multicast to "
        "224.0.0.18 (IPv4) / ff02::12 (IPv6).",
    )
    unicast_src_ip: str | None = Field(
        None, description="Source address of unicast adverts (default: the interface's)."
    )
    virtual_ips: list[str] = Field(
        min_length=1,
        description="Virtual IPs with prefix length (192.168.1.10/24), all of one family.",
    )
    vrrp_version: Literal[2, 3] = Field(
        3, description="3 (RFC 5798, IPv4 and IPv6, no authentication) or 2 (RFC 3768)."
    )
    advert_interval: Duration = Field(
        1.0,
        description="Between adverts; a backup takes over after 3 missed ones. VRRPv2: "
        "whole seconds; VRRPv3: 10ms steps up to 40.95s.",
    )
    preempt: StrictBool = Field(
        True,
        description="A higher-priority node that comes back takes the virtual IPs back. "
        "false (nopreempt) needs state: BACKUP.",
    )
    preempt_delay: Duration = Field(
        0.0,
        le=1000.0,
        description="How long a returning higher-priority node waits before taking over "
        "(needs state: BACKUP).",
    )
    auth: HaAuthConfig = Field(default_factory=HaAuthConfig)  # type: ignore[arg-type]
    health_url: str | None = Field(
        None,
        description="URL the VRRP check GETs; 200 keeps this node eligible. Default: the "
        "admin listener's /health (http://127.0.0.1:9000/health).",
    )
    check_interval: Duration = Field(
        1.0, ge=1.0, description="Between two health checks (keepalived: whole seconds)."
    )
    check_timeout: Duration = Field(
        1.0, gt=0.0, description="How long one health check may take before it counts as failed."
    )
    check_fall: StrictInt = Field(
        2, ge=1, description="Failed checks in a row that make this node give up the virtual IPs."
    )
    check_rise: StrictInt = Field(
        2, ge=1, description="Passed checks in a row that make this node eligible again."
    )
    notify: str | None = Field(
        None,
        description="Script keepalived runs on every state change, with its four arguments "
        "(INSTANCE, name, MASTER/BACKUP/FAULT/STOP, priority).",
    )
    state_file: str | None = Field(
        None,
        description="File where keepalived records this node's VRRP state, read by "
        "phoenix-lb ha status.",
        json_schema_extra={"backup": "output"},
    )

    @field_validator("interface")
    @classmethod
    def _check_interface(cls, value: str) -> str:
        if not _IFNAME.fullmatch(value) or value in (".", ".."):
            raise ValueError(f"{value!r} is not a network interface name (at most 15 characters)")
        return value

    @field_validator("virtual_ips")
    @classmethod
    def _check_vips(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        families: set[int] = set()
        for text in value:
            if "/" not in text:
                raise ValueError(
                    f"virtual IP {text!r}: write the prefix length, e.g. {text}/24 "
                    "(keepalived would add it as a /32 host address)"
                )
            try:
                vip = ipaddress.ip_interface(text)
            except ValueError:
                raise ValueError(f"virtual IP {text!r} is not an address/prefix") from None
            if str(vip.ip) in seen:
                raise ValueError(f"virtual IP {vip.ip} is listed twice")
            seen.add(str(vip.ip))
            families.add(vip.version)
        if len(families) > 1:
            raise ValueError("virtual IPs must all be IPv4 or all IPv6 (one VRRP instance each)")
        return value

    @field_validator("peers")
    @classmethod
    def _check_peers(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for text in value:
            try:
                peer = ipaddress.ip_address(text)
            except ValueError:
                raise ValueError(f"peer {text!r} is not an IP address") from None
            if str(peer) in seen:
                raise ValueError(f"peer {peer} is listed twice")
            seen.add(str(peer))
        return value

    @field_validator("unicast_src_ip")
    @classmethod
    def _check_src(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address") from None
        return value

    @field_validator("notify", "state_file")
    @classmethod
    def _check_absolute(cls, value: str | None) -> str | None:
        # keepalived runs these from / as root; a relative path would not be found.
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r}: write an absolute path (keepalived runs from /)")
        return value

    @field_validator("health_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"{value!r}: expected an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> HaConfig:
        # Each reason says what keepalived would do otherwise: it accepts most of
        # these silently and behaves differently from what the file says.
        vip_version = ipaddress.ip_interface(self.virtual_ips[0]).version
        if vip_version == 6 and self.vrrp_version == 2:
            raise ValueError("IPv6 virtual IPs need vrrp_version: 3 (VRRPv2 is IPv4 only)")
        addresses = [*self.peers, *([self.unicast_src_ip] if self.unicast_src_ip else [])]
        for text in addresses:
            if ipaddress.ip_address(text).version != vip_version:
                raise ValueError(
                    f"{text} is IPv{6 if vip_version == 4 else 4}, the virtual IPs are "
                    f"IPv{vip_version}: VRRP adverts and virtual IPs share one family"
                )
        if self.unicast_src_ip is not None and not self.peers:
            raise ValueError("unicast_src_ip: needs peers (without peers VRRP uses multicast)")
        if self.unicast_src_ip is not None and self.unicast_src_ip in self.peers:
            raise ValueError(f"unicast_src_ip {self.unicast_src_ip} is also listed in peers")
        if self.vrrp_version == 2:
            if self.advert_interval != int(self.advert_interval) or not (
                1 <= self.advert_interval <= 255
            ):
                raise ValueError("advert_interval: VRRPv2 takes whole seconds from 1s to 255s")
        elif not (0.01 <= self.advert_interval <= 40.95) or (
            abs(self.advert_interval * 100 - round(self.advert_interval * 100)) > 1e-6
        ):
            raise ValueError("advert_interval: VRRPv3 takes 10ms steps from 10ms to 40.95s")
        if self.vrrp_version == 3 and self.auth.type != "none":
            raise ValueError(
                f"auth type {self.auth.type}: VRRPv3 has no authentication (RFC 5798 removed "
                "it); use type none and keep the VRRP network isolated, or vrrp_version: 2"
            )
        if not self.preempt and self.state == "MASTER":
            raise ValueError(
                "preempt: false needs state: BACKUP: keepalived ignores nopreempt when the "
                "initial state is MASTER; set state: BACKUP on both nodes and let priority "
                "pick the first master"
            )
        if self.preempt_delay and self.state == "MASTER":
            raise ValueError(
                "preempt_delay: needs state: BACKUP: keepalived ignores it when the initial "
                "state is MASTER"
            )
        if self.preempt_delay and not self.preempt:
            raise ValueError("preempt_delay has no effect with preempt: false")
        if self.check_interval != int(self.check_interval):
            raise ValueError("check_interval: keepalived runs checks every whole number of seconds")
        return self


class AdminConfig(_Model):
    """The admin listener: /metrics, /nginx_status, /health, /status and the /api control API."""

    bind: str = Field(
        "127.0.0.1:9000",
        description="Address of the admin listener; loopback by default. A non-loopback "
        "address requires auth_token_file.",
    )
    auth_token_file: str | None = Field(
        None,
        description="File holding a bearer token required on every admin request but "
        "GET /health (relative to the config file's directory; not group or world readable).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the admin listener answers to besides its own (localhost and "
        "the bind host, on the listener's port; IP addresses are always accepted); any other "
        "name in Host gets 421 (DNS rebinding). host:port, or host alone for any port: names "
        "it is reached by through DNS or a reverse proxy, e.g. lb1.example.net:9000. Empty by "
        "default.",
    )

    @field_validator("bind")
    @classmethod
    def _check_bind(cls, value: str) -> str:
        split_host_port(value, default_host="127.0.0.1", allow_port_zero=True)
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: list[str]) -> list[str]:
        from phoenix_lb.admin.origin import parse_allowed_host

        for entry in value:
            parse_allowed_host(entry)
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> AdminConfig:
        host, _ = split_host_port(self.bind, default_host="127.0.0.1", allow_port_zero=True)
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        if not loopback and self.auth_token_file is None:
            raise ValueError(
                f"bind {self.bind} is not loopback: set auth_token_file so that the control "
                "API is not open to the network"
            )
        return self


class RateLimitZoneConfig(_Model):
    """A rate limiting zone (nginx limit_req_zone)."""

    key: Literal["remote_addr"] = Field(
        "remote_addr", description="What is limited: the client address (after real IP)."
    )
    rate: str = Field(description="Requests per second or minute, e.g. 10r/s or 30r/m.")
    zone_size: Size = Field(
        10 * 1024 * 1024,
        ge=32 * 1024,
        description="Memory for the zone's states (nginx sizes: 10m holds "
        "about 80,000 addresses; at least 32k); the least recently used idle ones are evicted.",
    )

    @field_validator("rate")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        from phoenix_lb.limits import parse_rate

        parse_rate(value)
        return value


class ConnLimitZoneConfig(_Model):
    """A concurrency limiting zone (nginx limit_conn_zone)."""

    key: Literal["remote_addr"] = Field("remote_addr", description="What is counted.")
    zone_size: Size = Field(
        10 * 1024 * 1024, ge=32 * 1024, description="Memory for the zone's counters (at least 32k)."
    )


class PhoenixConfig(_Model):
    """The whole configuration file."""

    workers: int | Literal["auto"] = Field(
        1, description="Worker processes: a number, or auto for one per CPU core."
    )
    listeners: list[ListenerConfig] = Field(min_length=1, description="Listening sockets.")
    upstreams: dict[str, UpstreamConfig] = Field(min_length=1, description="Named upstream groups.")
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)  # type: ignore[arg-type]
    limits: LimitsConfig = Field(default_factory=LimitsConfig)  # type: ignore[arg-type]
    access_log: AccessLogConfig = Field(default_factory=AccessLogConfig)  # type: ignore[arg-type]
    error_log: ErrorLogConfig = Field(default_factory=ErrorLogConfig)  # type: ignore[arg-type]
    shutdown_timeout: Duration = Field(
        30.0,
        description="On SIGTERM/SIGINT, how long in-flight requests may take to finish.",
    )
    ha: HaConfig | None = Field(
        None, description="High availability with keepalived (VRRP); see docs/ha.md."
    )
    rate_limits: dict[str, RateLimitZoneConfig] = Field(
        default_factory=dict, description="Named rate limiting zones (seed 5.2)."
    )
    conn_limits: dict[str, ConnLimitZoneConfig] = Field(
        default_factory=dict, description="Named concurrency limiting zones (seed 5.2)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Peers (CIDRs) whose real_ip_header (or PROXY protocol header) is "
        "believed: limits, access rules, X-Real-IP and logs then use the client address "
        "they report (nginx realip).",
    )
    real_ip_header: str = Field(
        "X-Forwarded-For",
        description="Where trusted peers put the client address: X-Forwarded-For, X-Real-IP "
        "or another header, or proxy_protocol.",
    )
    real_ip_recursive: StrictBool = Field(
        True,
        description="Walk X-Forwarded-For from the right past every trusted address (nginx "
        "real_ip_recursive on).",
    )
    state_dir: str = Field(
        "/var/lib/phoenix-lb",
        description="Where generated state (the sticky cookie key) is kept across restarts.",
    )
    admin: AdminConfig | None = Field(
        default_factory=AdminConfig,  # type: ignore[arg-type]
        description="The admin listener (null disables it).",
    )
    worker_connections: StrictInt = Field(
        16384,
        ge=1,
        description="Concurrent client connections per worker (nginx worker_connections); "
        "further connections wait in the listen backlog.",
    )
    worker_rlimit_nofile: StrictInt = Field(
        65535, ge=64, description="Open files limit to raise to at start (RLIMIT_NOFILE)."
    )
    listen_backlog: StrictInt = Field(
        65535,
        ge=1,
        description="Listen queue length asked of the kernel (capped by net.core.somaxconn).",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, value: object) -> object:
        # Checked before the union so the user sees one reason, not one per member.
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            if isinstance(value, int) and value < 1:
                raise ValueError("workers must be at least 1 (or auto)")
            return value
        raise ValueError("expected a whole number of worker processes, or auto")


def resolve_relative_paths(config: PhoenixConfig, directory: str) -> PhoenixConfig:
    """``config`` with relative certificate and key paths made absolute under ``directory``.

    Run by ``load_config`` with the config file's directory: workers and
    reloads get the model, not the file, so the paths must not depend on
    the current directory.  (``load_config_text`` leaves paths as written,
    so a semantic diff against a backup shows no spurious changes.)
    """
    import os

    def absolute(path: str) -> str:
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(directory, path))

    listeners = []
    changed = False
    for listener in config.listeners:
        tls = listener.tls
        if tls is not None:
            certificates = [
                entry.model_copy(update={"cert": absolute(entry.cert), "key": absolute(entry.key)})
                for entry in tls.certificates
            ]
            if certificates != tls.certificates:
                changed = True
                tls = tls.model_copy(update={"certificates": certificates})
                listener = listener.model_copy(update={"tls": tls})
        listeners.append(listener)
    return config.model_copy(update={"listeners": listeners}) if changed else config
