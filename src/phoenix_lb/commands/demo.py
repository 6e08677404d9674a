"""``phoenix-lb demo``: the balancer in front of three built-in demo backends."""

from __future__ import annotations

import argparse
import socket

from phoenix_lb.commands.run import serve
from phoenix_lb.config.schema import ErrorLogConfig
from phoenix_lb.eventloop import new_event_loop
from phoenix_lb.logsetup import setup_error_log


def cmd_demo(args: argparse.Namespace) -> int:
    from phoenix_lb.demo import demo_config, start_demo_backends

    setup_error_log(ErrorLogConfig(path="stderr", level="info"))
    loop = new_event_loop()

    async def main() -> int:
        backends = await start_demo_backends(3)
        addresses = [address for address, _ in backends]
        bind = f"{args.host}:{args.port}"
        admin = _free_admin_bind()
        config = demo_config(addresses, bind, admin)
        url = f"http://{args.host}:{args.port}"
        message = (
            f"\nPhoenix LB demo: balancer on {url} in front of {len(addresses)} demo "
            f"master_orchestrator backends ({', '.join(addresses)}).\n"
            f"Try:\n  curl -s {url}/            # repeat: least_conn spreads requests\n"
            f"  curl -s {url}/health\n"
            f"  curl -si {url}/ -H 'Connection: close'\n"
            + (
                f"Status page: http://{admin}/status   metrics: http://{admin}/metrics\n"
                if admin
                else ""
            )
            + "Press Ctrl-C to stop.\n"
        )
        try:
            return await serve(config, message)
        finally:
            for _, server in backends:
                server.close()

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _free_admin_bind() -> str | None:
    """127.0.0.1:9000 for the admin listener if free (another instance may hold it)."""
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 9000))
    except OSError:
        return None
    finally:
        probe.close()
    return "127.0.0.1:9000"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run the balancer in front of three built-in demo backends")
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    demo.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    demo.set_defaults(func=cmd_demo)
