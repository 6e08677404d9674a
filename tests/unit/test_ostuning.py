"""OS tuning checks (phoenix_lb.ostuning) and ``phoenix-lb doctor``, against fake /proc trees."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from phoenix_lb import ostuning
from phoenix_lb.commands import doctor
from phoenix_lb.ostuning import NOFILE_HARD, NOFILE_SOFT, evaluate, inspect, sysctl_conf

DEBIAN_DEFAULTS = {
    "net/core/somaxconn": "4096\n",
    "net/ipv4/tcp_max_syn_backlog": "1024\n",
    "net/ipv4/tcp_fin_timeout": "60\n",
    "net/ipv4/tcp_keepalive_time": "7200\n",
    "net/ipv4/ip_local_port_range": "32768\t60999\n",
    "fs/file-max": "9223372036854775807\n",
}

TUNED = {
    "net/core/somaxconn": "65535\n",
    "net/ipv4/tcp_max_syn_backlog": "262144\n",
    "net/ipv4/tcp_fin_timeout": "15\n",
    "net/ipv4/tcp_keepalive_time": "300\n",
    "net/ipv4/ip_local_port_range": "1024\t65535\n",
    "fs/file-max": "2000000\n",
}

LIMITS = """\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            {soft:<20} {hard:<20} files
Max locked memory         8388608              8388608              bytes
"""


def fake_proc(
    root: Path, sysctls: dict[str, str], soft: str = "1024", hard: str = "524288"
) -> Path:
    for name, value in sysctls.items():
        path = root / "sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "self" / "limits").write_text(LIMITS.format(soft=soft, hard=hard))
    return root


def by_name(findings: list[ostuning.Finding]) -> dict[str, ostuning.Finding]:
    return {finding.name: finding for finding in findings}


def test_debian_defaults_are_flagged(tmp_path: Path) -> None:
    found = by_name(inspect(fake_proc(tmp_path, DEBIAN_DEFAULTS)))
    assert found["net.core.somaxconn"].status == "LOW"
    assert found["net.core.somaxconn"].current == "4096"
    assert found["net.core.somaxconn"].command == "sysctl -w net.core.somaxconn=65535"
    assert found["net.ipv4.tcp_max_syn_backlog"].status == "LOW"
    assert found["net.ipv4.tcp_fin_timeout"].status == "HIGH"
    assert found["net.ipv4.tcp_keepalive_time"].status == "HIGH"
    port_range = found["net.ipv4.ip_local_port_range"]
    assert (port_range.status, port_range.current) == ("LOW", "32768 60999")
    assert port_range.command == 'sysctl -w net.ipv4.ip_local_port_range="1024 65535"'
    assert found["fs.file-max"].status == "OK"
    # The soft limit is low, but phoenix-lb run raises it: the hard limit allows it.
    assert found[NOFILE_SOFT].status == "OK"
    assert "raises it" in found[NOFILE_SOFT].note
    assert found[NOFILE_HARD].status == "OK"
    assert "LimitNOFILE=65535" in found[NOFILE_HARD].command


def test_tuned_machine_is_all_ok(tmp_path: Path) -> None:
    findings = inspect(fake_proc(tmp_path, TUNED, soft="65535", hard="65535"))
    assert [f.status for f in findings] == ["OK"] * len(ostuning.SETTINGS)
    assert not any(f.off for f in findings)


def test_low_hard_limit(tmp_path: Path) -> None:
    found = by_name(inspect(fake_proc(tmp_path, TUNED, soft="1024", hard="4096")))
    assert found[NOFILE_SOFT].status == "LOW"
    assert found[NOFILE_HARD].status == "LOW"


def test_unlimited_counts_as_enough(tmp_path: Path) -> None:
    found = by_name(inspect(fake_proc(tmp_path, TUNED, soft="unlimited", hard="unlimited")))
    assert found[NOFILE_SOFT].status == found[NOFILE_HARD].status == "OK"


def test_missing_values_are_unknown_not_off(tmp_path: Path) -> None:
    # A container without net.* sysctls and without /proc/self/limits.
    tmp_path.mkdir(exist_ok=True)
    findings = inspect(tmp_path)
    assert {f.status for f in findings} == {"UNKNOWN"}
    assert not any(f.off for f in findings)


def test_garbage_is_unknown() -> None:
    found = by_name(evaluate({"net.core.somaxconn": "lots", "net.ipv4.ip_local_port_range": "9 1"}))
    assert found["net.core.somaxconn"].status == "UNKNOWN"
    assert found["net.ipv4.ip_local_port_range"].status == "UNKNOWN"


def test_sysctl_conf_never_makes_a_setting_worse(tmp_path: Path) -> None:
    text = sysctl_conf(inspect(fake_proc(tmp_path, TUNED)))
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "net.core.somaxconn = 65535",
        "net.ipv4.tcp_max_syn_backlog = 262144",  # larger than recommended: kept
        "net.ipv4.tcp_fin_timeout = 15",  # shorter than recommended: kept
        "net.ipv4.tcp_keepalive_time = 300",
        "net.ipv4.ip_local_port_range = 1024 65535",
        "fs.file-max = 2000000",
    ]


def test_sysctl_conf_from_defaults(tmp_path: Path) -> None:
    text = sysctl_conf(inspect(fake_proc(tmp_path, DEBIAN_DEFAULTS)))
    assert "net.core.somaxconn = 65535\n" in text
    assert "net.ipv4.tcp_fin_timeout = 30\n" in text
    assert "net.ipv4.ip_local_port_range = 1024 65535\n" in text
    assert "# (was 4096; recommended 65535)" in text
    assert "nofile" not in text.split("\n\n", 1)[1]  # rlimits are not sysctls
    assert all(len(line) <= 80 for line in text.splitlines())


def run_doctor(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    doctor.register(parser.add_subparsers())
    args = parser.parse_args(["doctor", *argv])
    result: int = args.func(args)
    return result


def test_doctor_prints_every_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = fake_proc(tmp_path / "proc", DEBIAN_DEFAULTS)
    assert run_doctor("--proc", str(proc)) == 0
    out = capsys.readouterr().out
    for setting in ostuning.SETTINGS:
        assert setting.name in out
    row = next(line for line in out.splitlines() if line.startswith("net.core.somaxconn"))
    assert row.split()[:4] == ["net.core.somaxconn", "4096", "65535", "LOW"]
    assert row.endswith("sysctl -w net.core.somaxconn=65535")
    assert "doctor changes nothing" in out


def test_doctor_strict_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_doctor("--proc", str(fake_proc(tmp_path / "a", DEBIAN_DEFAULTS)), "--strict") == 2
    tuned = fake_proc(tmp_path / "b", TUNED, soft="65535", hard="65535")
    assert run_doctor("--proc", str(tuned), "--strict") == 0
    assert run_doctor("--proc", str(tmp_path / "empty"), "--strict") == 0


def test_doctor_writes_sysctl_file_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = fake_proc(tmp_path / "proc", DEBIAN_DEFAULTS)
    before = {p: p.read_text() for p in proc.rglob("*") if p.is_file()}
    target = tmp_path / "60-phoenix-lb.conf"
    assert run_doctor("--proc", str(proc), "--write-sysctl", str(target)) == 0
    assert target.read_text() == sysctl_conf(inspect(proc))
    assert target.stat().st_mode & 0o777 == 0o644
    assert f"sysctl -p {target}" in capsys.readouterr().out
    # The (fake) kernel settings are untouched.
    assert {p: p.read_text() for p in proc.rglob("*") if p.is_file()} == before
