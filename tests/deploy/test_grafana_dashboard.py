"""deploy/grafana/phoenix-lb.json: a dashboard built only on documented metrics, with valid PromQL.

Every query (panels, template variables, annotations) may name only metrics
listed in docs/metrics.md; promtool parses each one as a recording rule, so a
typo in PromQL fails here rather than as an empty panel.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import metrics_catalogue
from tests.deploy.tools import require

DASHBOARD_PATH = metrics_catalogue.ROOT / "deploy" / "grafana" / "phoenix-lb.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# What the dashboard must show, by the metric that shows it.
MUST_SHOW = {
    "phoenix_http_requests_total",  # request rate by code class, error ratio
    "phoenix_http_request_duration_seconds_bucket",  # p50/p99 latency
    "phoenix_upstream_response_duration_seconds_bucket",
    "phoenix_upstream_server_up",
    "phoenix_upstream_server_state",  # server state table
    "phoenix_upstream_in_flight_requests",
    "phoenix_upstream_pool_idle_connections",
    "phoenix_upstream_retries_total",
    "phoenix_upstream_ejections_total",
    "phoenix_limit_rejected_total",
    "phoenix_tls_handshakes_total",
    "phoenix_client_connections",
    "phoenix_received_bytes_total",
    "phoenix_sent_bytes_total",
    "phoenix_config_reloads_total",
    "phoenix_worker_restarts_total",
    "phoenix_tls_certificate_expiry_timestamp_seconds",
}

# Grafana's variables, replaced by something PromQL accepts.
_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
    "$listener": ".*",
    "$upstream": ".*",
}
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-z_]+)\)$")


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL expression) for every query of the dashboard."""
    for panel in _panels(DASHBOARD["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(variable["definition"])
            assert match, f"variable {variable['name']}: expected label_values(selector, label)"
            yield f"variable {variable['name']}", match.group("selector")
    for annotation in DASHBOARD["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]


def _promql(expr: str) -> str:
    for variable, value in _VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_dashboard_header() -> None:
    assert DASHBOARD["uid"] == "phoenix-lb"
    assert DASHBOARD["title"] == "Phoenix LB"
    assert DASHBOARD["schemaVersion"] >= 36  # datasource references as objects
    assert DASHBOARD["id"] is None  # importable into any Grafana
    datasource = DASHBOARD["templating"]["list"][0]
    assert (datasource["type"], datasource["name"], datasource["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )


def test_panels_are_well_formed() -> None:
    ids = [panel["id"] for panel in _panels(DASHBOARD["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(DASHBOARD["panels"]):
        assert panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in _panels(DASHBOARD["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize(("where", "expr"), list(_queries()), ids=lambda value: str(value)[:60])
def test_query_uses_only_documented_metrics(where: str, expr: str) -> None:
    catalogue = metrics_catalogue.load()
    assert metrics_catalogue.names_in_promql(expr), f"{where}: no phoenix_ metric"
    assert metrics_catalogue.undocumented(expr, catalogue) == set(), where


def test_dashboard_shows_what_operators_need() -> None:
    used = set().union(*(metrics_catalogue.names_in_promql(expr) for _, expr in _queries()))
    assert used >= MUST_SHOW, f"not shown: {MUST_SHOW - used}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = require("promtool", "prometheus")
    rules = [
        {"record": f"dashboard:query_{index}", "expr": _promql(expr)}
        for index, (_, expr) in enumerate(_queries())
    ]
    rules_file = tmp_path / "dashboard_queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
