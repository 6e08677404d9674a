"""The ``ha:`` section of the schema: what keepalived would get wrong is refused up front."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from phoenix_lb.config.loader import ConfigError, load_config_text
from phoenix_lb.config.schema import HaConfig, PhoenixConfig

BASE = """\
listeners:
  - name: public
    bind: ["127.0.0.1:8080"]
    routes: [{path: /, upstream: mo}]
upstreams:
  mo:
    servers: [{address: 127.0.0.1:9001}]
"""

MINIMAL_HA: dict[str, Any] = {
    "interface": "eth0",
    "virtual_router_id": 51,
    "virtual_ips": ["192.168.1.10/24"],
}


def load(ha: dict[str, Any] | None) -> PhoenixConfig:
    text = BASE + (yaml.safe_dump({"ha": ha}) if ha is not None else "")
    return load_config_text(text, "phoenix.yaml")


def errors(**changes: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load({**MINIMAL_HA, **changes})
    return info.value.errors


def test_ha_is_optional() -> None:
    assert load(None).ha is None


def test_defaults() -> None:
    ha = load(MINIMAL_HA).ha
    assert isinstance(ha, HaConfig)
    assert ha.priority == 100
    assert ha.state == "BACKUP"
    assert ha.vrrp_version == 3
    assert ha.advert_interval == 1.0
    assert ha.preempt is True
    assert ha.preempt_delay == 0.0
    assert ha.auth.type == "none"
    assert ha.peers == []
    assert ha.health_url is None
    assert (ha.check_interval, ha.check_fall, ha.check_rise) == (1.0, 2, 2)


def test_full_section() -> None:
    ha = load(
        {
            **MINIMAL_HA,
            "priority": 150,
            "state": "BACKUP",
            "peers": ["10.0.0.2"],
            "unicast_src_ip": "10.0.0.1",
            "vrrp_version": 2,
            "advert_interval": "2s",
            "preempt_delay": "30s",
            "auth": {"type": "ah", "secret_env": "VRRP_SECRET"},
            "health_url": "http://127.0.0.1:9100/health",
            "notify": "/usr/local/bin/vrrp-notify",
            "state_file": "/run/phoenix-lb/vrrp.state",
        }
    ).ha
    assert ha is not None
    assert ha.preempt_delay == 30.0
    assert ha.auth.secret_env == "VRRP_SECRET"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"virtual_router_id": 0}, "ha.virtual_router_id: must be at least 1, got 0"),
        ({"virtual_router_id": 256}, "ha.virtual_router_id: must be at most 255, got 256"),
        ({"priority": 255}, "ha.priority: must be at most 254, got 255"),
        ({"state": "master"}, "ha.state: expected MASTER or BACKUP, got 'master'"),
        ({"vrrp_version": 4}, "ha.vrrp_version: expected 2 or 3, got the number 4"),
        ({"virtual_ips": ["192.168.1.10"]}, "write the prefix length, e.g. 192.168.1.10/24"),
        ({"virtual_ips": []}, "ha.virtual_ips: must not be empty"),
        ({"virtual_ips": ["10.0.0.1/24", "fd00::1/64"]}, "must all be IPv4 or all IPv6"),
        ({"virtual_ips": ["10.0.0.1/24", "10.0.0.1/32"]}, "10.0.0.1 is listed twice"),
        ({"peers": ["lb2.example"]}, "peer 'lb2.example' is not an IP address"),
        ({"peers": ["10.0.0.2", "10.0.0.2"]}, "peer 10.0.0.2 is listed twice"),
        ({"interface": "a-very-long-interface"}, "is not a network interface name"),
        ({"preempt": "yes"}, "ha.preempt: expected true or false, got 'yes'"),
        ({"health_url": "127.0.0.1:9000/health"}, "expected an http:// or https:// URL"),
        ({"state_file": "vrrp.state"}, "write an absolute path"),
        ({"check_interval": "500ms"}, "ha.check_interval: must be at least 1s, got 500ms"),
        ({"check_interval": "1500ms"}, "whole number of seconds"),
        ({"preempt_delay": "20m"}, "ha.preempt_delay: must be at most 1000s, got 20m"),
    ],
)
def test_field_errors(changes: dict[str, Any], expected: str) -> None:
    assert any(expected in line for line in errors(**changes)), errors(**changes)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # keepalived ignores nopreempt / preempt_delay on an instance starting as MASTER.
        ({"state": "MASTER", "preempt": False}, "preempt: false needs state: BACKUP"),
        ({"state": "MASTER", "preempt_delay": "10s"}, "ha.preempt_delay: needs state: BACKUP"),
        ({"preempt": False, "preempt_delay": "10s"}, "no effect with preempt: false"),
        # VRRPv3 removed authentication.
        (
            {"auth": {"type": "pass", "secret_env": "S"}},
            "auth type pass: VRRPv3 has no authentication",
        ),
        (
            {"vrrp_version": 2, "virtual_ips": ["fd00::10/64"]},
            "IPv6 virtual IPs need vrrp_version: 3",
        ),
        ({"peers": ["fd00::2"]}, "VRRP adverts and virtual IPs share one family"),
        ({"unicast_src_ip": "10.0.0.1"}, "ha.unicast_src_ip: needs peers"),
        ({"peers": ["10.0.0.1"], "unicast_src_ip": "10.0.0.1"}, "also listed in peers"),
        ({"vrrp_version": 2, "advert_interval": "500ms"}, "ha.advert_interval: VRRPv2 takes"),
        ({"advert_interval": "41s"}, "VRRPv3 takes 10ms steps"),
        ({"advert_interval": "1005ms"}, "VRRPv3 takes 10ms steps"),
    ],
)
def test_consistency_errors(changes: dict[str, Any], expected: str) -> None:
    lines = errors(**changes)
    assert any(expected in line for line in lines), lines


def test_nopreempt_with_backup_state_is_fine() -> None:
    ha = load({**MINIMAL_HA, "state": "BACKUP", "preempt": False}).ha
    assert ha is not None and ha.preempt is False


def test_vrrpv3_accepts_centisecond_adverts() -> None:
    ha = load({**MINIMAL_HA, "advert_interval": "250ms"}).ha
    assert ha is not None and ha.advert_interval == 0.25


@pytest.mark.parametrize("key", ["auth_pass", "password", "secret", "pass"])
def test_secret_in_yaml_is_refused_with_a_pointer(key: str) -> None:
    lines = errors(vrrp_version=2, auth={"type": "pass", key: "phoenix123"})
    assert any(
        "never read from the config file" in line and "secret_file" in line for line in lines
    ), lines


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"type": "pass"}, "type pass needs exactly one of secret_file or secret_env"),
        (
            {"type": "ah", "secret_file": "/etc/s", "secret_env": "S"},
            "type ah needs exactly one of secret_file or secret_env",
        ),
        ({"type": "none", "secret_env": "S"}, "type none takes no secret_file or secret_env"),
        ({"type": "pass", "secret_env": "1BAD"}, "'1BAD' is not an environment variable name"),
        ({"type": "md5", "secret_env": "S"}, "expected none or pass or ah"),
    ],
)
def test_auth_errors(auth: dict[str, Any], expected: str) -> None:
    lines = errors(vrrp_version=2, auth=auth)
    assert any(expected in line for line in lines), lines
