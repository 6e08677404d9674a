"""``phoenix-lb run`` and ``phoenix-lb check``: serve a config, or validate it like ``nginx -t``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import sys

from phoenix_lb import __version__
from phoenix_lb.config.loader import ConfigError, load_config
from phoenix_lb.config.schema import PhoenixConfig
from phoenix_lb.eventloop import loop_name, new_event_loop
from phoenix_lb.logsetup import setup_error_log

log = logging.getLogger("phoenix_lb")

# The seed's worker_rlimit_nofile.
WANTED_NOFILE = 65535


def raise_nofile_limit() -> None:
    """Raise RLIMIT_NOFILE toward WANTED_NOFILE, or say in the log why not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(WANTED_NOFILE, hard)
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("open files limit stays at %d (wanted %d): %s", soft, want, exc)
        return
    if want < WANTED_NOFILE:
        log.warning(
            "open files limit raised to the hard limit %d, below the wanted %d", want, WANTED_NOFILE
        )


def print_config_errors(error: ConfigError) -> None:
    """Each error on its own line on stderr (FILE: key.path: reason)."""
    for line in error.errors:
        print(line, file=sys.stderr)


def hot_path_build() -> str:
    """``compiled`` when the request path runs as mypyc extensions, else ``pure``."""
    from phoenix_lb.server import h1

    return "compiled" if not h1.__file__.endswith(".py") else "pure"


async def serve(config: PhoenixConfig, ready_message: str | None = None) -> int:
    """Run the proxy on the current loop until SIGTERM/SIGINT; graceful stop."""
    from phoenix_lb.server.runtime import Runtime

    loop = asyncio.get_running_loop()
    runtime = Runtime(config, loop)
    try:
        await runtime.start()
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        await runtime.stop(0)
        return 1
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "phoenix-lb %s started (%s, %s hot path, pid %d)",
        __version__,
        loop_name(),
        hot_path_build(),
        os.getpid(),
    )
    if ready_message:
        print(ready_message, flush=True)
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (up to %gs)", config.shutdown_timeout)
    await runtime.stop(config.shutdown_timeout)
    log.info("stopped")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_config_errors(exc)
        return 1
    setup_error_log(config.error_log)
    if config.workers != 1:
        log.warning(
            "workers: %s requested; this build runs a single worker process", config.workers
        )
    raise_nofile_limit()
    loop = new_event_loop()
    try:
        return loop.run_until_complete(serve(config))
    finally:
        loop.close()


def cmd_check(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)
    except ConfigError as exc:
        print_config_errors(exc)
        return 1
    print(f"{args.config}: configuration ok")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the balancer in the foreground")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config file")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config file (like nginx -t)")
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config file")
    check.set_defaults(func=cmd_check)
