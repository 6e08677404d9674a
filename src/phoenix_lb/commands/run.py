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


def raise_nofile_limit(wanted: int = WANTED_NOFILE) -> None:
    """Raise RLIMIT_NOFILE toward ``wanted`` (worker_rlimit_nofile), or say in the log why not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("open files limit stays at %d (wanted %d): %s", soft, want, exc)
        return
    if want < wanted:
        log.warning(
            "open files limit raised to the hard limit %d, below the wanted %d", want, wanted
        )


def print_config_errors(error: ConfigError) -> None:
    """Each error on its own line on stderr (FILE: key.path: reason)."""
    for line in error.errors:
        print(line, file=sys.stderr)


def hot_path_build() -> str:
    """``compiled`` when the request path runs as mypyc extensions, else ``pure``."""
    from phoenix_lb.server import h1

    return "compiled" if not h1.__file__.endswith(".py") else "pure"


async def serve(
    config: PhoenixConfig,
    ready_message: str | None = None,
    *,
    config_path: str | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (graceful) or SIGQUIT (immediate).

    SIGHUP reloads the config file; SIGUSR1 reopens log files.  With
    ``workers: 1`` everything runs in this process; otherwise this process is
    the master and the workers serve requests.
    """
    from phoenix_lb.control.master import WorkerPool, worker_count
    from phoenix_lb.control.notify import sd_notify
    from phoenix_lb.control.plane import ControlPlane, DataPlane, LocalDataPlane

    loop = asyncio.get_running_loop()
    data_plane: DataPlane
    plane: ControlPlane | None = None

    def worker_died(last: object) -> None:
        if plane is not None:
            plane.note_dead_worker(last if isinstance(last, dict) else None)

    if worker_count(config) == 1:
        data_plane = LocalDataPlane(loop)
    else:
        data_plane = WorkerPool(loop, on_worker_death=worker_died)
    plane = ControlPlane(loop, config, data_plane, config_path=config_path)
    stop = asyncio.Event()
    graceful = True
    # Signals are handled from the start: a SIGHUP sent while workers are
    # still starting (a deploy script racing the unit) would otherwise end
    # the process with the default action.  It is kept for after the start.
    starting = True
    reload_wanted = False

    def on_stop(immediate: bool) -> None:
        nonlocal graceful
        graceful = graceful and not immediate
        stop.set()

    async def on_reload() -> None:
        sd_notify("RELOADING=1")
        result = await plane.reload()
        sd_notify("READY=1")
        if result.ok:
            log.info("reload done")

    def on_reopen() -> None:
        current = plane.config
        setup_error_log(current.error_log, prefix="master" if data_plane.workers > 1 else "")
        data_plane.reopen_logs()
        log.info("log files reopened")

    reloads: set[asyncio.Task[None]] = set()  # referenced until done

    def start_reload() -> None:
        task = loop.create_task(on_reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    def on_hup() -> None:
        nonlocal reload_wanted
        if starting:
            log.info("SIGHUP while starting: reloading once started")
            reload_wanted = True
        else:
            start_reload()

    loop.add_signal_handler(signal.SIGTERM, on_stop, False)
    loop.add_signal_handler(signal.SIGINT, on_stop, False)
    loop.add_signal_handler(signal.SIGQUIT, on_stop, True)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGUSR1, on_reopen)
    try:
        await plane.start()
    except (OSError, RuntimeError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        await plane.stop(0, graceful=False)
        return 1
    starting = False
    if reload_wanted:
        start_reload()
    log.info(
        "phoenix-lb %s started (%s, %s hot path, %d worker%s, pid %d)",
        __version__,
        loop_name(),
        hot_path_build(),
        data_plane.workers,
        "" if data_plane.workers == 1 else "s",
        os.getpid(),
    )
    from phoenix_lb.gctune import settle

    settle()
    sd_notify(f"READY=1\nMAINPID={os.getpid()}")
    if ready_message:
        print(ready_message, flush=True)
    await stop.wait()
    sd_notify("STOPPING=1")
    if graceful:
        log.info(
            "shutting down: finishing in-flight requests (up to %gs)", plane.config.shutdown_timeout
        )
    else:
        log.info("shutting down now (SIGQUIT)")
    await plane.stop(plane.config.shutdown_timeout, graceful=graceful)
    log.info("stopped")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_config_errors(exc)
        return 1
    # Certificates before any process starts: a worker that cannot load one
    # would otherwise only time out.  Warnings (expiry) are logged when the
    # listeners load them.
    if report_certificates(config, args.config, warnings=False) or report_secrets(
        config, args.config
    ):
        return 1
    from phoenix_lb.control.master import worker_count

    setup_error_log(config.error_log, prefix="master" if worker_count(config) > 1 else "")
    raise_nofile_limit(config.worker_rlimit_nofile)
    loop = new_event_loop()
    try:
        return loop.run_until_complete(serve(config, config_path=args.config))
    finally:
        loop.close()


def report_certificates(config: PhoenixConfig, filename: str, *, warnings: bool = True) -> bool:
    """Print certificate problems (``FILE: key.path: message``) on stderr; True on errors."""
    if not any(listener.tls is not None for listener in config.listeners):
        return False
    from phoenix_lb.tls import check_certificates

    failed = False
    for issue in check_certificates(config):
        failed = failed or issue.severity == "error"
        if warnings or issue.severity == "error":
            print(issue.render(filename), file=sys.stderr)
    return failed


def report_secrets(config: PhoenixConfig, filename: str) -> bool:
    """Print unreadable key and token files (``FILE: key.path: reason``); True if any."""
    from phoenix_lb.secrets import check_secret_sources

    problems = check_secret_sources(config, filename)
    for problem in problems:
        print(f"{filename}: {problem}", file=sys.stderr)
    return bool(problems)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_config_errors(exc)
        return 1
    certificates_failed = report_certificates(config, args.config)
    if report_secrets(config, args.config) or certificates_failed:
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
