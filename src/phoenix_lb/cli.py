"""Command line: ``phoenix-lb run | check | demo``; thin, the work is elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import signal
import sys
from collections.abc import Sequence

from phoenix_lb import __version__
from phoenix_lb.config.loader import ConfigError, load_config
from phoenix_lb.config.schema import PhoenixConfig
from phoenix_lb.eventloop import loop_name, new_event_loop
from phoenix_lb.logsetup import setup_error_log

log = logging.getLogger("phoenix_lb")

# The seed's worker_rlimit_nofile.
WANTED_NOFILE = 65535


def _raise_nofile_limit() -> None:
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


def _print_config_errors(error: ConfigError) -> None:
    for line in error.errors:
        print(line, file=sys.stderr)


async def _serve(config: PhoenixConfig, ready_message: str | None = None) -> int:
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
        "phoenix-lb %s started (%s, pid %s)",
        __version__,
        loop_name(),
        __import__("os").getpid(),
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
        _print_config_errors(exc)
        return 1
    setup_error_log(config.error_log)
    if config.workers != 1:
        log.warning(
            "workers: %s requested; this build runs a single worker process", config.workers
        )
    _raise_nofile_limit()
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_serve(config))
    finally:
        loop.close()


def cmd_check(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)
    except ConfigError as exc:
        _print_config_errors(exc)
        return 1
    print(f"{args.config}: configuration ok")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from phoenix_lb.config.schema import ErrorLogConfig
    from phoenix_lb.demo import demo_config, start_demo_backends

    setup_error_log(ErrorLogConfig(path="stderr", level="info"))
    loop = new_event_loop()

    async def main() -> int:
        backends = await start_demo_backends(3)
        addresses = [address for address, _ in backends]
        bind = f"{args.host}:{args.port}"
        config = demo_config(addresses, bind)
        url = f"http://{args.host}:{args.port}"
        message = (
            f"\nPhoenix LB demo: balancer on {url} in front of {len(addresses)} demo "
            f"master_orchestrator backends ({', '.join(addresses)}).\n"
            f"Try:\n  curl -s {url}/            # repeat: least_conn spreads requests\n"
            f"  curl -s {url}/health\n"
            f"  curl -si {url}/ -H 'Connection: close'\n"
            "Press Ctrl-C to stop.\n"
        )
        try:
            return await _serve(config, message)
        finally:
            for _, server in backends:
                server.close()

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phoenix-lb",
        description="Phoenix LB: load balancer and reverse proxy for the Phoenix Orchestrator.",
    )
    parser.add_argument("--version", action="version", version=f"phoenix-lb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the balancer in the foreground")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config file")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config file (like nginx -t)")
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config file")
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="run the balancer in front of three built-in demo backends")
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    demo.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``phoenix-lb`` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
