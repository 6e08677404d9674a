"""admin/status.py and admin/status_page.py without a browser or a socket.

``status_view`` is fed a stand-in control plane (only the attributes it
reads) and a hand-made history of summed snapshots; the page's assets are
checked for the rules the module promises (no markup from data, nothing
loaded from elsewhere).  The page's behaviour in a browser is
tests/integration/test_status_page.py.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from phoenix_lb import __version__
from phoenix_lb.admin.status import STATUS_CSS, STATUS_HTML, STATUS_JS, quantile, status_view
from phoenix_lb.config.schema import PhoenixConfig
from phoenix_lb.control.state import ServerState
from phoenix_lb.stats import BUCKETS, N_BUCKETS, N_CLASSES, N_METHODS


def test_quantile_interpolates_within_a_bucket() -> None:
    counts = [0.0] * N_BUCKETS
    counts[1] = 10.0  # all between 5 ms and 10 ms
    assert quantile(counts, 0.5) == pytest.approx(0.0075)
    assert quantile(counts, 0.99) == pytest.approx(0.005 + 0.005 * 0.99)
    assert quantile([0.0] * N_BUCKETS, 0.5) is None


def test_quantile_of_the_overflow_bucket_stays_finite() -> None:
    counts = [0.0] * N_BUCKETS
    counts[-1] = 4.0  # above the last bound (60 s)
    value = quantile(counts, 0.99)
    assert value is not None and BUCKETS[-1] <= value <= BUCKETS[-1] * 2


def _config() -> PhoenixConfig:
    return PhoenixConfig.model_validate(
        {
            "listeners": [
                {
                    "name": "web",
                    "bind": ["127.0.0.1:8080"],
                    "routes": [{"path": "/", "upstream": "app"}],
                }
            ],
            "upstreams": {
                "app": {
                    "servers": [
                        {"address": "10.0.0.1:80"},
                        {"address": "10.0.0.2:80", "weight": 3},
                        {"address": "10.0.0.3:80", "backup": True},
                    ]
                }
            },
        }
    )


def _counts(ok: int, errors: int) -> list[int]:
    """A [listener][method][class] block for one listener: GET 2xx and 5xx."""
    block = [0] * (N_METHODS * N_CLASSES)
    block[1] = ok  # GET, 2xx
    block[4] = errors  # GET, 5xx
    return block


def _snapshot(ok: int, errors: int, fast: int) -> dict[str, Any]:
    response_time = [0.0] * N_BUCKETS + [0.0]
    response_time[0] = float(fast)
    return {
        "listeners": [
            {
                "name": "web",
                "reading": 1,
                "writing": 2,
                "waiting": 3,
                "accepted": ok + errors,
                "requests": ok + errors,
            }
        ],
        "upstreams": {
            "app": {
                "servers": {
                    "10.0.0.1:80": {
                        "counts": _counts(ok, errors),
                        "response_time": response_time,
                        "in_flight": 2,
                        "ejections": 1,
                    }
                }
            }
        },
    }


def _plane(
    config: PhoenixConfig,
    servers: dict[tuple[str, str], ServerState],
    resting: set[tuple[str, str]] | None = None,
) -> Any:
    def health() -> tuple[bool, list[str]]:
        return True, []

    return SimpleNamespace(
        config=config,
        store=SimpleNamespace(servers=servers),
        resting=resting or set(),
        control_view=lambda: {"hot_path": "pure", "loop": "uvloop"},
        health=health,
        data_plane=SimpleNamespace(workers=2),
        start_time=time.time() - 61,
        reloads_ok=1,
        reloads_failed=2,
        last_reload_ok=False,
        last_reload_time=time.time(),
    )


def test_status_view_rates_states_and_checks() -> None:
    config = _config()
    now = time.time()
    checked = ServerState("app", "10.0.0.1:80", connect_host="10.0.0.1")
    checked.last_check_ok, checked.last_check_reason, checked.last_check_at = True, "", now - 4
    drained = ServerState("app", "10.0.0.2:80", admin="drain", connect_host="10.0.0.2")
    backup = ServerState("app", "10.0.0.3:80", connect_host="10.0.0.3")
    servers = {(s.upstream, s.address): s for s in (checked, drained, backup)}
    t = time.monotonic()
    history = [(t - 5.0, _snapshot(100, 0, 100)), (t, _snapshot(190, 10, 200))]

    view = status_view(cast(Any, _plane(config, servers)), history)

    assert view["version"] == __version__
    assert (view["hot_path"], view["loop"], view["workers"]) == ("pure", "uvloop", 2)
    assert 60 <= view["uptime_seconds"] < 70
    assert view["reloads"] == {
        "ok": 1,
        "failed": 2,
        "last_ok": False,
        "last_time": pytest.approx(now, abs=5),
    }
    first, second, third = view["upstreams"][0]["servers"]
    assert [first["state"], second["state"], third["state"]] == ["up", "draining", "backup"]
    assert second["weight"] == 3 and third["backup"] is True
    # 100 requests in the 5 s window, 10 of them 5xx.
    assert first["requests_per_second"] == pytest.approx(20.0, rel=0.05)
    assert first["error_ratio"] == pytest.approx(0.1)
    assert first["requests_total"] == 200
    assert first["p50_seconds"] is not None and first["p50_seconds"] <= 0.005
    assert (first["in_flight"], first["ejections_total"]) == (2, 1)
    assert first["last_check"]["ok"] is True
    assert first["last_check"]["age_seconds"] == pytest.approx(4, abs=1)
    assert second["last_check"] is None
    (listener,) = view["listeners"]
    assert listener["bind"] == ["127.0.0.1:8080"]
    assert listener["connections"] == {"reading": 1, "writing": 2, "waiting": 3}
    assert listener["requests_per_second"] == pytest.approx(20.0, rel=0.05)


def test_status_view_shows_servers_out_by_max_fails_as_down() -> None:
    config = _config()
    up = ServerState("app", "10.0.0.1:80", connect_host="10.0.0.1")
    drained = ServerState("app", "10.0.0.2:80", admin="drain", connect_host="10.0.0.2")
    servers = {(s.upstream, s.address): s for s in (up, drained)}
    resting = {("app", "10.0.0.1:80"), ("app", "10.0.0.2:80")}
    view = status_view(cast(Any, _plane(config, servers, resting)), [])
    first, second, _ = view["upstreams"][0]["servers"]
    # Draining is the operator's word and stays visible (the state order:
    # disabled, draining, down, backup, up).
    assert (first["state"], second["state"]) == ("down", "draining")
    assert first["healthy"] is False and "max_fails" in first["health_reason"]


def test_status_view_without_history_has_no_rates() -> None:
    config = _config()
    view = status_view(cast(Any, _plane(config, {})), [])
    assert view["window_seconds"] == 0.0
    assert [s["state"] for s in view["upstreams"][0]["servers"]] == ["unknown"] * 3
    assert all(s["requests_per_second"] == 0.0 for s in view["upstreams"][0]["servers"])


# -- the page's assets ---------------------------------------------------------


def test_page_never_turns_data_into_markup() -> None:
    js = STATUS_JS.decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
    assert "textContent" in js


def test_page_loads_nothing_from_elsewhere() -> None:
    for asset in (STATUS_HTML, STATUS_JS, STATUS_CSS):
        text = asset.decode()
        assert not re.search(r"https?://|url\(|@import|//[a-z0-9.-]+\.[a-z]{2,}/", text), text[:80]
    html = STATUS_HTML.decode()
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == ["data:,", "/status.css", "/status.js"]
    assert "default-src 'none'" in html and "script-src 'self'" in html


def test_page_actions_and_token() -> None:
    js = STATUS_JS.decode()
    assert "encodeURIComponent(upstream)" in js and "encodeURIComponent(address)" in js
    assert "'/api/status'" in js and "'/api/upstreams/'" in js
    assert "sessionStorage" in js and "'Bearer '" in js
    assert "REFRESH_MS = 2000" in js
