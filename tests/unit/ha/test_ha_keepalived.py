"""keepalived.conf rendering (phoenix_lb.ha.keepalived): pure, compared as text."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from phoenix_lb.config.loader import load_config_text
from phoenix_lb.config.schema import PhoenixConfig
from phoenix_lb.ha.keepalived import (
    RenderError,
    ScriptCommands,
    default_health_url,
    health_url,
    render,
)

BASE: dict[str, Any] = {
    "listeners": [
        {"name": "public", "bind": ["0.0.0.0:8080"], "routes": [{"path": "/", "upstream": "mo"}]}
    ],
    "upstreams": {"mo": {"servers": [{"address": "10.0.1.10:8080"}]}},
}

PRIMARY: dict[str, Any] = {
    "interface": "eth0",
    "virtual_router_id": 51,
    "priority": 150,
    "peers": ["10.0.0.12"],
    "unicast_src_ip": "10.0.0.11",
    "virtual_ips": ["192.168.1.10/24"],
}

COMMANDS = ScriptCommands(python="/usr/bin/python3.11", hooks="/opt/phoenix_lb/ha/hooks.py")


def config(ha: dict[str, Any] | None, **top: Any) -> PhoenixConfig:
    data = {**BASE, **top}
    if ha is not None:
        data["ha"] = ha
    return load_config_text(yaml.safe_dump(data), "phoenix.yaml")


def test_primary_node_complete_text() -> None:
    text = render(config(PRIMARY), commands=COMMANDS, source="phoenix.yaml", version="9.9")
    assert text == EXPECTED_PRIMARY


EXPECTED_PRIMARY = """\
# keepalived.conf for this Phoenix LB node, rendered by phoenix-lb 9.9 from phoenix.yaml.
# Change the ha: section and render again rather than editing this file.

global_defs {
    # Checks and notify scripts run as root; keepalived refuses to run any
    # whose path a non-root user could modify.
    script_user root
    enable_script_security
    vrrp_version 3
}

# GET http://127.0.0.1:9000/health: 200 keeps this node eligible for the virtual IPs.
# Weight 0: after 2 failures in a row the instance goes to FAULT and
# releases the virtual IPs, and the peer takes over at once;
# 2 successes in a row make this node eligible again.
vrrp_script chk_phoenix {
    script "/usr/bin/python3.11 -I /opt/phoenix_lb/ha/hooks.py check --url http://127.0.0.1:9000/health --timeout 1"
    interval 1
    timeout 2
    fall 2
    rise 2
    weight 0
}

