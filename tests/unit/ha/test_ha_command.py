"""``phoenix-lb ha keepalived`` and ``ha notify`` (commands/ha.py), called in-process."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

from phoenix_lb.commands import ha
from phoenix_lb.ha import hooks

CONFIG = """\
listeners:
  - name: public
    bind: ["0.0.0.0:8080"]
    routes: [{path: /, upstream: mo}]
upstreams:
  mo:
    servers: [{address: 10.0.1.10:8080}]
ha:
  interface: eth0
  virtual_router_id: 51
  priority: 150
  vrrp_version: 2
  peers: [10.0.0.12]
  virtual_ips: [192.168.1.10/24]
  auth: {type: pass, secret_file: vrrp.secret}
"""


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    ha.register(parser.add_subparsers())
    args = parser.parse_args(["ha", *argv])
    result: int = args.func(args)
    return result


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "phoenix.yaml"
    path.write_text(CONFIG)
    return path


def secret(conf: Path, text: str, mode: int = 0o600) -> None:
    path = conf.parent / "vrrp.secret"
    path.write_text(text)
    os.chmod(path, mode)


def test_renders_to_a_private_file(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret(conf, "k3Vq9-Zw\n")
    out = conf.parent / "keepalived.conf"
    assert run("keepalived", "-c", str(conf), "-o", str(out), "--python", sys.executable) == 0
    text = out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600  # it holds the VRRP secret
    assert "        auth_pass k3Vq9-Zw\n" in text
    python = os.path.realpath(sys.executable)  # what keepalived would run anyway
    hooks_py = os.path.realpath(hooks.__file__)
    assert f'script "{python} -I {hooks_py} check --url http://127.0.0.1:9000/health' in text
    assert f"keepalived -t -f {out}" in capsys.readouterr().err


def test_renders_to_stdout(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret(conf, "k3Vq9-Zw")
    assert run("keepalived", "-c", str(conf), "--checker", "curl") == 0
    out = capsys.readouterr().out
    assert out.startswith("# keepalived.conf for this Phoenix LB node")
    assert (
        'script "/usr/bin/curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:9000/health"' in out
    )


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        ("phoenix123", 0o600, "the seed design's published example password"),
        ("12345678", 0o644, "readable or writable by group or others (mode 0644)"),
        ("abc", 0o600, "has 3 characters; use exactly 8"),
        ("abcdefghij", 0o600, "has 10 characters; use exactly 8"),
    ],
)
def test_refuses_bad_secrets(
    conf: Path, capsys: pytest.CaptureFixture[str], text: str, mode: int, message: str
) -> None:
    secret(conf, text, mode)
    out = conf.parent / "keepalived.conf"
    assert run("keepalived", "-c", str(conf), "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{conf}: ha.auth: secret file vrrp.secret: ")
    assert message in err
    assert not out.exists()


def test_secret_from_environment(
    conf: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf.write_text(CONFIG.replace("secret_file: vrrp.secret", "secret_env: PHX_VRRP_SECRET"))
    monkeypatch.delenv("PHX_VRRP_SECRET", raising=False)
    assert run("keepalived", "-c", str(conf)) == 1
    assert "$PHX_VRRP_SECRET: environment variable not set" in capsys.readouterr().err
    monkeypatch.setenv("PHX_VRRP_SECRET", "phoenix123")
    assert run("keepalived", "-c", str(conf)) == 1
    monkeypatch.setenv("PHX_VRRP_SECRET", "Zq8-rT4w")
    assert run("keepalived", "-c", str(conf)) == 0
    assert "auth_pass Zq8-rT4w" in capsys.readouterr().out


def test_invalid_config_or_no_ha_section(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf.write_text(CONFIG.replace("priority: 150", "priority: 255"))
    assert run("keepalived", "-c", str(conf)) == 1
    assert "ha.priority: must be at most 254, got 255" in capsys.readouterr().err
    conf.write_text(CONFIG.split("ha:")[0])
    assert run("keepalived", "-c", str(conf)) == 1
    assert "no ha: section" in capsys.readouterr().err
    assert run("status", "-c", str(conf)) == 1


def test_notify_records_the_state(tmp_path: Path) -> None:
    state = tmp_path / "vrrp.state"
    # keepalived may append arguments; they are ignored.
    assert (
        run("notify", "--state-file", str(state), "MASTER", "INSTANCE", "x", "MASTER", "150") == 0
    )
    assert state.read_text() == "MASTER\n"
    assert run("notify", "--state-file", str(tmp_path / "no" / "dir"), "FAULT") == 1
