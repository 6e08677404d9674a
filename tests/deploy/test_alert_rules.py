"""deploy/prometheus: alert rules that promtool accepts and that fire exactly when they should.

``alerts_test.yml`` holds the promtool unit tests (input series, the alerts
expected at each evaluation time, quiet cases included); this module runs
them, and checks what promtool cannot: every alert is tested both ways, uses
only documented metrics, and carries the labels and annotations routing and
people need.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import metrics_catalogue
from tests.deploy.tools import require

PROMETHEUS_DIR = metrics_catalogue.ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"

EXPECTED_ALERTS = {
    "HighErrorRate",
    "BackendDown",
    "AllServersDown",
    "HighP99Latency",
    "RateLimitingSpike",
    "ConfigReloadFailed",
    "WorkerRestarts",
    "TLSCertificateExpiringSoon",
    "TLSCertificateExpired",
    "LoadBalancerDown",
}
SEVERITIES = {"critical", "warning"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load(ALERTS)["groups"] for rule in group["rules"]]


def _promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    promtool = require("promtool", "prometheus")
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_scrape_config() -> None:
    # Also checks the rule files it names (alerts.yml).
    result = _promtool("check", "config", SCRAPE_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_an_operator_needs_are_there() -> None:
    names = [rule["alert"] for rule in _rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) == EXPECTED_ALERTS


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    assert rule["annotations"]["description"].strip()


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_alert_uses_only_documented_metrics(rule: dict[str, Any]) -> None:
    catalogue = metrics_catalogue.load()
    names = metrics_catalogue.names_in_promql(rule["expr"])
    if rule["alert"] != "LoadBalancerDown":  # up{} is Prometheus's own
        assert names, "an alert on no phoenix_ metric"
    assert metrics_catalogue.undocumented(rule["expr"], catalogue) == set()


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in _load(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing >= EXPECTED_ALERTS, f"never seen firing: {EXPECTED_ALERTS - firing}"
    assert quiet >= EXPECTED_ALERTS, f"never seen quiet: {EXPECTED_ALERTS - quiet}"


def test_unit_tests_feed_only_documented_metrics() -> None:
    # Input series written with a wrong name would test nothing.
    catalogue = metrics_catalogue.load()
    for case in _load(ALERTS_TEST)["tests"]:
        for series in case["input_series"]:
            name = series["series"].split("{", 1)[0]
            if name != "up":
                assert metrics_catalogue.undocumented(name, catalogue) == set(), case["name"]


def test_error_rate_is_a_ratio_not_a_rate() -> None:
    # The seed compared rate(5xx) (requests/s) with 0.05; see alerts.yml.
    rule = next(rule for rule in _rules() if rule["alert"] == "HighErrorRate")
    expr = " ".join(rule["expr"].split())
    assert 'rate(phoenix_http_requests_total{code="5xx"}[5m])) / sum' in expr
    assert rule["for"] == "5m"


def test_scrape_job_is_the_one_the_alert_watches() -> None:
    jobs = [job["job_name"] for job in _load(SCRAPE_CONFIG)["scrape_configs"]]
    assert jobs == ["phoenix-lb"]
    rule = next(rule for rule in _rules() if rule["alert"] == "LoadBalancerDown")
    assert 'up{job="phoenix-lb"}' in rule["expr"]
    targets = _load(SCRAPE_CONFIG)["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["127.0.0.1:9000"]
