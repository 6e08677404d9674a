"""Which node holds the virtual IPs: the addresses on the interface, and keepalived's word.

The addresses are the ground truth (they are what clients reach); the state
keepalived recorded through the notify hook (``ha.state_file``) adds
why, e.g. FAULT when the health check failed.  :func:`decide` is pure;
:func:`interface_addresses` and :func:`read_state_file` do the I/O.

Roles and ``phoenix-lb ha status`` exit codes:

=========  ====  ==========================================================
MASTER     0     every virtual IP is on the interface
BACKUP     3     none is (keepalived's state, e.g. FAULT, is shown too)
unknown    4     some are, the interface is missing, ``ip`` failed, or the
                 addresses contradict keepalived's recorded state
=========  ====  ==========================================================

(1 is left for an invalid config, as with every phoenix-lb command.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from phoenix_lb.ha.hooks import KEEPALIVED_STATES

__all__ = [
    "EXIT_CODES",
    "KEEPALIVED_STATES",
    "HaStatus",
    "decide",
    "interface_addresses",
    "parse_ip_addr",
    "read_state_file",
]

Role = Literal["MASTER", "BACKUP", "unknown"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

EXIT_CODES: dict[Role, int] = {"MASTER": 0, "BACKUP": 3, "unknown": 4}


@dataclass(frozen=True, slots=True)
class HaStatus:
    """The verdict for this node."""

    role: Role
    held: tuple[str, ...]
    missing: tuple[str, ...]
    keepalived_state: str | None
    reason: str

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.role]


def parse_ip_addr(output: str) -> list[Address]:
    """Addresses in ``ip -o addr show`` output (``N: IFACE inet A/P ...`` lines)."""
    found: list[Address] = []
    for line in output.splitlines():
        words = line.split()
        for index, word in enumerate(words[:-1]):
            if word in ("inet", "inet6"):
                with contextlib.suppress(ValueError):
                    found.append(ipaddress.ip_interface(words[index + 1]).ip)
                break
    return found


def decide(
    virtual_ips: Sequence[str],
    present: Sequence[Address] | None,
    keepalived_state: str | None = None,
    problem: str | None = None,
) -> HaStatus:
    """The role of this node.

    ``present`` are the addresses on the VRRP interface, or None when they
    could not be read (``problem`` says why); ``keepalived_state`` is the
    last state recorded in the state file, if any.
    """
    vips = [str(ipaddress.ip_interface(vip).ip) for vip in virtual_ips]
    if present is None:
        return HaStatus("unknown", (), tuple(vips), keepalived_state, problem or "no addresses")
    here = {str(address) for address in present}
    held = tuple(vip for vip in vips if vip in here)
    missing = tuple(vip for vip in vips if vip not in here)
    if held and missing:
        reason = f"only some virtual IPs are here (missing {', '.join(missing)})"
        return HaStatus("unknown", held, missing, keepalived_state, reason)
    if not missing:
        if keepalived_state not in (None, "MASTER"):
            reason = f"the virtual IPs are here but keepalived last reported {keepalived_state}"
            return HaStatus("unknown", held, missing, keepalived_state, reason)
        return HaStatus("MASTER", held, missing, keepalived_state, "this node holds the VIPs")
    if keepalived_state == "MASTER":
        reason = "keepalived last reported MASTER but the virtual IPs are not here"
        return HaStatus("unknown", held, missing, keepalived_state, reason)
    return HaStatus("BACKUP", held, missing, keepalived_state, "another node holds the VIPs")


def interface_addresses(
    interface: str, ip_command: Sequence[str] = ("ip",)
) -> tuple[list[Address] | None, str | None]:
    """Addresses on ``interface`` from ``ip -o addr show dev IFACE``, or ``(None, why)``."""
    try:
        result = subprocess.run(
            [*ip_command, "-o", "addr", "show", "dev", interface],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot run ip: {exc}"
    if result.returncode != 0:
        message = result.stderr.strip() or f"exit status {result.returncode}"
        return None, f"ip -o addr show dev {interface}: {message}"
    return parse_ip_addr(result.stdout), None


def read_state_file(path: str) -> tuple[str | None, str | None]:
    """``(state, None)`` from a state file, ``(None, None)`` if absent, ``(None, why)``."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(256)
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {path}: {exc}"
    words = text.split()
    if not words or words[0] not in KEEPALIVED_STATES:
        return None, f"{path}: unexpected content {text.strip()[:40]!r}"
    return words[0], None
