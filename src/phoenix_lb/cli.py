"""Command line: ``phoenix-lb COMMAND``; thin, each command lives in ``commands/``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from phoenix_lb import __version__

# Subcommand modules, in --help order.  Each has register(subparsers).
COMMAND_MODULES = [
    "phoenix_lb.commands.run",
    "phoenix_lb.commands.demo",
    "phoenix_lb.commands.ctl",
    "phoenix_lb.commands.gslb",
    "phoenix_lb.commands.doctor",
    "phoenix_lb.commands.configtool",
    "phoenix_lb.commands.ha",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="phoenix-lb",
        description="Phoenix LB: load balancer and reverse proxy for the Phoenix Orchestrator.",
    )
    parser.add_argument("--version", action="version", version=f"phoenix-lb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``phoenix-lb`` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
