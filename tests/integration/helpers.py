"""Helpers shared by the integration tests (plain functions, no fixtures)."""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support import Backend, Response, parse_responses, send_raw

UPSTREAM = "app"

# The console script of the venv running the tests.
PHOENIX_LB = Path(sys.executable).with_name("phoenix-lb")
if not PHOENIX_LB.exists():  # pragma: no cover - venv layouts differ
    PHOENIX_LB = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "phoenix-lb"


def phoenix_lb_command(*args: str) -> list[str]:
    """argv for the ``phoenix-lb`` console script."""
    return [str(PHOENIX_LB), *args]


def free_port() -> int:
    """A port that was free a moment ago (bind 127.0.0.1:0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_answers(port: int, timeout: float = 0.2) -> bool:
    """True if a TCP connect to 127.0.0.1:port succeeds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 5 ms until true; raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.005)


def make_config(
    servers: Sequence[str | dict[str, Any]],
    *,
    balance: str = "round_robin",
    keepalive: int = 64,
    timeouts: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    bind: str = "127.0.0.1:0",
    access_log: dict[str, Any] | None = None,
    server_defaults: dict[str, Any] | None = None,
    upstream: str = UPSTREAM,
    **upstream_overrides: Any,
) -> dict[str, Any]:
    """A config dict (same shape as the YAML) with one listener routing / to ``upstream``.

    ``servers`` are addresses (``"127.0.0.1:9001"``) or server dicts;
    ``server_defaults`` (e.g. ``{"max_fails": 0}``) apply to every entry.
    Other keyword arguments go into the upstream (``keepalive_timeout``...).
    """
    server_list: list[dict[str, Any]] = []
    for entry in servers:
        item = dict(server_defaults or {})
        if isinstance(entry, str):
            item["address"] = entry
        else:
            item.update(entry)
        server_list.append(item)
    config: dict[str, Any] = {
        "listeners": [
            {"name": "test", "bind": [bind], "routes": [{"path": "/", "upstream": upstream}]}
        ],
        "upstreams": {
            upstream: {
                "balance": balance,
                "keepalive": keepalive,
                "servers": server_list,
                **upstream_overrides,
            }
        },
        "access_log": access_log or {"format": "off"},
        "error_log": {"path": "stderr", "level": "warning"},
        # Tests run side by side: no admin listener unless a test asks for one
        # (the default 127.0.0.1:9000 would be shared).
        "admin": None,
    }
    if timeouts:
        config["timeouts"] = dict(timeouts)
    if limits:
        config["limits"] = dict(limits)
    return config


def config_yaml(config: dict[str, Any]) -> str:
    """Render a config dict as YAML text."""
    return yaml.safe_dump(config, sort_keys=False)


def request_bytes(
    method: str,
    target: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    host: str | None = "test",
    version: str = "HTTP/1.1",
    content_length: bool | None = None,
) -> bytes:
    """Serialize a request; Content-Length is added when there is a body (or if asked)."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{n}: {v}" for n, v in headers]
    if content_length or (content_length is None and body):
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def one_shot(
    port: int, data: bytes, *, method: str = "GET", read_timeout: float = 5.0
) -> tuple[Response, bytes]:
    """Send ``data`` on a fresh connection; return the first final response and the raw bytes."""
    raw = send_raw(port, data, read_timeout=read_timeout)
    responses = parse_responses(raw, [method])
    assert responses, f"no response, got {raw!r}"
    return responses[0], raw


def chunked(body: bytes, piece: int = 65536) -> bytes:
    """``body`` in chunked coding, ``piece`` bytes per chunk."""
    out = [
        b"%x\r\n%s\r\n" % (len(body[i : i + piece]), body[i : i + piece])
        for i in range(0, len(body), piece)
    ]
    return b"".join(out) + b"0\r\n\r\n"


def set_linger_zero(sock: socket.socket) -> None:
    """Make the next close() send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def assert_nothing_reached(backend: Backend, *, settle: float = 0.2) -> None:
    """No request, not even a rejected one, reached ``backend`` (after ``settle`` s)."""
    time.sleep(settle)
    assert backend.requests == [], [r.raw_head for r in backend.requests]
    assert backend.errors == []


def backend_names(responses: Sequence[Response]) -> list[str | None]:
    return [r.header("X-Backend") for r in responses]
