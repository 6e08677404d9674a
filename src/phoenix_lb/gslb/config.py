"""The ``gslb:`` section: schema (pydantic) and a loader with ``FILE: key.path: reason`` errors.

A GSLB config file stands alone; its top level holds ``gslb:`` and, optionally,
``error_log:`` (the same setting as the balancer's)::

    gslb:
      listen: ["127.0.0.1:5353"]          # UDP and TCP
      zone: phoenix-orch.example.com
      ttl: 30s
      regions:
        region-1: {vips: [192.0.2.10], health: "http://127.0.0.1:9101/health",
                   subnets: [198.51.100.0/24]}
        region-2: {vips: [203.0.113.10], health: "http://127.0.0.1:9102/health"}
      policy: nearest_healthy
      all_down: return_all
      health_check: {interval: 3s, timeout: 1s, rise: 2, fall: 3}
      admin: {bind: "127.0.0.1:9153"}

The loader reuses the balancer's (:mod:`phoenix_lb.config.loader`): YAML 1.2
scalars, duplicate keys reported, every problem on its own line with its key
path and line number.  Cross-checks the schema cannot express (a subnet in two
regions, nameserver glue, a listen address used twice) run on the plain data
so they are reported alongside schema errors.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from phoenix_lb.config import loader as _loader
from phoenix_lb.config.loader import ConfigError, format_key_path
from phoenix_lb.config.schema import BindAddress, Duration, ErrorLogConfig, split_host_port, unit_of

__all__ = [
    "AdminConfig",
    "ConfigError",
    "GslbConfig",
    "GslbFile",
    "HealthCheckConfig",
    "RegionConfig",
    "load_gslb_config",
    "load_gslb_config_text",
    "normalize_dns_name",
]

KeyPath = tuple[str | int, ...]

DEFAULT_ADMIN_BIND = "127.0.0.1:9153"

# One DNS label (RFC 1035 2.3.1 / RFC 1123), lower case after normalizing; '_'
# is tolerated as in the balancer's host names.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# Region names end up in metric labels and log lines.
_REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def normalize_dns_name(value: str) -> str:
    """``Foo.Example.COM.`` -> ``foo.example.com``; ValueError if not a domain name."""
    text = value.lower()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError(f"{value!r} is not a domain name (expected e.g. gslb.example.com)")
    # 253 characters in text form is the 255-octet wire limit (RFC 1035 3.1).
    if len(text) > 253:
        raise ValueError(f"domain name {value!r} is longer than 253 characters")
    for label in text.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{value!r} is not a valid domain name (label {label!r}: letters, digits, "
                "'-' and '_', 1 to 63 characters, not starting or ending with '-')"
            )
    return text


def in_zone(name: str, zone: str) -> bool:
    """True if the (normalized) ``name`` is ``zone`` or below it.

    Label by label: in ``x\\.k8s.example.com`` (a label holding a dot) the
    text ends with ".k8s.example.com" but the labels are not under it.
    """
    if name == zone:
        return True
    if not name.endswith("." + zone):
        return False
    # The separating dot must not be escaped: count the backslashes before it.
    head = name[: -len(zone) - 1]
    escapes = len(head) - len(head.rstrip("\\"))
    return escapes % 2 == 0


def _check_ip(value: str) -> str:
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def _check_network(value: str) -> str:
    try:
        return ipaddress.ip_network(value, strict=True).compressed
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a network (expected e.g. 198.51.100.0/24 or 2001:db8::/32)"
        ) from None
    raise ValueError(f"{value!r} has host bits set (did you mean {loose.compressed}?)")


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r}: expected an http:// or https:// URL")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r}: invalid port") from None
    if not parts.hostname:
        raise ValueError(f"{value!r}: the URL has no host")
    if port == 0:
        raise ValueError(f"{value!r}: port 0 is not a port to connect to")
    if parts.fragment or any(c.isspace() for c in value):
        raise ValueError(f"{value!r}: expected a plain URL (no fragment or spaces)")
    return value


IPAddressText = Annotated[str, AfterValidator(_check_ip)]
NetworkText = Annotated[str, AfterValidator(_check_network)]
HealthURL = Annotated[str, AfterValidator(_check_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionConfig(_Model):
    """One region: its VIPs, the URL of its balancer's health, and the clients it serves."""

    vips: list[IPAddressText] = Field(
        min_length=1,
        description="Addresses answered for this region: IPv4 ones for A queries, IPv6 for AAAA.",
    )
    health: HealthURL = Field(
        description="URL of the region balancer's admin /health; a 2xx status is healthy."
    )
    subnets: list[NetworkText] = Field(
        default_factory=list,
        description="Client networks this region serves (nearest_healthy): matched against "
        "the EDNS Client Subnet, else the resolver's address; the longest prefix wins.",
    )
    weight: StrictInt = Field(
        1, ge=1, le=1000, description="Relative share of answers under policy weighted."
    )
    priority: Annotated[StrictInt, Field(ge=0)] | None = Field(
        None,
        description="Lower is preferred (failover order; nearest_healthy's fallback answers "
        "the healthy regions of the best priority). Unset: after every region that has one, "
        "in file order.",
    )

    @field_validator("vips")
    @classmethod
    def _unique_vips(cls, value: list[str]) -> list[str]:
        _reject_duplicates(value, "address")
        return value

    @field_validator("subnets")
    @classmethod
    def _unique_subnets(cls, value: list[str]) -> list[str]:
        _reject_duplicates(value, "subnet")
        return value


