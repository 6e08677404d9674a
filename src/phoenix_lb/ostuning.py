"""OS tuning checks (seed design 9.1): read kernel settings, compare, recommend; change nothing.

:data:`SETTINGS` declares each setting once: where it is read, the
recommended value, which direction is worse, and why it matters to a
balancer.  :func:`inspect` reads the values under a ``/proc`` root (a fake
tree in tests), :func:`evaluate` turns values into :class:`Finding` rows
(pure), and :func:`sysctl_conf` renders a sysctl.d drop-in.  ``phoenix-lb
doctor`` prints the rows; nothing here writes to ``/proc``.

The ``net.*`` settings belong to a network namespace: read them where the
balancer runs (a container reads its own namespace's values).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "NOFILE_HARD",
    "NOFILE_SOFT",
    "SETTINGS",
    "Finding",
    "Setting",
    "evaluate",
    "inspect",
    "read_nofile",
    "read_sysctl",
    "sysctl_conf",
]

Status = Literal["OK", "LOW", "HIGH", "UNKNOWN"]
# min: at least the recommendation; max: at most; range: "low high", at least as wide.
Direction = Literal["min", "max", "range"]

NOFILE_SOFT = "nofile (soft)"
NOFILE_HARD = "nofile (hard)"

# The seed's worker_rlimit_nofile, also what `phoenix-lb run` raises its soft limit to.
_NOFILE_WANTED = 65535

_NOFILE_COMMAND = (
    "LimitNOFILE=65535 in the systemd unit; or `ulimit -n 65535` (hard limit: "
    "/etc/security/limits.conf) in the shell that starts phoenix-lb"
)


@dataclass(frozen=True, slots=True)
class Setting:
    """One tunable: name, recommended value, which way is worse, and why."""

    name: str
    recommended: str
    direction: Direction
    why: str
    sysctl: bool = True


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "net.core.somaxconn",
        "65535",
        "min",
        "ceiling on every listen backlog: connections the balancer has not accepted yet "
        "beyond it are dropped during bursts (phoenix-lb asks for 65535, the kernel "
        "caps it here)",
    ),
    Setting(
        "net.ipv4.tcp_max_syn_backlog",
        "65535",
        "min",
        "half-open connections queued during a SYN burst before SYN cookies kick in",
    ),
    Setting(
        "net.ipv4.tcp_fin_timeout",
        "30",
        "max",
        "seconds an orphaned connection waits in FIN-WAIT-2; shorter frees sockets and "
        "ports sooner on a busy proxy (default 60)",
    ),
    Setting(
        "net.ipv4.tcp_keepalive_time",
        "300",
        "max",
        "idle seconds before TCP keep-alive probes; 5 minutes finds dead peers before "
        "typical firewall and NAT idle timeouts forget the flow (default 7200)",
    ),
    Setting(
        "net.ipv4.ip_local_port_range",
        "1024 65535",
        "range",
        "ephemeral ports for connections to upstream servers; each server address can "
        "hold at most this many at once (reserve listening ports with "
        "net.ipv4.ip_local_reserved_ports)",
    ),
    Setting(
        "fs.file-max",
        "65535",
        "min",
        "system-wide limit on open files; must exceed the per-process open-files limit",
    ),
    Setting(
        NOFILE_SOFT,
        str(_NOFILE_WANTED),
        "min",
        "open files per process (each client and upstream connection is one); "
        "phoenix-lb run raises its soft limit up to the hard limit itself",
        sysctl=False,
    ),
    Setting(
        NOFILE_HARD,
        str(_NOFILE_WANTED),
        "min",
        "the most the soft limit can be raised to without root",
        sysctl=False,
    ),
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One row of the report."""

    setting: Setting
    current: str | None
    status: Status
    command: str
    note: str = ""

    @property
    def name(self) -> str:
        return self.setting.name

    @property
    def recommended(self) -> str:
        return self.setting.recommended

    @property
    def off(self) -> bool:
        """True when the value is known and not as recommended."""
        return self.status in ("LOW", "HIGH")


def read_sysctl(proc: Path, name: str) -> str | None:
    """The value of sysctl ``name`` under ``proc`` (whitespace normalised), or None."""
    try:
        text = (proc / "sys" / name.replace(".", "/")).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return " ".join(text.split()) or None


