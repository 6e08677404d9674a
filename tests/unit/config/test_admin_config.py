"""``admin.allowed_hosts`` in the config: what loads, and how a wrong entry is reported."""

from __future__ import annotations

import pytest

from phoenix_lb.config.loader import ConfigError, load_config_text

BASE = """\
listeners:
  - name: public
    bind: ["127.0.0.1:8080"]
    routes: [{path: /, upstream: app}]
upstreams:
  app:
    servers: [{address: 127.0.0.1:9001}]
"""


def test_allowed_hosts_is_empty_by_default() -> None:
    config = load_config_text(BASE, "phoenix.yaml")
    assert config.admin is not None and config.admin.allowed_hosts == []


def test_allowed_hosts_load() -> None:
    text = (
        BASE
        + 'admin:\n  allowed_hosts: ["lb1.example.net:9000", admin.example.net, "[::1]:19000"]\n'
    )
    config = load_config_text(text, "phoenix.yaml")
    assert config.admin is not None
    assert config.admin.allowed_hosts == [
        "lb1.example.net:9000",
        "admin.example.net",
        "[::1]:19000",
    ]


@pytest.mark.parametrize("entry", ['"http://lb1:9000"', '"lb1:9000/"', '"*"', '"lb1:x"'])
def test_a_wrong_entry_is_an_error_with_its_key_path(entry: str) -> None:
    text = BASE + f"admin:\n  allowed_hosts: [{entry}]\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "phoenix.yaml")
    (error,) = info.value.errors
    assert "admin.allowed_hosts" in error and entry.strip('"') in error, error
