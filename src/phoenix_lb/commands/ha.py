"""``phoenix-lb ha ...``: keepalived config, VIP status, and the helpers keepalived runs.

* ``ha keepalived -c FILE [-o OUT]``: render keepalived.conf for this node.
* ``ha status -c FILE``: does this node hold the virtual IPs?  Exit 0 MASTER,
  3 BACKUP, 4 unknown, 1 invalid config (see :mod:`phoenix_lb.ha.status`).
* ``ha check --url URL``: GET the admin ``/health``; exit 0 on 200, else 1.
* ``ha notify --state-file FILE STATE``: record a VRRP state for ``ha status``.

keepalived itself runs these two as ``PYTHON -I .../phoenix_lb/ha/hooks.py``
(the same code, standard library only; see :mod:`phoenix_lb.ha.hooks`).
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK = 0
EXIT_CONFIG = 1


def cmd_keepalived(args: argparse.Namespace) -> int:
    from phoenix_lb import __version__
    from phoenix_lb.atomicfile import write_atomic
    from phoenix_lb.commands.run import print_config_errors
    from phoenix_lb.config.loader import ConfigError, load_config
    from phoenix_lb.ha.keepalived import RenderError, ScriptCommands, render
    from phoenix_lb.ha.secret import SecretError, load_secret

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_config_errors(exc)
        return EXIT_CONFIG
    if config.ha is None:
        print(f"{args.config}: no ha: section to render (see docs/ha.md)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        base = os.path.dirname(os.path.abspath(args.config))
        secret = load_secret(config.ha.auth, base=base)
    except SecretError as exc:
        print(f"{args.config}: ha.auth: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from phoenix_lb.ha import hooks

    # keepalived runs the resolved path anyway (see ScriptCommands); say so.
    commands = ScriptCommands(
        python=os.path.realpath(args.python),
        hooks=os.path.realpath(hooks.__file__),
        curl=os.path.abspath(args.curl_path) if args.checker == "curl" else None,
    )
    try:
        text = render(
            config, commands=commands, secret=secret, source=args.config, version=__version__
        )
    except RenderError as exc:
        print(f"{args.config}: ha: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return EXIT_OK
    write_atomic(args.output, text.encode(), 0o600)
    print(f"wrote {args.output}; check it with: keepalived -t -f {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from phoenix_lb.commands.run import print_config_errors
    from phoenix_lb.config.loader import ConfigError, load_config
    from phoenix_lb.ha.status import decide, interface_addresses, read_state_file

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_config_errors(exc)
        return EXIT_CONFIG
    ha = config.ha
    if ha is None:
        print(f"{args.config}: no ha: section (see docs/ha.md)", file=sys.stderr)
        return EXIT_CONFIG
    present, problem = interface_addresses(ha.interface)
    state: str | None = None
    state_problem: str | None = None
    if ha.state_file is not None:
        state, state_problem = read_state_file(ha.state_file)
    status = decide(ha.virtual_ips, present, state, problem)
    if not args.quiet:
        for vip in ha.virtual_ips:
            address = vip.split("/")[0]
            where = "here" if address in status.held else "not here"
            if present is None:
                where = "cannot tell"
            print(f"vip {vip} on {ha.interface}: {where}")
        if ha.state_file is not None:
            shown = state or state_problem or "no state recorded yet"
            print(f"keepalived state ({ha.state_file}): {shown}")
        print(f"status: {status.role} ({status.reason})")
    return status.exit_code


def cmd_check(args: argparse.Namespace) -> int:
    from phoenix_lb.ha.hooks import check_health

    ok, detail = check_health(args.url, args.timeout)
    if not ok or args.verbose:
        print(f"{args.url}: {detail}", file=sys.stderr if not ok else sys.stdout)
    return 0 if ok else 1


def cmd_notify(args: argparse.Namespace) -> int:
    from phoenix_lb.ha.hooks import record_state

    try:
        record_state(args.state_file, args.state)
    except (OSError, ValueError) as exc:
        print(f"phoenix-lb ha notify: {exc}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ha = sub.add_parser(
        "ha",
        help="high availability with keepalived: render its config, show VIP status",
        description="High availability with keepalived (VRRP); see docs/ha.md.",
    )
    ha_sub = ha.add_subparsers(dest="ha_command", required=True, metavar="ACTION")

    keepalived = ha_sub.add_parser(
        "keepalived", help="render keepalived.conf for this node from the ha: section"
    )
    keepalived.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config")
    keepalived.add_argument(
        "-o", "--output", metavar="OUT", help="write here (mode 0600) instead of standard output"
    )
    keepalived.add_argument(
        "--checker",
        choices=("phoenix-lb", "curl"),
        default="phoenix-lb",
        help="health check command in vrrp_script (default phoenix-lb: no curl needed)",
    )
    keepalived.add_argument(
        "--python",
        default=sys.executable,
        metavar="PATH",
        help="interpreter keepalived runs the check and notify helpers with "
        "(default: the one running this command)",
    )
    keepalived.add_argument(
        "--curl-path", default="/usr/bin/curl", metavar="PATH", help="curl for --checker curl"
    )
    keepalived.set_defaults(func=cmd_keepalived)

    status = ha_sub.add_parser(
        "status",
        help="does this node hold the virtual IPs (exit 0 MASTER, 3 BACKUP, 4 unknown)",
    )
    status.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config")
    status.add_argument("-q", "--quiet", action="store_true", help="print nothing; exit code only")
    status.set_defaults(func=cmd_status)

    check = ha_sub.add_parser(
        "check", help="GET the admin /health: exit 0 on 200, 1 otherwise (for vrrp_script)"
    )
    check.add_argument("--url", required=True, help="e.g. http://127.0.0.1:9000/health")
    check.add_argument(
        "--timeout", type=float, default=1.0, metavar="SECONDS", help="whole check (default 1)"
    )
    check.add_argument("-v", "--verbose", action="store_true", help="also report success")
    check.set_defaults(func=cmd_check)

    notify = ha_sub.add_parser(
        "notify", help="record a VRRP state change in a file (run by keepalived)"
    )
    notify.add_argument("--state-file", required=True, metavar="FILE", help="ha.state_file")
    notify.add_argument("state", choices=("MASTER", "BACKUP", "FAULT", "STOP", "DELETED"))
    notify.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    notify.set_defaults(func=cmd_notify)