def read_nofile(proc: Path, pid: str = "self") -> tuple[str, str] | None:
    """``(soft, hard)`` open-files limits from ``proc/PID/limits``, or None."""
    try:
        text = (proc / pid / "limits").read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        if line.startswith("Max open files"):
            words = line[len("Max open files") :].split()
            if len(words) >= 2:
                return words[0], words[1]
    return None


def inspect(proc: Path = Path("/proc")) -> list[Finding]:
    """Read every setting under ``proc`` and evaluate it."""
    values: dict[str, str | None] = {}
    for setting in SETTINGS:
        if setting.sysctl:
            values[setting.name] = read_sysctl(proc, setting.name)
    limits = read_nofile(proc)
    values[NOFILE_SOFT] = limits[0] if limits else None
    values[NOFILE_HARD] = limits[1] if limits else None
    return evaluate(values)


def evaluate(values: Mapping[str, str | None]) -> list[Finding]:
    """A finding for every setting in :data:`SETTINGS`, from the values read (pure)."""
    return [_evaluate(setting, values.get(setting.name), values) for setting in SETTINGS]


def sysctl_conf(findings: list[Finding]) -> str:
    """A sysctl.d drop-in with the recommended values.

    A value that is already better than recommended (a larger backlog, a
    wider port range) is kept, so applying the file never makes a setting
    worse.  Applied by ``sysctl --system`` or ``sysctl -p FILE``.
    """
    lines = [
        "# Kernel settings for Phoenix LB (seed design 9.1), written by",
        "# `phoenix-lb doctor --write-sysctl`. Apply with `sysctl --system` (or",
        "# `sysctl -p THIS_FILE`); the open-files limit is set in the service unit",
        "# (LimitNOFILE=65535), not here.",
    ]
    for finding in findings:
        setting = finding.setting
        if not setting.sysctl:
            continue
        value = setting.recommended
        if finding.status == "OK" and finding.current is not None:
            value = finding.current
        was = finding.current if finding.current is not None else "unknown"
        lines.append("")
        lines.extend(textwrap.wrap(setting.why, 76, initial_indent="# ", subsequent_indent="# "))
        lines.append(f"# (was {was}; recommended {setting.recommended})")
        lines.append(f"{setting.name} = {value}")
    return "\n".join(lines) + "\n"


# -- evaluation ------------------------------------------------------------


def _evaluate(setting: Setting, current: str | None, values: Mapping[str, str | None]) -> Finding:
    command = _command(setting)
    if current is None:
        return Finding(setting, None, "UNKNOWN", command, "could not be read")
    if setting.direction == "range":
        return _evaluate_range(setting, current, command)
    number = _number(current)
    wanted = int(setting.recommended)
    if number is None:
        return Finding(setting, current, "UNKNOWN", command, "not a number")
    if setting.direction == "min":
        if number >= wanted:
            return Finding(setting, current, "OK", command)
        if setting.name == NOFILE_SOFT:
            hard = _number(values.get(NOFILE_HARD) or "")
            if hard is not None and hard >= wanted:
                note = f"phoenix-lb run raises it to {wanted} (the hard limit allows it)"
                return Finding(setting, current, "OK", command, note)
        return Finding(setting, current, "LOW", command)
    if number <= wanted:
        return Finding(setting, current, "OK", command)
    return Finding(setting, current, "HIGH", command)


def _evaluate_range(setting: Setting, current: str, command: str) -> Finding:
    have = _range(current)
    want = _range(setting.recommended)
    assert want is not None
    if have is None:
        return Finding(setting, current, "UNKNOWN", command, "expected two numbers")
    ports = have[1] - have[0] + 1
    if ports >= want[1] - want[0] + 1:
        return Finding(setting, current, "OK", command, f"{ports} ports")
    return Finding(setting, current, "LOW", command, f"{ports} ports")


def _command(setting: Setting) -> str:
    if not setting.sysctl:
        return _NOFILE_COMMAND
    value = setting.recommended
    if " " in value:
        value = f'"{value}"'
    return f"sysctl -w {setting.name}={value}"


def _number(text: str) -> int | None:
    if text == "unlimited":
        return 2**63 - 1
    return int(text) if text.isascii() and text.isdigit() else None


def _range(text: str) -> tuple[int, int] | None:
    words = text.split()
    if len(words) != 2 or not all(w.isascii() and w.isdigit() for w in words):
        return None
    low, high = int(words[0]), int(words[1])
    return (low, high) if low <= high else None
