"""``phoenix-lb ha check`` / ``ha status`` / ``doctor`` as subprocesses, against real sockets.

The health check is also run the way keepalived runs it: ``hooks.py`` as a
script under the *resolved* interpreter (keepalived resolves a virtual
environment's ``bin/python`` symlink), which cannot import phoenix_lb, to
prove the file needs only the standard library.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from phoenix_lb.ha import hooks
from tests.support import Backend, RefusingPort, SilentPort

from .helpers import phoenix_lb_command

BASE = """\
listeners:
  - name: public
    bind: ["127.0.0.1:8080"]
    routes: [{{path: /, upstream: mo}}]
upstreams:
  mo:
    servers: [{{address: 127.0.0.1:9001}}]
ha:
  interface: {interface}
  virtual_router_id: 51
  virtual_ips: [{vip}]
"""


def run(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def as_keepalived_runs_it(*args: str) -> list[str]:
    return [os.path.realpath(sys.executable), "-I", os.path.realpath(hooks.__file__), *args]


def check_commands(url: str, timeout: str = "1") -> list[list[str]]:
    return [
        phoenix_lb_command("ha", "check", "--url", url, "--timeout", timeout),
        as_keepalived_runs_it("check", "--url", url, "--timeout", timeout),
    ]


@pytest.fixture
def backend() -> Iterator[Callable[[], Backend]]:
    started: list[Backend] = []

    def start() -> Backend:
        b = Backend("b0").start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def test_check_passes_on_200(backend: Callable[[], Backend]) -> None:
    b = backend()
    for argv in check_commands(f"{b.url}/health"):
        result = run(argv)
        assert (result.returncode, result.stderr) == (0, ""), argv


def test_check_fails_on_503_with_the_reason(backend: Callable[[], Backend]) -> None:
    b = backend()
    b.healthy = False
    for argv in check_commands(f"{b.url}/health"):
        result = run(argv)
        assert result.returncode == 1, argv
        assert result.stderr.startswith(f"{b.url}/health: 503 Service Unavailable"), result.stderr


def test_check_fails_when_refused() -> None:
    with RefusingPort() as port:
        for argv in check_commands(f"http://{port.address}/health"):
            result = run(argv)
            assert result.returncode == 1
            assert "Connection refused" in result.stderr


def test_check_fails_on_timeout() -> None:
    with SilentPort() as port:
        for argv in check_commands(f"http://{port.address}/health", timeout="0.3"):
            started = time.monotonic()
            result = run(argv)
            assert result.returncode == 1
            assert "no answer within 0.3s" in result.stderr
            assert time.monotonic() - started < 5


def test_notify_hook_as_keepalived_runs_it(tmp_path: Path) -> None:
    state = tmp_path / "vrrp.state"
    assert run(as_keepalived_runs_it("notify", "--state-file", str(state), "FAULT")).returncode == 0
    assert state.read_text() == "FAULT\n"


@pytest.mark.parametrize(
    ("interface", "vip", "code", "line"),
    [
        ("lo", "127.0.0.1/8", 0, "status: MASTER"),
        ("lo", "127.0.0.2/8", 3, "status: BACKUP"),
        ("nosuchif0", "127.0.0.1/8", 4, "status: unknown"),
    ],
)
def test_status(tmp_path: Path, interface: str, vip: str, code: int, line: str) -> None:
    config = tmp_path / "phoenix.yaml"
    config.write_text(BASE.format(interface=interface, vip=vip))
    result = run(phoenix_lb_command("ha", "status", "-c", str(config)))
    assert result.returncode == code, result.stdout + result.stderr
    assert line in result.stdout
    quiet = run(phoenix_lb_command("ha", "status", "-q", "-c", str(config)))
    assert (quiet.returncode, quiet.stdout) == (code, "")


def test_doctor_reads_this_machine(tmp_path: Path) -> None:
    before = Path("/proc/sys/net/core/somaxconn").read_text()
    out = tmp_path / "sysctl.conf"
    result = run(phoenix_lb_command("doctor", "--write-sysctl", str(out)))
    assert result.returncode == 0, result.stderr
    assert "net.core.somaxconn" in result.stdout
    assert "net.core.somaxconn = " in out.read_text()
    assert Path("/proc/sys/net/core/somaxconn").read_text() == before
