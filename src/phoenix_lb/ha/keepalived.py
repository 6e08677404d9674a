"""Render keepalived.conf for this node from the ``ha:`` section; pure, no I/O.

The output is a complete keepalived.conf with one ``vrrp_script`` and one
``vrrp_instance``:

* ``global_defs``: scripts run as root (``script_user root``) and keepalived
  refuses any script whose path a non-root user could write
  (``enable_script_security``).
* ``vrrp_script chk_phoenix``: GETs this node's admin ``/health``.  Weight 0,
  so ``fall`` failures in a row put the instance in FAULT: it sends a
  priority-0 advert and drops the virtual IPs, and the peer takes over at
  once instead of waiting for three missed adverts.  ``rise`` successes make
  it eligible again.
* ``vrrp_instance``: state, interface, router id, priority, version, advert
  interval, preemption, unicast peers (or multicast when there are none),
  authentication (VRRPv2 only), the virtual IPs on the interface, and notify
  hooks.

Secrets never come from here: :func:`render` takes the already vetted secret
(see :mod:`phoenix_lb.ha.secret`).  Values the schema has validated go in as
they are; words that keepalived would split or read as a comment are refused.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from phoenix_lb.config.schema import HaConfig, PhoenixConfig, split_host_port
from phoenix_lb.ha import SCRIPT_NAME, instance_name

__all__ = [
    "RenderError",
    "ScriptCommands",
    "check_command",
    "default_health_url",
    "health_url",
    "notify_command",
    "render",
]

# keepalived splits a script string on whitespace and treats '#' and '!' as the
# start of a comment; quotes would end the string.
_UNSAFE_WORD = re.compile(r"[\s\"'#!\\{}]")


class RenderError(ValueError):
    """The config cannot be rendered as a keepalived.conf that does what it says."""


@dataclass(frozen=True, slots=True)
class ScriptCommands:
    """The programs keepalived runs, as absolute paths.

    ``hooks`` is :mod:`phoenix_lb.ha.hooks`'s file, run as a script by
    ``python`` (any Python 3.11+: it needs only the standard library, because
    keepalived resolves a virtual environment's ``bin/python`` symlink to the
    base interpreter, which cannot import phoenix_lb).  ``-I`` (isolated mode)
    keeps environment variables and the working directory out of what root
    runs.  ``curl``, when set, does the health check instead.
    """

    python: str
    hooks: str
    curl: str | None = None


def default_health_url(config: PhoenixConfig) -> str:
    """``http://HOST:PORT/health`` of the admin listener (``admin.bind``).

    A wildcard bind (``0.0.0.0``, ``::``) is reached through loopback.  Raises
    :class:`RenderError` when the admin listener is disabled or has no fixed port.
    """
    admin = config.admin
    if admin is None:
        raise RenderError(
            "admin: null disables the admin listener and its /health, which the VRRP "
            "check uses; enable it or set ha.health_url"
        )
    host, port = split_host_port(admin.bind, default_host="127.0.0.1", allow_port_zero=True)
    if port == 0:
        raise RenderError(
            f"admin.bind {admin.bind} has no fixed port for the VRRP check; set ha.health_url"
        )
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def health_url(config: PhoenixConfig) -> str:
    """The URL the VRRP check GETs: ``ha.health_url`` or the admin default."""
    ha = config.ha
    if ha is not None and ha.health_url is not None:
        return ha.health_url
    return default_health_url(config)


def check_command(commands: ScriptCommands, url: str, timeout: float) -> list[str]:
    """argv of the health check keepalived runs every ``check_interval``."""
    if commands.curl is not None:
        return [commands.curl, "-fsS", "-o", "/dev/null", "--max-time", f"{timeout:g}", url]
    hooks = [commands.python, "-I", commands.hooks]
    return [*hooks, "check", "--url", url, "--timeout", f"{timeout:g}"]


def notify_command(commands: ScriptCommands, state_file: str, state: str) -> list[str]:
    """argv keepalived runs on a transition to ``state`` to record it in ``state_file``."""
    return [commands.python, "-I", commands.hooks, "notify", "--state-file", state_file, state]


def render(
    config: PhoenixConfig,
    *,
    commands: ScriptCommands,
    secret: str | None = None,
    source: str = "",
    version: str = "",
) -> str:
    """keepalived.conf text for this node.

    ``secret`` is the vetted VRRP secret (required for auth type pass/ah,
    ignored otherwise); ``source`` and ``version`` go into the header comment.
    Raises :class:`RenderError` when there is no ``ha:`` section or a value
    cannot be written safely.
    """
    ha = config.ha
    if ha is None:
        raise RenderError("the config has no ha: section (see docs/ha.md)")
    if ha.auth.type != "none" and secret is None:
        raise RenderError(f"auth type {ha.auth.type} needs a secret")
    url = health_url(config)
    out: list[str] = []
    emit = out.append
    origin = f" from {source}" if source else ""
    made_by = f"phoenix-lb {version}" if version else "phoenix-lb"
    emit(f"# keepalived.conf for this Phoenix LB node, rendered by {made_by}{origin}.")
    emit("# Change the ha: section and render again rather than editing this file.")
    emit("")
    emit("global_defs {")
    emit("    # Checks and notify scripts run as root; keepalived refuses to run any")
    emit("    # whose path a non-root user could modify.")
    emit("    script_user root")
    emit("    enable_script_security")
    emit(f"    vrrp_version {ha.vrrp_version}")
    emit("}")
    emit("")
    emit(f"# GET {url}: 200 keeps this node eligible for the virtual IPs.")
    emit(f"# Weight 0: after {ha.check_fall} failures in a row the instance goes to FAULT and")
    emit("# releases the virtual IPs, and the peer takes over at once;")
    emit(f"# {ha.check_rise} successes in a row make this node eligible again.")
    emit(f"vrrp_script {SCRIPT_NAME} {{")
    emit(f"    script {_script(check_command(commands, url, ha.check_timeout))}")
    emit(f"    interval {int(ha.check_interval)}")
    # keepalived's own deadline (whole seconds) leaves the checker time to
    # start and report its own timeout first.
    emit(f"    timeout {math.ceil(ha.check_timeout) + 1}")
    emit(f"    fall {ha.check_fall}")
    emit(f"    rise {ha.check_rise}")
    emit("    weight 0")
    emit("}")
    emit("")
    emit(f"vrrp_instance {instance_name(ha.virtual_router_id)} {{")
    emit(f"    state {ha.state}")
    emit(f"    interface {_word(ha.interface, 'interface')}")
    emit(f"    virtual_router_id {ha.virtual_router_id}")
    emit(f"    priority {ha.priority}")
    emit(f"    version {ha.vrrp_version}")
    emit(f"    advert_int {_number(ha.advert_interval)}")
    out.extend(_preemption(ha))
    out.extend(_unicast(ha))
    if ha.auth.type != "none":
        assert secret is not None
        if _UNSAFE_WORD.search(secret):
            raise RenderError("the VRRP secret contains characters keepalived.conf cannot hold")
        emit("    authentication {")
        emit(f"        auth_type {ha.auth.type.upper()}")
        emit(f"        auth_pass {secret}")
        emit("    }")
    emit("    virtual_ipaddress {")
    for vip in ha.virtual_ips:
        emit(f"        {ipaddress.ip_interface(vip).with_prefixlen} dev {ha.interface}")
    emit("    }")
    emit("    track_script {")
    emit(f"        {SCRIPT_NAME}")
    emit("    }")
    if ha.state_file is not None:
        for state in ("MASTER", "BACKUP", "FAULT", "STOP"):
            command = _script(notify_command(commands, ha.state_file, state))
            emit(f"    notify_{state.lower()} {command}")
    if ha.notify is not None:
        emit(f"    notify {_script([ha.notify])}")
    emit("}")
    return "\n".join(out) + "\n"


def _preemption(ha: HaConfig) -> list[str]:
    if not ha.preempt:
        # The schema has checked state is BACKUP: keepalived ignores nopreempt
        # on an instance that starts as MASTER.
        return [
            "    # A returning node with a higher priority does not take the virtual IPs back.",
            "    nopreempt",
        ]
    lines = ["    # A returning node with a higher priority takes the virtual IPs back."]
    if ha.preempt_delay:
        lines.append(f"    preempt_delay {_number(ha.preempt_delay)}")
    return lines


def _unicast(ha: HaConfig) -> list[str]:
    if not ha.peers:
        return ["    # No peers configured: adverts go to the VRRP multicast group."]
    lines = []
    if ha.unicast_src_ip is not None:
        lines.append(f"    unicast_src_ip {ha.unicast_src_ip}")
    lines.append("    unicast_peer {")
    lines.extend(f"        {ipaddress.ip_address(peer)}" for peer in ha.peers)
    lines.append("    }")
    lines.append("    # Ignore adverts whose source is not one of the peers above.")
    lines.append("    check_unicast_src")
    return lines


def _number(seconds: float) -> str:
    # keepalived reads decimals with up to 6 places; 10ms steps are validated.
    return f"{round(seconds, 6):g}"


def _word(value: str, what: str) -> str:
    if not value or _UNSAFE_WORD.search(value):
        raise RenderError(f"{what} {value!r} cannot be written into keepalived.conf")
    return value


def _script(argv: Sequence[str]) -> str:
    """A keepalived script string: words separated by spaces, in double quotes."""
    for word in argv:
        if not word or _UNSAFE_WORD.search(word):
            raise RenderError(
                f"{word!r} cannot be used in a keepalived script line (no spaces, quotes, "
                "'#', '!' or '\\')"
            )
    return '"' + " ".join(argv) + '"'