def _reject_duplicates(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for item in values:
        if item in seen:
            raise ValueError(f"duplicate {what} {item}")
        seen.add(item)


class HealthCheckConfig(_Model):
    """How each region's health URL is probed (rise/fall as in HAProxy and nginx)."""

    interval: Duration = Field(
        3.0, gt=0, description="Time between two checks of a region (less up to 10% jitter)."
    )
    timeout: Duration = Field(
        1.0, gt=0, description="A check that has no status line by then fails (timeout)."
    )
    rise: StrictInt = Field(
        2, ge=1, description="Consecutive successes that bring a down region back."
    )
    fall: StrictInt = Field(3, ge=1, description="Consecutive failures that take a region out.")

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> HealthCheckConfig:
        # A check still running when the next is due would stretch the interval,
        # and with it the documented failover bound (interval x fall + TTL).
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must not be longer than interval ({self.interval:g}s)"
            )
        return self


class AdminConfig(_Model):
    """The GSLB's own HTTP endpoint: Prometheus /metrics and a /health JSON."""

    bind: BindAddress = Field(DEFAULT_ADMIN_BIND, description="host:port of the admin endpoint.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the endpoint answers to besides localhost and its bind host "
        "(IP addresses are always accepted); other names get 421, as on the balancer's "
        "admin listener (DNS rebinding). host:port, or host alone for any port.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: list[str]) -> list[str]:
        from phoenix_lb.admin.origin import parse_allowed_host

        for entry in value:
            parse_allowed_host(entry)
        return value


class GslbConfig(_Model):
    """The ``gslb:`` section: an authoritative DNS server for one zone."""

    listen: list[BindAddress] = Field(
        min_length=1, description="Addresses to answer DNS on, over both UDP and TCP."
    )
    zone: str = Field(description="The zone served, e.g. phoenix-orch.example.com.")
    ttl: Duration = Field(
        30.0,
        ge=0,
        le=86400,
        description="TTL of every answer, whole seconds; failover takes up to "
        "interval x fall + ttl.",
    )
    nameservers: dict[str, list[IPAddressText]] = Field(
        default_factory=dict,
        description="Names answered for NS at the apex (those the parent delegates to). "
        "A name inside the zone needs its addresses (glue); one outside takes none. "
        "Default: ns1.<zone> with no address.",
    )
    regions: dict[str, RegionConfig] = Field(min_length=1, description="The regions, by name.")
    policy: Literal["nearest_healthy", "failover", "weighted"] = Field(
        "nearest_healthy",
        description="nearest_healthy: the client's region if healthy, else every healthy "
        "region of the best priority; failover: the first healthy region by priority, then "
        "file order; weighted: one healthy region at random by weight.",
    )
    all_down: Literal["return_all", "servfail"] = Field(
        "return_all",
        description="When no region is healthy: answer every region's VIPs, or SERVFAIL.",
    )
    health_check: HealthCheckConfig = Field(
        default_factory=HealthCheckConfig  # type: ignore[arg-type]
    )
    admin: AdminConfig = Field(default_factory=AdminConfig)  # type: ignore[arg-type]

    @field_validator("zone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        return normalize_dns_name(value)

    @field_validator("ttl")
    @classmethod
    def _whole_seconds(cls, value: float) -> float:
        if value != int(value):
            raise ValueError(f"ttl must be whole seconds (DNS TTLs have no fractions), got {value}")
        return value

    @field_validator("nameservers")
    @classmethod
    def _normalize_nameservers(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, addresses in value.items():
            key = normalize_dns_name(name)
            if key in out:
                raise ValueError(f"nameserver {name!r} listed twice")
            out[key] = addresses
        return out

    @property
    def ttl_seconds(self) -> int:
        return int(self.ttl)


class GslbFile(_Model):
    """A GSLB config file: the ``gslb:`` section and, optionally, where to log."""

    gslb: GslbConfig = Field(description="The DNS global load balancer.")
    error_log: ErrorLogConfig = Field(default_factory=ErrorLogConfig)  # type: ignore[arg-type]


# -- loading ---------------------------------------------------------------


def load_gslb_config(path: str | os.PathLike[str]) -> GslbFile:
    """Read, parse and validate the GSLB config file at ``path``.

    Raises :class:`ConfigError` listing every problem, one ``FILE: key.path:
    reason`` line each, like ``phoenix-lb check``.
    """
    filename = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as file:
            text = file.read()
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{filename}: cannot read: not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError([f"{filename}: cannot read: {exc.strerror or exc}"]) from None
    return load_gslb_config_text(text, filename)


def load_gslb_config_text(text: str, filename: str) -> GslbFile:
    """Parse and validate GSLB config ``text``; ``filename`` is used in error messages."""
    report = _loader._Report(filename)
    try:
        root = _loader._compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{filename}: {_loader._describe_yaml_error(exc, text)}"]) from None
    if root is None:
        raise ConfigError([f"{filename}: the file is empty; expected a mapping with gslb:"])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            [
                f"{filename}: expected a mapping with gslb: at the top level, "
                f"got {_loader._node_kind(root)} (line {_loader._line(root)})"
            ]
        )
    builder = _loader._Builder(report)
    data = builder.build(root, ())
    if builder.too_large:
        raise ConfigError(report.render())
    config: GslbFile | None = None
    try:
        config = GslbFile.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            path, reason = _explain(error)
            report.add(path, reason)
    _check_gslb(data, report)
    if report.issues or config is None:
        raise ConfigError(report.render())
    return config


# pydantic errors -> reasons.  The balancer's loader explains most kinds; the
# ones that need the schema (unknown keys, choices, units) are answered here
# against GslbFile, since the balancer's loader walks its own PhoenixConfig.

_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be more than"),
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
}


def _explain(error: ErrorDetails) -> tuple[KeyPath, str]:
    loc: KeyPath = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        if model is None:
            return loc, "unknown key"
        known = list(model.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            return loc, f"unknown key (did you mean {close[0]!r}?)"
        return loc, f"unknown key (expected one of: {', '.join(known)})"
    info = _field_at(loc)
    if kind == "literal_error" and info is not None:
        choices = [str(choice) for choice in _loader._literal_choices(info.annotation)]
        if choices:
            reason = f"expected {' or '.join(choices)}, got {_loader._describe(value)}"
            if isinstance(value, str):
                close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
                if close:
                    reason += f" (did you mean {close[0]!r}?)"
            return loc, reason
    if kind in _BOUNDS and info is not None:
        key, words = _BOUNDS[kind]
        unit = unit_of(info)
        ctx = error.get("ctx") or {}
        return loc, (
            f"{words} {_loader._render(ctx.get(key), unit)}, got {_loader._render(value, unit)}"
        )
    return _loader._explain(error)


def _walk(loc: KeyPath) -> object | None:
    current: object = GslbFile
    for part in loc:
        annotation = current.annotation if isinstance(current, FieldInfo) else current
        step = _loader._step(annotation, part)
        if step is None:
            return None
        current = step
    return current


def _field_at(loc: KeyPath) -> FieldInfo | None:
    found = _walk(loc)
    return found if isinstance(found, FieldInfo) else None


def _model_at(loc: KeyPath) -> type[BaseModel] | None:
    found = _walk(loc)
    annotation = found.annotation if isinstance(found, FieldInfo) else found
    for candidate in _loader._flatten(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


# -- cross-checks on the plain data (each skips values of the wrong shape) ---


def _check_gslb(data: object, report: _loader._Report) -> None:
    if not isinstance(data, dict):
        return
    section = data.get("gslb")
    if not isinstance(section, dict):
        return
    here: KeyPath = ("gslb",)
    _check_subnets(section.get("regions"), here, report)
    _check_nameservers(section.get("nameservers"), section.get("zone"), here, report)
    _check_binds(section, here, report)


def _check_subnets(regions: object, here: KeyPath, report: _loader._Report) -> None:
    if not isinstance(regions, dict):
        return
    owners: dict[str, KeyPath] = {}
    for name, region in regions.items():
        if isinstance(name, str) and not _REGION_NAME.fullmatch(name):
            report.add(
                (*here, "regions", name),
                "region names are letters, digits, '.', '-' and '_' (they become metric labels)",
            )
        if not isinstance(region, dict) or not isinstance(region.get("subnets"), list):
            continue
        for index, subnet in enumerate(region["subnets"]):
            try:
                key = ipaddress.ip_network(str(subnet), strict=True).compressed
            except ValueError:
                continue
            path: KeyPath = (*here, "regions", name, "subnets", index)
            first = owners.get(key)
            if first is not None and first[2] != name:
                report.add(
                    path,
                    f"subnet {key} also belongs to region {first[2]!r} "
                    f"(at {format_key_path(first)}); a client network picks one region",
                )
            else:
                owners.setdefault(key, path)


def _check_nameservers(
    nameservers: object, zone: object, here: KeyPath, report: _loader._Report
) -> None:
    if not isinstance(nameservers, dict) or not isinstance(zone, str):
        return
    try:
        apex = normalize_dns_name(zone)
    except ValueError:
        return
    for name, addresses in nameservers.items():
        if not isinstance(name, str):
            continue
        try:
            host = normalize_dns_name(name)
        except ValueError:
            continue
        path: KeyPath = (*here, "nameservers", name)
        count = len(addresses) if isinstance(addresses, list) else 0
        if host == apex:
            report.add(path, "the zone apex cannot be its own nameserver: it answers the VIPs")
        elif in_zone(host, apex) and count == 0:
            report.add(
                path,
                f"{host} is inside the zone {apex}, so its addresses are needed (glue), "
                "e.g. [192.0.2.53]",
            )
        elif not in_zone(host, apex) and count:
            report.add(
                path,
                f"{host} is outside the zone {apex}: its addresses belong in its own zone, "
                "write it with an empty list",
            )


def _check_binds(section: dict[object, object], here: KeyPath, report: _loader._Report) -> None:
    seen: dict[tuple[str, int], KeyPath] = {}
    listen = section.get("listen")
    if isinstance(listen, list):
        for index, address in enumerate(listen):
            key = _bind_key(address)
            if key is None or key[1] == 0:
                continue  # port 0: the kernel picks a different port each time
            path: KeyPath = (*here, "listen", index)
            if key in seen:
                report.add(path, f"listen address already given at {format_key_path(seen[key])}")
            else:
                seen[key] = path
    admin = section.get("admin")
    if isinstance(admin, dict):
        key = _bind_key(admin.get("bind"))
        if key is not None and key in seen:
            report.add(
                (*here, "admin", "bind"),
                f"admin bind is also a DNS listen address ({format_key_path(seen[key])}); "
                "both use TCP",
            )


def _bind_key(value: object) -> tuple[str, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    try:
        host, port = split_host_port(value, default_host="0.0.0.0", allow_port_zero=True)
    except ValueError:
        return None
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        host = host.lower().rstrip(".")
    return host, port
