"""Which node holds the VIPs: ``ip -o addr`` parsing and the verdict (phoenix_lb.ha.status)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from phoenix_lb.ha.hooks import record_state
from phoenix_lb.ha.status import (
    EXIT_CODES,
    decide,
    parse_ip_addr,
    read_state_file,
)

IP_OUTPUT = """\
2: eth0    inet 10.250.7.11/24 brd 10.250.7.255 scope global eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.250.7.100/24 scope global secondary eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet6 fe80::1c3f:2bff:fe4d:a0c1/64 scope link \\       valid_lft forever preferred_lft forever
"""  # noqa: E501 - real ip output

VIP = ["10.250.7.100/24"]


def addresses(*texts: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(text) for text in texts]


def test_parse_ip_addr() -> None:
    assert parse_ip_addr(IP_OUTPUT) == addresses(
        "10.250.7.11", "10.250.7.100", "fe80::1c3f:2bff:fe4d:a0c1"
    )
    assert parse_ip_addr("") == []
    assert parse_ip_addr("2: eth0 inet garbage\n") == []


def test_master_when_every_vip_is_here() -> None:
    status = decide(VIP, parse_ip_addr(IP_OUTPUT))
    assert (status.role, status.exit_code) == ("MASTER", 0)
    assert status.held == ("10.250.7.100",)


def test_backup_when_no_vip_is_here() -> None:
    status = decide(VIP, addresses("10.250.7.12"), keepalived_state="BACKUP")
    assert (status.role, status.exit_code) == ("BACKUP", 3)
    assert status.missing == ("10.250.7.100",)


def test_fault_is_a_backup_with_keepalived_state_shown() -> None:
    status = decide(VIP, addresses("10.250.7.11"), keepalived_state="FAULT")
    assert status.role == "BACKUP"
    assert status.keepalived_state == "FAULT"


@pytest.mark.parametrize(
    ("vips", "present", "state", "reason"),
    [
        (["10.0.0.1/24", "10.0.0.2/24"], ["10.0.0.1"], None, "only some virtual IPs"),
        (VIP, ["10.250.7.100"], "FAULT", "keepalived last reported FAULT"),
        (VIP, [], "MASTER", "keepalived last reported MASTER but"),
    ],
)
def test_unknown_when_the_evidence_disagrees(
    vips: list[str], present: list[str], state: str | None, reason: str
) -> None:
    status = decide(vips, addresses(*present), keepalived_state=state)
    assert (status.role, status.exit_code) == ("unknown", 4)
    assert reason in status.reason


def test_unknown_when_addresses_cannot_be_read() -> None:
    status = decide(VIP, None, problem='Device "eth9" does not exist.')
    assert status.role == "unknown"
    assert "eth9" in status.reason


def test_exit_codes_leave_1_for_config_errors() -> None:
    assert sorted(EXIT_CODES.values()) == [0, 3, 4]


def test_state_file_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "vrrp.state")
    assert read_state_file(path) == (None, None)
    record_state(path, "MASTER")
    assert Path(path).read_text() == "MASTER\n"
    assert read_state_file(path) == ("MASTER", None)
    with pytest.raises(ValueError, match="unknown VRRP state"):
        record_state(path, "LEADER")
    Path(path).write_text("garbage\n")
    state, problem = read_state_file(path)
    assert state is None and problem is not None and "unexpected content" in problem
