"""What keepalived runs: the health check and the state recorder.  Standard library only.

keepalived resolves the script's path before running it (for
``enable_script_security``), so ``/opt/phoenix-lb/venv/bin/python`` becomes
the base interpreter it links to, which does not see the virtual
environment's packages.  This file is therefore run as a plain script,
``PYTHON -I .../phoenix_lb/ha/hooks.py ACTION ...``, and imports nothing but
the standard library.  Starting it costs about 0.1-0.15 s of CPU, against
0.5 s for the whole ``phoenix-lb`` CLI (measured on the CI machine);
keepalived starts the check every ``check_interval``.

``check --url URL [--timeout S]``
    GET the admin ``/health``; exit 0 on 200, else 1 with the reason on
    stderr.  A 503 from a balancer without a healthy server, a refused
    connection from a dead one and a timeout from a stuck one all fail.
``notify --state-file FILE STATE``
    Record the VRRP state keepalived moved to (MASTER, BACKUP, FAULT, STOP)
    for ``phoenix-lb ha status``; written atomically.

``phoenix-lb ha check`` and ``phoenix-lb ha notify`` call the same functions.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import sys
import time
import urllib.parse

__all__ = ["KEEPALIVED_STATES", "check_health", "main", "record_state"]

# What keepalived passes to notify scripts (keepalived.conf(5)).
KEEPALIVED_STATES = ("MASTER", "BACKUP", "FAULT", "STOP", "DELETED")

# Enough of a 503's JSON reason to be useful in keepalived's log.
_MAX_REASON = 200


def check_health(url: str, timeout: float) -> tuple[bool, str]:
    """``(True, "200 OK")`` when ``url`` answers 200 within ``timeout`` seconds, else why not."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False, "expected an http:// or https:// URL"
    try:
        port = parts.port
    except ValueError:
        return False, "invalid port"
    deadline = time.monotonic() + timeout
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        connection.request("GET", target, headers={"User-Agent": "phoenix-lb-ha-check"})
        if connection.sock is not None:
            # The connect used part of the budget; the answer gets the rest.
            connection.sock.settimeout(max(0.001, deadline - time.monotonic()))
        response = connection.getresponse()
        body = response.read(_MAX_REASON)
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, socket.timeout | TimeoutError):
            return False, f"no answer within {timeout:g}s"
        return False, str(exc) or type(exc).__name__
    finally:
        connection.close()
    summary = f"{response.status} {response.reason}"
    if response.status == 200:
        return True, summary
    reason = body.decode("utf-8", "replace").strip()
    return False, f"{summary}: {reason}" if reason else summary


def record_state(path: str, state: str) -> None:
    """Write ``STATE\\n`` to ``path`` atomically (a reader never sees half a line)."""
    if state not in KEEPALIVED_STATES:
        raise ValueError(f"unknown VRRP state {state!r} (expected {', '.join(KEEPALIVED_STATES)})")
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(state + "\n")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def main(argv: list[str] | None = None) -> int:
    """``hooks.py check ...`` / ``hooks.py notify ...``; see the module docstring."""
    import argparse

    parser = argparse.ArgumentParser(prog="phoenix_lb/ha/hooks.py")
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check")
    check.add_argument("--url", required=True)
    check.add_argument("--timeout", type=float, default=1.0)
    check.add_argument("-v", "--verbose", action="store_true")
    notify = actions.add_parser("notify")
    notify.add_argument("--state-file", required=True)
    notify.add_argument("state", choices=KEEPALIVED_STATES)
    notify.add_argument("extra", nargs="*")  # keepalived's generic notify appends these
    args = parser.parse_args(argv)
    if args.action == "check":
        ok, detail = check_health(args.url, args.timeout)
        if not ok or args.verbose:
            print(f"{args.url}: {detail}", file=sys.stderr if not ok else sys.stdout)
        return 0 if ok else 1
    try:
        record_state(args.state_file, args.state)
    except (OSError, ValueError) as exc:
        print(f"phoenix-lb ha notify: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
