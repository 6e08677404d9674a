"""``phoenix-lb doctor``: the OS settings a balancer depends on, and how to set them.

Reads (never writes) the kernel settings of seed design 9.1 and the
open-files limit, prints each with the recommended value, a status and the
command that sets it.  ``--write-sysctl FILE`` writes a sysctl.d drop-in for
the operator to apply.  Exit status 0; with ``--strict``, 2 when a value is
LOW or HIGH (UNKNOWN, a value that could not be read, does not count).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OFF = 2


def cmd_doctor(args: argparse.Namespace) -> int:
    from phoenix_lb.atomicfile import write_atomic
    from phoenix_lb.ostuning import inspect, sysctl_conf

    findings = inspect(Path(args.proc))
    rows = [("setting", "current", "recommended", "status", "how to set")]
    for finding in findings:
        current = finding.current if finding.current is not None else "?"
        if finding.note:
            current = f"{current} ({finding.note})"
        rows.append((finding.name, current, finding.recommended, finding.status, finding.command))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        print("  ".join([*cells, row[4]]).rstrip())
    off = [finding for finding in findings if finding.off]
    print()
    if off:
        print(f"{len(off)} of {len(findings)} settings differ from the recommendation.")
    else:
        print("All readable settings are as recommended.")
    print("doctor changes nothing; net.* values are per network namespace.")
    if args.write_sysctl:
        write_atomic(args.write_sysctl, sysctl_conf(findings).encode(), 0o644)
        print(f"wrote {args.write_sysctl}; apply with: sysctl -p {args.write_sysctl}")
    elif off:
        print(
            "To make the sysctl values permanent: phoenix-lb doctor --write-sysctl "
            "/etc/sysctl.d/60-phoenix-lb.conf && sysctl --system"
        )
    sys.stdout.flush()
    return EXIT_OFF if args.strict and off else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check OS settings (somaxconn, backlogs, timeouts, ports, open files)",
        description="Check the kernel settings and limits a load balancer depends on "
        "(seed design 9.1). Reads only; prints the command to set each.",
    )
    doctor.add_argument(
        "--write-sysctl",
        metavar="FILE",
        help="write the recommended values as a sysctl.d file "
        "(e.g. /etc/sysctl.d/60-phoenix-lb.conf); does not apply it",
    )
    doctor.add_argument(
        "--strict", action="store_true", help="exit 2 when any value is LOW or HIGH"
    )
    doctor.add_argument("--proc", default="/proc", metavar="DIR", help=argparse.SUPPRESS)
    doctor.set_defaults(func=cmd_doctor)
