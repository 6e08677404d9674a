"""``phoenix-lb gslb -c FILE [--check]``: the DNS global load balancer (docs/gslb.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from phoenix_lb import __version__
from phoenix_lb.config.loader import ConfigError
from phoenix_lb.eventloop import loop_name, new_event_loop
from phoenix_lb.logsetup import setup_error_log

if TYPE_CHECKING:
    from phoenix_lb.gslb.config import GslbConfig

log = logging.getLogger("phoenix_lb")


async def serve(gslb: GslbConfig) -> int:
    """Run the GSLB on the current loop until SIGTERM/SIGINT."""
    # Imported here: every phoenix-lb command imports this module, and only
    # this one needs dnslib and prometheus_client.
    from phoenix_lb.gslb.server import GslbService

    loop = asyncio.get_running_loop()
    service = GslbService(gslb)
    try:
        await service.start()
    except OSError as exc:
        log.error("gslb: cannot listen: %s", exc)
        return 1
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    where = ", ".join(_show(host, port) for host, port in service.addresses)
    log.info(
        "phoenix-lb %s gslb for %s started on %s (udp+tcp), admin %s (%s, pid %d)",
        __version__,
        gslb.zone,
        where,
        _show(*service.admin.address),
        loop_name(),
        os.getpid(),
    )
    await stop.wait()
    log.info("gslb: stopping")
    await service.stop()
    log.info("gslb: stopped")
    return 0


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cmd_gslb(args: argparse.Namespace) -> int:
    from phoenix_lb.gslb.config import load_gslb_config

    try:
        config = load_gslb_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    if args.check:
        print(f"{args.config}: gslb configuration ok")
        return 0
    setup_error_log(config.error_log)
    loop = new_event_loop()
    try:
        return loop.run_until_complete(serve(config.gslb))
    finally:
        loop.close()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gslb = sub.add_parser(
        "gslb",
        help="run the DNS global load balancer (authoritative for the service zone)",
        description="Answer the service zone with the VIPs of healthy regions, preferring "
        "the client's region. See docs/gslb.md.",
    )
    gslb.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config file")
    gslb.add_argument(
        "--check", action="store_true", help="validate the config file and exit (like nginx -t)"
    )
    gslb.set_defaults(func=cmd_gslb)
