"""The ``phoenix-lb`` command line, run as a real subprocess (issue 2, "Interface")."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from phoenix_lb import __version__
from tests.support import RawClient

from .helpers import free_port, phoenix_lb_command, port_answers

GOOD = """\
listeners:
  - name: public
    bind: ["127.0.0.1:{port}"]
    routes:
      - path: /
        upstream: master_orchestrator
upstreams:
  master_orchestrator:
    balance: least_conn
    keepalive: 64
    servers:
      - address: {backend}
        weight: 1
        max_fails: 3
        fail_timeout: 30s
timeouts: {{connect: 5s, send: 60s, read: 60s, client_header: 60s, client_body: 60s,
           keepalive: 65s}}
limits: {{max_header_bytes: 16k, max_headers: 100, max_body: 100m}}
access_log: {{path: stdout, format: "off"}}
"""

BAD_PORT = """\
listeners:
  - name: public
    bind: ["127.0.0.1:{port}"]
    routes:
      - path: /
        upstream: master_orchestrator
upstreams:
  master_orchestrator:
    servers:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:99999
"""


def _run(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        phoenix_lb_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"phoenix-lb {__version__}"


def test_help_lists_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for word in ("run", "check", "demo", "--version"):
        assert word in result.stdout
    for command in ("run", "check"):
        sub = _run(command, "--help")
        assert sub.returncode == 0
        assert "-c" in sub.stdout


def test_check_good_config(tmp_path: Path) -> None:
    path = _write(tmp_path, "good.yaml", GOOD.format(port=8080, backend="127.0.0.1:9001"))
    result = _run("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout
    assert result.stderr == ""


def test_check_examples(tmp_path: Path) -> None:
    from tests.support.certs import TestCA

    examples = Path(__file__).resolve().parents[2] / "examples"
    result = _run("check", "-c", str(examples / "minimal.yaml"))
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout
    # The seed design names /etc/phoenix-lb files (certificate, sticky key):
    # as shipped, check reports those, by key path; with them in place it passes.
    shipped = examples / "phoenix.yaml"
    result = _run("check", "-c", str(shipped))
    assert result.returncode == 1
    assert f"{shipped}: listeners[1].tls.certificates[0].cert: " in result.stderr, result.stderr
    assert f"{shipped}: upstreams.master_orchestrator.sticky.secret_file: " in result.stderr
    files = TestCA(tmp_path).issue("phoenix-orch.example.com", stem="phoenix-orch")
    sticky_key = tmp_path / "sticky.key"
    sticky_key.write_text("k" * 32)
    sticky_key.chmod(0o600)
    text = (
        shipped.read_text()
        .replace("/etc/phoenix-lb/ssl/phoenix-orch.crt", str(files.cert))
        .replace("/etc/phoenix-lb/ssl/phoenix-orch.key", str(files.key))
        .replace("/etc/phoenix-lb/sticky.key", str(sticky_key))
    )
    result = _run("check", "-c", str(_write(tmp_path, "phoenix.yaml", text)))
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout


def test_check_bad_port_names_file_key_path_and_reason(tmp_path: Path) -> None:
    path = _write(tmp_path, "phoenix.yaml", BAD_PORT.format(port=8080))
    result = _run("check", "-c", str(path))
    assert result.returncode == 1
    assert "configuration ok" not in result.stdout
    expected = f"{path}: upstreams.master_orchestrator.servers[1].address: port 99999 out of range"
    assert expected in result.stderr, result.stderr
    # One line per problem, nothing else (no traceback).
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_relative_path_is_reported_as_given(tmp_path: Path) -> None:
    _write(tmp_path, "phoenix.yaml", BAD_PORT.format(port=8080))
    result = subprocess.run(
        phoenix_lb_command("check", "-c", "phoenix.yaml"),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "phoenix.yaml: upstreams.master_orchestrator.servers[1].address: port 99999 out of range"
    ), result.stderr


def test_check_unknown_key_and_missing_file(tmp_path: Path) -> None:
    text = GOOD.format(port=8080, backend="127.0.0.1:9001") + "bogus_key: 1\n"
    path = _write(tmp_path, "typo.yaml", text)
    result = _run("check", "-c", str(path))
    assert result.returncode == 1
    assert f"{path}: bogus_key" in result.stderr
    missing = _run("check", "-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert "nope.yaml" in missing.stderr
    assert "Traceback" not in missing.stderr


def _sticky_config(tmp_path: Path, sticky: str, admin: str = "") -> Path:
    text = GOOD.format(port=8080, backend="127.0.0.1:9001")
    text = text.replace("    servers:", f"    sticky: {sticky}\n    servers:", 1)
    return _write(tmp_path, "sticky.yaml", text + admin)


def test_check_names_the_key_of_sticky_settings_run_would_refuse(tmp_path: Path) -> None:
    # Each of these used to pass check and then stop run from starting.
    cases = {
        "{expires: 500ms}": "sticky.expires: must be at least 1s",
        "{path: nopath}": "sticky.path: 'nopath' must start with '/'",
        '{domain: "a_b;c"}': "sticky.domain: 'a_b;c' is not a host name",
        "{samesite: None, secure: false}": "sticky.samesite: None needs secure",
    }
    for sticky, expected in cases.items():
        path = _sticky_config(tmp_path, sticky)
        result = _run("check", "-c", str(path))
        assert result.returncode == 1, (sticky, result.stdout)
        assert f"{path}: upstreams.master_orchestrator.{expected}" in result.stderr, result.stderr


def test_check_and_run_report_missing_key_and_token_files(tmp_path: Path) -> None:
    admin = "admin:\n  bind: 127.0.0.1:0\n  auth_token_file: missing.token\n"
    path = _sticky_config(tmp_path, "{secret_file: nope.key}", admin)
    for command in ("check", "run"):
        result = _run(command, "-c", str(path))
        assert result.returncode == 1, result.stdout
        lines = result.stderr.strip().splitlines()
        assert lines == [
            f"{path}: upstreams.master_orchestrator.sticky.secret_file: cannot read "
            f"{tmp_path / 'nope.key'}: No such file or directory",
            f"{path}: admin.auth_token_file: cannot read {tmp_path / 'missing.token'}: "
            "No such file or directory",
        ], result.stderr


def test_run_with_bad_config_exits_1_without_listening(tmp_path: Path) -> None:
    port = free_port()
    path = _write(tmp_path, "bad.yaml", BAD_PORT.format(port=port))
    proc = subprocess.Popen(
        phoenix_lb_command("run", "-c", str(path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        listened = False
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            listened = listened or port_answers(port, timeout=0.05)
            time.sleep(0.02)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 1
    assert not listened
    assert "servers[1].address: port 99999 out of range" in stderr
    assert "Traceback" not in stderr


def test_run_when_port_in_use_exits_1(tmp_path: Path, backends) -> None:
    (b,) = backends(1)
    # The backend's own port is taken: run cannot listen there.
    path = _write(tmp_path, "busy.yaml", GOOD.format(port=b.port, backend=b.address))
    result = _run("run", "-c", str(path), timeout=20)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_run_serves_then_sigterm_exits_0(backends, run_proxy_subprocess) -> None:
    (b,) = backends(1)
    proc = run_proxy_subprocess(GOOD.format(port="{port}", backend=b.address))
    with RawClient(proc.port) as client:
        resp = client.request("GET", "/")
        assert resp.status == 200
        assert resp.text == "b0\n"
    start = time.monotonic()
    assert proc.terminate(timeout=10) == 0, proc.stderr_text()
    assert time.monotonic() - start < 5
    assert not port_answers(proc.port)
    assert "Traceback" not in proc.stderr_text()


def test_sigterm_lets_in_flight_request_finish(backends, run_proxy_subprocess) -> None:
    (b,) = backends(1)
    proc = run_proxy_subprocess(GOOD.format(port="{port}", backend=b.address))
    with RawClient(proc.port, timeout=10) as client:
        client.send(b"GET /slow?delay=0.5 HTTP/1.1\r\nHost: t\r\n\r\n")
        b.wait_for_requests(1)
        os.kill(proc.pid, signal.SIGTERM)
        resp = client.read_response()
        assert resp.status == 200
        assert resp.text == "slow\n"
        assert client.is_closed(timeout=5)
    assert proc.proc.wait(10) == 0
