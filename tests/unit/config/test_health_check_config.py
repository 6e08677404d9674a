"""health_check and resolve_interval in YAML: what loads, and the reasons for what does not."""

from __future__ import annotations

import textwrap

import pytest

from phoenix_lb.config.loader import ConfigError, load_config_text
from phoenix_lb.config.schema import PhoenixConfig
from phoenix_lb.health.checker import CheckSettings, targets_from_config
from phoenix_lb.upstream.resolver import NameEntry, names_from_config

HEAD = """\
listeners:
  - name: public
    bind: ["127.0.0.1:8080"]
    routes:
      - path: /
        upstream: app
upstreams:
  app:
    servers:
      - address: 127.0.0.1:9001
      - address: master-orchestrator-0.master-orchestrator:8080
"""


def load(extra: str) -> PhoenixConfig:
    return load_config_text(HEAD + textwrap.indent(textwrap.dedent(extra), "    "), "t.yaml")


def errors(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(extra)
    return info.value.errors


def test_the_issue_example_loads() -> None:
    config = load(
        """\
        health_check:
          type: http
          interval: 3s
          timeout: 1s
          rise: 2
          fall: 5
          send: "HEAD /health HTTP/1.0\\r\\n\\r\\n"
          expect: [2xx, 3xx]
          initial_state: up
        """
    )
    check = config.upstreams["app"].health_check
    assert check is not None
    assert CheckSettings.from_config(check).send == b"HEAD /health HTTP/1.0\r\n\r\n"
    assert config.upstreams["app"].resolve_interval == 30.0


def test_single_quoted_send_and_codes() -> None:
    config = load(
        """\
        resolve_interval: 5s
        health_check:
          send: 'GET /ready HTTP/1.1\\r\\nHost: app\\r\\n\\r\\n'
          expect: [200, 204]
          port: 9100
        """
    )
    check = config.upstreams["app"].health_check
    assert check is not None
    settings = CheckSettings.from_config(check)
    assert settings.send == b"GET /ready HTTP/1.1\r\nHost: app\r\n\r\n"
    assert settings.expect == frozenset({200, 204})
    assert config.upstreams["app"].resolve_interval == 5.0


def test_plain_send() -> None:
    check = load("health_check: {send: HEAD /ping HTTP/1.0\\r\\n\\r\\n}").upstreams["app"]
    assert check.health_check is not None
    assert CheckSettings.from_config(check.health_check).send == b"HEAD /ping HTTP/1.0\r\n\r\n"


def test_no_health_check_by_default() -> None:
    assert load("").upstreams["app"].health_check is None


@pytest.mark.parametrize(
    ("extra", "where", "reason"),
    [
        ("health_check: {rise: 0}", "health_check.rise", "must be at least 1"),
        ("health_check: {fall: 0}", "health_check.fall", "must be at least 1"),
        ("health_check: {interval: 1s, timeout: 2s}", "health_check.timeout", "must not exceed"),
        ("health_check: {expect: [2xx, 6xx]}", "health_check.expect[1]", "status class"),
        ("health_check: {expect: []}", "health_check.expect", ""),
        ("health_check: {type: udp}", "health_check.type", ""),
        ('health_check: {send: "HEAD / HTTP/1.0"}', "health_check.send", "blank line"),
        ('health_check: {send: "GET / HTTP/1.1\\r\\n\\r\\n"}', "health_check.send", "Host"),
        ("health_check: {type: tcp, send: x}", "health_check.send", "type tcp only connects"),
        ("health_check: {type: tcp, expect: [200]}", "health_check.expect", "type tcp"),
        ("health_check: {initial_state: maybe}", "health_check.initial_state", ""),
        ("health_check: {port: 70000}", "health_check.port", ""),
        ("health_check: {intervall: 3s}", "health_check.intervall", ""),
        ("resolve_interval: 0s", "resolve_interval", ""),
    ],
)
def test_errors_name_the_key_and_the_reason(extra: str, where: str, reason: str) -> None:
    found = errors(extra)
    assert any(f"upstreams.app.{where}:" in e and reason in e for e in found), found


def test_timeout_equal_to_interval_is_allowed() -> None:
    check = load("health_check: {interval: 1s, timeout: 1s}").upstreams["app"].health_check
    assert check is not None and check.timeout == check.interval


def test_targets_and_names_from_config() -> None:
    config = load("health_check: {type: tcp}")
    targets = targets_from_config(config.upstreams)
    assert [(t.address, t.connect_host, t.port) for t in targets] == [
        ("127.0.0.1:9001", "127.0.0.1", 9001),
        ("master-orchestrator-0.master-orchestrator:8080", None, 8080),
    ]
    resolved = {("app", "master-orchestrator-0.master-orchestrator:8080"): "10.0.0.7"}
    targets = targets_from_config(config.upstreams, resolved)
    assert targets[1].connect_host == "10.0.0.7"
    assert names_from_config(config.upstreams) == [
        NameEntry(
            "app",
            "master-orchestrator-0.master-orchestrator:8080",
            "master-orchestrator-0.master-orchestrator",
            8080,
        )
    ]