vrrp_instance phoenix_lb_51 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 150
    version 3
    advert_int 1
    # A returning node with a higher priority takes the virtual IPs back.
    unicast_src_ip 10.0.0.11
    unicast_peer {
        10.0.0.12
    }
    # Ignore adverts whose source is not one of the peers above.
    check_unicast_src
    virtual_ipaddress {
        192.168.1.10/24 dev eth0
    }
    track_script {
        chk_phoenix
    }
}
"""  # noqa: E501 - keepalived lines as rendered


def test_multicast_when_there_are_no_peers() -> None:
    text = render(config({**PRIMARY, "peers": [], "unicast_src_ip": None}), commands=COMMANDS)
    assert "unicast_peer" not in text
    assert "unicast_src_ip" not in text
    assert "adverts go to the VRRP multicast group" in text


def test_nopreempt_and_preempt_delay() -> None:
    text = render(config({**PRIMARY, "preempt": False}), commands=COMMANDS)
    assert "    nopreempt\n" in text
    assert "preempt_delay" not in text
    text = render(config({**PRIMARY, "preempt_delay": "1m30s"}), commands=COMMANDS)
    assert "    preempt_delay 90\n" in text
    assert "nopreempt" not in text


def test_master_initial_state_and_fractional_advert() -> None:
    text = render(
        config({**PRIMARY, "state": "MASTER", "advert_interval": "250ms"}), commands=COMMANDS
    )
    assert "    state MASTER\n" in text
    assert "    advert_int 0.25\n" in text


def test_check_settings() -> None:
    ha = {**PRIMARY, "check_interval": "3s", "check_timeout": "1500ms", "check_fall": 4}
    text = render(config(ha), commands=COMMANDS)
    assert '--timeout 1.5"\n    interval 3\n    timeout 3\n    fall 4\n    rise 2\n' in text


@pytest.mark.parametrize("auth_type", ["pass", "ah"])
def test_vrrpv2_authentication(auth_type: str) -> None:
    ha = {**PRIMARY, "vrrp_version": 2, "auth": {"type": auth_type, "secret_env": "S"}}
    text = render(config(ha), commands=COMMANDS, secret="k3Vq9-Zw")
    assert "    vrrp_version 2\n" in text
    assert "    version 2\n" in text
    assert (
        f"    authentication {{\n        auth_type {auth_type.upper()}\n"
        "        auth_pass k3Vq9-Zw\n    }\n"
    ) in text


def test_no_authentication_block_without_auth() -> None:
    assert "authentication" not in render(config(PRIMARY), commands=COMMANDS, secret="ignored!")


def test_auth_without_secret_is_refused() -> None:
    ha = {**PRIMARY, "vrrp_version": 2, "auth": {"type": "pass", "secret_env": "S"}}
    with pytest.raises(RenderError, match="needs a secret"):
        render(config(ha), commands=COMMANDS)


def test_ipv6() -> None:
    ha = {**PRIMARY, "peers": ["fd00::12"], "unicast_src_ip": None, "virtual_ips": ["fd00::10/64"]}
    text = render(config(ha), commands=COMMANDS)
    assert "        fd00::10/64 dev eth0\n" in text
    assert "        fd00::12\n" in text


def test_notify_hooks() -> None:
    ha = {**PRIMARY, "notify": "/usr/local/bin/page-oncall", "state_file": "/run/phoenix/vrrp"}
    text = render(config(ha), commands=COMMANDS)
    for state in ("MASTER", "BACKUP", "FAULT", "STOP"):
        assert (
            f'    notify_{state.lower()} "/usr/bin/python3.11 -I /opt/phoenix_lb/ha/hooks.py '
            f'notify --state-file /run/phoenix/vrrp {state}"\n'
        ) in text
    assert '    notify "/usr/local/bin/page-oncall"\n' in text


def test_curl_checker() -> None:
    commands = ScriptCommands(python="/usr/bin/python3", hooks="/h.py", curl="/usr/bin/curl")
    text = render(config(PRIMARY), commands=commands)
    assert (
        'script "/usr/bin/curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:9000/health"' in text
    )


def test_health_url_from_config() -> None:
    cfg = config({**PRIMARY, "health_url": "http://127.0.0.1:9100/health"})
    assert health_url(cfg) == "http://127.0.0.1:9100/health"
    assert "--url http://127.0.0.1:9100/health " in render(cfg, commands=COMMANDS)


@pytest.mark.parametrize(
    ("admin", "url"),
    [
        ({"bind": "127.0.0.1:9000"}, "http://127.0.0.1:9000/health"),
        ({"bind": "127.0.0.2:9500"}, "http://127.0.0.2:9500/health"),
        ({"bind": "0.0.0.0:9500", "auth_token_file": "/etc/t"}, "http://127.0.0.1:9500/health"),
        ({"bind": "[::]:9000", "auth_token_file": "/etc/t"}, "http://[::1]:9000/health"),
        ({"bind": "[::1]:9001"}, "http://[::1]:9001/health"),
    ],
)
def test_default_health_url_follows_the_admin_bind(admin: dict[str, Any], url: str) -> None:
    cfg = config(PRIMARY, admin=admin)
    assert default_health_url(cfg) == url
    assert f"--url {url} " in render(cfg, commands=COMMANDS)


def test_default_health_url_with_the_default_admin_section() -> None:
    assert default_health_url(config(None)) == "http://127.0.0.1:9000/health"


@pytest.mark.parametrize(
    ("admin", "message"),
    [(None, "admin: null disables the admin listener"), ({"bind": "127.0.0.1:0"}, "no fixed port")],
)
def test_no_usable_admin_health(admin: dict[str, Any] | None, message: str) -> None:
    cfg = config(PRIMARY, admin=admin)
    with pytest.raises(RenderError, match=message):
        render(cfg, commands=COMMANDS)
    # An explicit health_url needs no admin listener.
    explicit = config({**PRIMARY, "health_url": "http://127.0.0.1:8080/health"}, admin=admin)
    assert "--url http://127.0.0.1:8080/health " in render(explicit, commands=COMMANDS)


def test_no_ha_section() -> None:
    with pytest.raises(RenderError, match="no ha: section"):
        render(config(None), commands=COMMANDS)


@pytest.mark.parametrize(
    "commands",
    [
        ScriptCommands(python="/opt/my python/bin/python", hooks="/h.py"),
        ScriptCommands(python='/opt/"x"/python', hooks="/h.py"),
        ScriptCommands(python="/usr/bin/python3", hooks="/opt/#/hooks.py"),
    ],
)
def test_unsafe_script_words_are_refused(commands: ScriptCommands) -> None:
    with pytest.raises(RenderError, match="cannot be used in a keepalived script line"):
        render(config(PRIMARY), commands=commands)
