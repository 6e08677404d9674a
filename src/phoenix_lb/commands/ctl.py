"""``phoenix-lb ctl``: talk to a running balancer through its admin API.

    phoenix-lb ctl [-c FILE | --admin HOST:PORT] status
    phoenix-lb ctl upstreams
    phoenix-lb ctl drain|enable|disable UPSTREAM SERVER
    phoenix-lb ctl reload
    phoenix-lb ctl rollback

SERVER is the address as configured (``10.0.0.5:8080``) or its position in
the list (``0``).  The admin address and token come from the config file
(``-c``), or ``--admin`` and ``--token-file`` / ``PHOENIX_LB_ADMIN_TOKEN``.
Exit status: 0 done, 1 refused (e.g. an invalid config on reload), 2 the
balancer could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

DEFAULT_ADMIN = "127.0.0.1:9000"


def _admin_and_token(args: argparse.Namespace) -> tuple[str, str | None]:
    admin = args.admin
    token: str | None = os.environ.get("PHOENIX_LB_ADMIN_TOKEN")
    token_file = args.token_file
    if args.config:
        from phoenix_lb.config.loader import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            for line in exc.errors:
                print(line, file=sys.stderr)
            raise SystemExit(2) from None
        if config.admin is None:
            print(f"{args.config}: the admin listener is disabled (admin: null)", file=sys.stderr)
            raise SystemExit(2)
        admin = admin or config.admin.bind
        if token_file is None and config.admin.auth_token_file is not None:
            token_file = config.admin.auth_token_file
            if not os.path.isabs(token_file):
                token_file = os.path.join(os.path.dirname(os.path.abspath(args.config)), token_file)
    if token_file:
        with open(token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
    return _connect_address(admin or DEFAULT_ADMIN), token


def _connect_address(bind: str) -> str:
    """``host:port`` to reach an admin listener bound to ``bind`` from this machine.

    A bare port (``9000``, ``:9000``) is loopback, as the listener binds it;
    a wildcard bind (``0.0.0.0``, ``[::]``) is reached on loopback too.
    """
    from phoenix_lb.config.schema import split_host_port

    try:
        host, port = split_host_port(bind.removeprefix(":"), default_host="127.0.0.1")
    except ValueError as exc:
        print(f"admin address {bind!r}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _call(args: argparse.Namespace, method: str, path: str) -> tuple[int, Any]:
    admin, token = _admin_and_token(args)
    request = urllib.request.Request(f"http://{admin}{path}", method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if method == "POST":
        request.data = b""
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach the admin listener at {admin}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        if status == 200:
            # Some other HTTP server (a proxy listener's port, say).
            print(
                f"{admin} answered, but not as a phoenix-lb admin listener "
                "(is it the admin.bind address?)",
                file=sys.stderr,
            )
            raise SystemExit(2)
        data = {"error": f"{status}: {body.decode(errors='replace').strip()}"}
    return status, data


def cmd_upstreams(args: argparse.Namespace) -> int:
    status, data = _call(args, "GET", "/api/upstreams")
    if status != 200:
        print(data.get("error", data), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    for upstream, servers in data.items():
        print(f"{upstream}")
        for item in servers:
            check = item.get("last_check_reason") or ""
            health = "" if item.get("healthy") else f"  ({item.get('health_reason')})"
            print(f"  {item['server']:<40} {item['state']:<11} {check}{health}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status, data = _call(args, "GET", "/api/status")
    if status != 200:
        print(data.get("error", data), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    health = data["health"]
    print(f"health: {'ok' if health['ok'] else 'UNAVAILABLE: ' + '; '.join(health['reasons'])}")
    print(
        f"workers: {data['workers']}  reloads: {data['reloads']['ok']} ok, "
        f"{data['reloads']['failed']} failed"
    )
    for upstream in data["upstreams"]:
        print(f"upstream {upstream['name']} ({upstream['balance']})")
        for s in upstream["servers"]:
            p99 = s.get("p99_seconds")
            latency = f"p99 {p99 * 1000:.1f}ms" if p99 is not None else ""
            print(
                f"  {s['address']:<40} {s['state']:<10} in-flight {s['in_flight']:<4} "
                f"{s['requests_per_second']:8.1f} req/s  {latency}"
            )
    return 0


def _server_action(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        path = (
            f"/api/upstreams/{quote(args.upstream, safe='')}/servers/"
            f"{quote(args.server, safe='')}/{action}"
        )
        status, data = _call(args, "POST", path)
        if status != 200:
            print(data.get("error", data), file=sys.stderr)
            return 1
        print(f"{data['upstream']} {data['server']}: {data['state']}")
        return 0

    return run


def _reload_like(path: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        status, data = _call(args, "POST", path)
        if status == 200 and data.get("ok"):
            print(data.get("message") or "ok")
            return 0
        for line in data.get("errors", []) or [data.get("error", "refused")]:
            print(line, file=sys.stderr)
        if data.get("message"):
            print(data["message"], file=sys.stderr)
        return 1

    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ctl = sub.add_parser("ctl", help="control a running balancer (drain, reload, status...)")
    ctl.add_argument("-c", "--config", metavar="FILE", help="read the admin address from FILE")
    ctl.add_argument(
        "--admin", metavar="HOST:PORT", help=f"admin listener (default {DEFAULT_ADMIN})"
    )
    ctl.add_argument("--token-file", metavar="FILE", help="file holding the admin bearer token")
    ctl.add_argument("--timeout", type=float, default=35.0, help="seconds to wait (default 35)")
    ctl.add_argument("--json", action="store_true", help="print the raw JSON")
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("status", help="health, workers, and per-server rates").set_defaults(
        func=cmd_status
    )
    actions.add_parser("upstreams", help="every server's state").set_defaults(func=cmd_upstreams)
    for action, text in (
        ("drain", "no new requests or sticky bindings; pinned clients may finish"),
        ("enable", "back in rotation"),
        ("disable", "no requests at all"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("upstream")
        parser.add_argument("server", help="address as configured, or position (0, 1...)")
        parser.set_defaults(func=_server_action(action))
    actions.add_parser("reload", help="re-read and apply the config file").set_defaults(
        func=_reload_like("/api/reload")
    )
    actions.add_parser(
        "rollback", help="return to the configuration before the last reload"
    ).set_defaults(func=_reload_like("/api/rollback"))
