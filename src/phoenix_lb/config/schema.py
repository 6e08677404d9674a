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
    StrictInt,
    field_validator,
)
from pydantic.fields import FieldInfo

from phoenix_lb.config.units import parse_duration, parse_size

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

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        split_host_port(value)
        return value


class UpstreamConfig(_Model):
    """A named group of servers that routes send requests to."""

    balance: Literal["least_conn", "round_robin"] = Field(
        "least_conn",
        description="least_conn: fewest in-flight requests relative to weight, ties by smooth "
        "weighted round robin; round_robin: smooth weighted round robin (nginx).",
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


class RouteConfig(_Model):
    """Sends requests whose path starts with ``path`` to ``upstream`` (longest prefix wins)."""

    path: str = Field(description="Path prefix, starting with '/'.")
    upstream: str = Field(description="Name of an entry under upstreams.")

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
    routes: list[RouteConfig] = Field(min_length=1, description="Path prefix -> upstream.")


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


class AccessLogConfig(_Model):
    """Where and how each request is logged."""

    path: str = Field("stdout", description="stdout, stderr or a file path.")
    format: Literal["combined", "json", "off"] = Field(
        "combined", description="combined (nginx/Apache), json (one object per line) or off."
    )


class ErrorLogConfig(_Model):
    """The balancer's own log (start, stop, failures)."""

    path: str = Field("stderr", description="stdout, stderr or a file path.")
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level written."
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

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, value: object) -> object:
        # Checked before the union so the user sees one reason, not one per member.
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            if isinstance(value, int) and value < 1:
                raise ValueError("workers must be at least 1 (or auto)")
            return value
        raise ValueError("expected a whole number of worker processes, or auto")
