"""The live status page: its JSON view, and the page's assets.

``status_view`` turns the control plane's state and the recent history of
summed counters into what the page shows: rates, error ratios and latency
quantiles over the last few seconds (not since start, which would hide a
problem that began a minute ago).  The page (status_page.py) polls
``/api/status`` and redraws rows in place.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from phoenix_lb import __version__
from phoenix_lb.admin.metrics import Snapshot
from phoenix_lb.admin.status_page import STATUS_CSS, STATUS_HTML, STATUS_JS
from phoenix_lb.stats import BUCKETS, N_CLASSES

if TYPE_CHECKING:
    from phoenix_lb.control.plane import ControlPlane

__all__ = ["STATUS_CSS", "STATUS_HTML", "STATUS_JS", "quantile", "status_view"]

# Rates and quantiles are computed over about this many seconds.
WINDOW = 10.0


def quantile(buckets: list[float], q: float) -> float | None:
    """Estimate a quantile from non-cumulative bucket counts (linear within a bucket)."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    running = 0.0
    lower = 0.0
    for index, count in enumerate(buckets):
        upper = BUCKETS[index] if index < len(BUCKETS) else BUCKETS[-1] * 2
        if running + count >= rank and count > 0:
            return lower + (upper - lower) * (rank - running) / count
        running += count
        lower = upper
    return BUCKETS[-1]


def _delta(new: list[float], old: list[float] | None) -> list[float]:
    if not old:
        return list(new)
    return [a - b for a, b in zip(new, old, strict=False)]


def _classes(counts: list[int]) -> list[int]:
    """Per status class totals of a [listener][method][class] block."""
    totals = [0] * N_CLASSES
    for index, value in enumerate(counts):
        totals[index % N_CLASSES] += value
    return totals


def status_view(plane: ControlPlane, history: list[tuple[float, Snapshot]]) -> dict[str, Any]:
    """Everything the status page shows, as JSON-able data.

    Times of day are Unix times of the balancer's clock; ages
    (``last_check.age_seconds``) are computed here, so a browser whose clock
    differs still shows them right.
    """
    now_mono = time.monotonic()
    now = time.time()
    current = history[-1][1] if history else {}
    base_time, base = now_mono, None
    for t, snap in history:
        if now_mono - t <= WINDOW and snap is not current:
            base_time, base = t, snap
            break
    span = max(now_mono - base_time, 1e-9) if base is not None else 0.0

    upstream_stats = current.get("upstreams", {})
    base_upstreams = base.get("upstreams", {}) if base else {}
    upstreams = []
    for name, upstream in plane.config.upstreams.items():
        data = upstream_stats.get(name, {})
        base_data = base_upstreams.get(name, {})
        servers = []
        for index, server_config in enumerate(upstream.servers):
            key = (name, server_config.address)
            state = plane.store.servers.get(key)
            stats = data.get("servers", {}).get(server_config.address, {})
            old = base_data.get("servers", {}).get(server_config.address, {})
            classes = _classes(stats.get("counts", []))
            old_classes = _classes(old.get("counts", [])) if old else [0] * N_CLASSES
            window = [a - b for a, b in zip(classes, old_classes, strict=False)]
            served = sum(window)
            hist = _delta(stats.get("response_time", [])[:-1], old.get("response_time", [])[:-1])
            current_state = state.state if state else "unknown"
            resting = (name, server_config.address) in plane.resting
            if current_state == "up" and resting:
                current_state = "down"
            if current_state == "up" and getattr(server_config, "backup", False):
                current_state = "backup"
            servers.append(
                {
                    "index": index,
                    "address": server_config.address,
                    "weight": server_config.weight,
                    "backup": bool(getattr(server_config, "backup", False)),
                    "state": current_state,
                    "admin": state.admin if state else "enabled",
                    "healthy": (state.healthy if state else True) and not resting,
                    "health_reason": "max_fails reached: out for fail_timeout"
                    if resting
                    else (state.health_reason if state else ""),
                    "connect_host": state.connect_host if state else None,
                    "last_check": None
                    if state is None or state.last_check_ok is None
                    else {
                        "ok": state.last_check_ok,
                        "reason": state.last_check_reason,
                        "at": state.last_check_at,
                        "age_seconds": max(0.0, now - state.last_check_at),
                    },
                    "in_flight": stats.get("in_flight", 0),
                    "idle_connections": stats.get("idle", 0),
                    "requests_total": sum(classes),
                    "requests_per_second": served / span if span else 0.0,
                    "error_ratio": window[4] / served if served else 0.0,
                    "p50_seconds": quantile(hist, 0.5),
                    "p99_seconds": quantile(hist, 0.99),
                    "failures_total": stats.get("failures", 0),
                    "ejections_total": stats.get("ejections", 0),
                }
            )
        sticky = getattr(upstream, "sticky", None)
        upstreams.append(
            {
                "name": name,
                "balance": upstream.balance,
                "sticky": None if sticky is None else getattr(sticky, "cookie", "on"),
                "health_check": upstream.health_check is not None,
                "servers": servers,
                "retries": data.get("retries", {}),
            }
        )

    binds = {listener.name: list(listener.bind) for listener in plane.config.listeners}
    listeners = []
    base_listeners = {item.get("name"): item for item in (base or {}).get("listeners", [])}
    for item in current.get("listeners", []):
        old = base_listeners.get(item.get("name"), {})
        requests = item.get("requests", 0)
        accepted = item.get("accepted", 0)
        listeners.append(
            {
                "name": item.get("name"),
                "bind": binds.get(str(item.get("name")), []),
                "connections": {
                    "reading": item.get("reading", 0),
                    "writing": item.get("writing", 0),
                    "waiting": item.get("waiting", 0),
                },
                "requests_total": requests,
                "requests_per_second": (requests - old.get("requests", 0)) / span
                if span and old
                else 0.0,
                "connections_per_second": (accepted - old.get("accepted", 0)) / span
                if span and old
                else 0.0,
            }
        )
    ok, reasons = plane.health()
    control = plane.control_view()
    return {
        "version": __version__,
        "hot_path": control["hot_path"],
        "loop": control["loop"],
        "time": now,
        "health": {"ok": ok, "reasons": reasons},
        "workers": plane.data_plane.workers,
        "uptime_seconds": now - plane.start_time,
        "window_seconds": span,
        "reloads": {
            "ok": plane.reloads_ok,
            "failed": plane.reloads_failed,
            "last_ok": plane.last_reload_ok,
            "last_time": plane.last_reload_time,
        },
        "upstreams": upstreams,
        "listeners": listeners,
    }
