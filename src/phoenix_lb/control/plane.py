"""The control plane: the one owner of shared state, the admin API and reloads.

It runs in the single process (``workers: 1``) or in the master.  It owns:

* the server state store (health from active checks, drain/disable from
  operators, addresses from re-resolution) and pushes every change to the
  data plane, which only applies it;
* the admin listener (metrics, stub_status, health, status page, control
  API);
* reloads (SIGHUP, ``ctl reload``): the new config is validated first and an
  invalid one leaves everything running as it was; the previous config is
  kept for ``ctl rollback``.

The data plane is either this process's ``Runtime`` (``LocalDataPlane``) or
the worker processes (``control/master.py``), behind one small interface.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from phoenix_lb import __version__
from phoenix_lb.admin.metrics import Snapshot, merge_all, render, stub_status
from phoenix_lb.admin.server import AdminRequest, AdminResponse, AdminRouter, AdminServer
from phoenix_lb.admin.status import STATUS_CSS, STATUS_HTML, STATUS_JS, status_view
from phoenix_lb.config.loader import ConfigError, load_config
from phoenix_lb.config.schema import PhoenixConfig, split_host_port
from phoenix_lb.control.listen_queue import listener_queues, read_listen_queues
from phoenix_lb.control.state import ADMIN_STATES, AdminState, ServerKey, StateStore
from phoenix_lb.eventloop import loop_name
from phoenix_lb.health.checker import CheckTarget, HealthChecker, targets_from_config
from phoenix_lb.health.state import Transition
from phoenix_lb.logsetup import setup_error_log
from phoenix_lb.secrets import read_admin_token, sticky_secrets
from phoenix_lb.server.runtime import Runtime, is_ip
from phoenix_lb.tls import certificate_expiry
from phoenix_lb.upstream.resolver import Resolver, names_from_config

log = logging.getLogger("phoenix_lb")


class DataPlane(Protocol):
    """What the control plane needs from whatever serves requests."""

    async def start(
        self, config: PhoenixConfig, state: dict[str, Any], secrets: dict[str, str]
    ) -> None: ...

    def apply_state(self, state: dict[str, Any]) -> None: ...

    async def state_applied(self) -> None: ...

    async def stats(self) -> list[Snapshot]: ...

    async def reload(
        self, config: PhoenixConfig, state: dict[str, Any], secrets: dict[str, str]
    ) -> None: ...

    async def stop(self, timeout: float, *, graceful: bool = True) -> None: ...

    def reopen_logs(self) -> None: ...

    def listening_sockets(self) -> dict[str, list[socket.socket]]: ...

    @property
    def workers(self) -> int: ...

    @property
    def worker_restarts(self) -> int: ...


class LocalDataPlane:
    """The data plane as a Runtime in this very process (``workers: 1``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.runtime: Runtime | None = None

    async def start(
        self, config: PhoenixConfig, state: dict[str, Any], secrets: dict[str, str]
    ) -> None:
        runtime = Runtime(config, self.loop, secrets=secrets)
        runtime.apply_server_state(state)
        await runtime.start(resolve=False)
        self.runtime = runtime

    def apply_state(self, state: dict[str, Any]) -> None:
        if self.runtime is not None:
            self.runtime.apply_server_state(state)

    async def state_applied(self) -> None:
        """Applied synchronously above: nothing to wait for."""

    async def stats(self) -> list[Snapshot]:
        if self.runtime is None:
            return []
        snapshot = self.runtime.stats_snapshot()
        snapshot["worker_connections"] = {"0": snapshot.get("connections", 0)}
        return [snapshot]

    async def reload(
        self, config: PhoenixConfig, state: dict[str, Any], secrets: dict[str, str]
    ) -> None:
        assert self.runtime is not None
        self.runtime.secrets = dict(secrets)
        self.runtime.reload(config)
        self.runtime.apply_server_state(state)

    async def stop(self, timeout: float, *, graceful: bool = True) -> None:
        if self.runtime is not None:
            await self.runtime.stop(timeout if graceful else 0.0)

    def reopen_logs(self) -> None:
        if self.runtime is not None:
            self.runtime.reopen_logs()

    def listening_sockets(self) -> dict[str, list[socket.socket]]:
        if self.runtime is None:
            return {}
        return {bound.name: list(bound.sockets) for bound in self.runtime.listeners}

    @property
    def workers(self) -> int:
        return 1

    @property
    def worker_restarts(self) -> int:
        return 0


@dataclass
class ReloadResult:
    """What a reload (or rollback) did."""

    ok: bool
    errors: list[str] = field(default_factory=list)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "message": self.message}


class ControlPlane:
    """Owner of server state, the admin API, health checks, resolution and reloads."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: PhoenixConfig,
        data_plane: DataPlane,
        *,
        config_path: str | None = None,
    ) -> None:
        self.loop = loop
        self.config = config
        self.config_path = config_path
        self.data_plane = data_plane
        self.store = StateStore()
        self.store.subscribers.append(self._push_state)
        self.checker: HealthChecker | None = None
        self.resolver: Resolver | None = None
        self.admin: AdminServer | None = None
        self.previous: PhoenixConfig | None = None
        self.previous_text: str | None = None
        self.current_text: str | None = _read_text(config_path)
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last_reload_ok = True
        self.last_reload_time = time.time()
        self.start_time = time.time()
        self._dead_stats: list[Snapshot] = []
        self._history: list[tuple[float, Snapshot]] = []
        #: servers that passive failure accounting (max_fails) has out in at
        #: least one worker, as of the last snapshot
        self.resting: set[ServerKey] = set()
        self._reload_lock = asyncio.Lock()
        self._check_counts: dict[ServerKey, dict[str, int]] = {}
        self.secrets: dict[str, str] = {}
        self.started = False

    # -- life cycle ----------------------------------------------------------

    async def start(self) -> None:
        """Resolve names, start the data plane, the checks and the admin listener."""
        config = self.config
        self._sync_store(config, initial=True)
        names = names_from_config(config.upstreams)
        if names:
            self.resolver = Resolver(
                self.loop,
                names,
                self._on_resolved,
                interval=_resolve_interval(config),
            )
            # Names resolved before the first request, without blocking the
            # loop; one that fails leaves its server down (HAProxy refuses to
            # start instead; we start and keep trying).
            await self.resolver.refresh()
            self.resolver.start()
        self._start_checker(config)
        self.secrets = sticky_secrets(config, self.config_path)
        await self.data_plane.start(config, self.store.snapshot(), self.secrets)
        if config.admin is not None:
            await self._start_admin(config)
        self.started = True

    async def _start_admin(self, config: PhoenixConfig) -> None:
        assert config.admin is not None
        token = read_admin_token(config.admin.auth_token_file, self.config_path)
        router = AdminRouter(token)
        self._routes(router)
        admin = AdminServer(router, allowed_hosts=config.admin.allowed_hosts)
        host, port = split_host_port(
            config.admin.bind, default_host="127.0.0.1", allow_port_zero=True
        )
        await admin.start(host, port)
        self.admin = admin
        log.info("admin: listening on %s", config.admin.bind)

    async def stop(self, timeout: float, *, graceful: bool = True) -> None:
        if self.admin is not None:
            await self.admin.stop()
        if self.checker is not None:
            await self.checker.stop()
        if self.resolver is not None:
            await self.resolver.stop()
        await self.data_plane.stop(timeout, graceful=graceful)

    # -- state ---------------------------------------------------------------

    def _sync_store(self, config: PhoenixConfig, *, initial: bool = False) -> None:
        keys: list[tuple[ServerKey, str | None, bool]] = []
        known = self.resolver.addresses() if self.resolver is not None else {}
        for name, upstream in config.upstreams.items():
            healthy = True
            if upstream.health_check is not None:
                healthy = upstream.health_check.initial_state == "up"
            for server in upstream.servers:
                host, _ = split_host_port(server.address)
                key = (name, server.address)
                connect = host if is_ip(host) else known.get(key)
                keys.append((key, connect, healthy))
        self.store.sync_servers(keys)

    def _push_state(self, _servers: object) -> None:
        self.data_plane.apply_state(self.store.snapshot())

    def _on_resolved(self, upstream: str, address: str, ip: str | None) -> None:
        self.store.set_connect_host((upstream, address), ip)
        if self.checker is not None:
            self.checker.set_connect_host(upstream, address, ip)

    def _start_checker(self, config: PhoenixConfig) -> None:
        known = self.resolver.addresses() if self.resolver is not None else {}
        targets = targets_from_config(config.upstreams, known)
        if not targets:
            return
        self.checker = HealthChecker(self.loop, targets, self._on_transition, self._on_result)
        for target in targets:
            state = self.checker.states()[target.key]
            self.store.set_health(target.key, state.up, "initial state", self.loop.time())
        self.checker.start()

    def _reconcile_health(self) -> None:
        """After a reload, make stored health match the checks that now run.

        A server whose upstream lost its health_check is up (nothing would
        ever bring it back otherwise); one that gained a check takes the
        checker's state, its initial_state until probes say otherwise.
        """
        checked = self.checker.states() if self.checker is not None else {}
        now = self.loop.time()
        for key, state in list(self.store.servers.items()):
            rise_fall = checked.get(key)
            if rise_fall is None:
                if not state.healthy:
                    log.info("server %s of %s: up (no active health check now)", key[1], key[0])
                    self.store.set_health(key, True, "no active health check", now)
            elif rise_fall.up != state.healthy:
                word = "up" if rise_fall.up else "down"
                log.info(
                    "server %s of %s: %s (health check settings changed)", key[1], key[0], word
                )
                self.store.set_health(key, rise_fall.up, "health check settings changed", now)

    def _on_transition(self, target: CheckTarget, transition: Transition) -> None:
        self.store.set_health(target.key, transition.up, transition.reason, self.loop.time())

    def _on_result(self, target: CheckTarget, ok: bool, reason: str, seconds: float) -> None:
        self.store.record_check(target.key, ok, reason, time.time())
        counts = self._check_counts.setdefault(target.key, {})
        label = _check_label(ok, reason)
        counts[label] = counts.get(label, 0) + 1

    def set_admin_state(self, upstream: str, server: str, state: AdminState) -> dict[str, Any]:
        """Operator action: drain, disable or enable a server (KeyError if unknown)."""
        key = self._server_key(upstream, server)
        before = self.store.servers[key].admin
        result = self.store.set_admin(key, state)
        if before != state:
            log.warning("upstream %s: server %s set to %s by an operator", key[0], key[1], state)
        return {"upstream": key[0], "server": key[1], "admin": result.admin, "state": result.state}

    def _server_key(self, upstream: str, server: str) -> ServerKey:
        if (upstream, server) in self.store.servers:
            return (upstream, server)
        # Also accept the server's position in the list.
        if server.isdigit() and upstream in self.config.upstreams:
            servers = self.config.upstreams[upstream].servers
            index = int(server)
            if index < len(servers):
                return (upstream, servers[index].address)
        raise KeyError(f"no server {server!r} in upstream {upstream!r}")

    def health(self) -> tuple[bool, list[str]]:
        """Serving, and at least one server up in every upstream."""
        reasons = []
        if not self.started:
            reasons.append("not started")
        by_upstream: dict[str, bool] = {name: False for name in self.config.upstreams}
        resting = self.resting
        for key, state in self.store.servers.items():
            if state.accepting and key not in resting:
                by_upstream[key[0]] = True
        for upstream, ok in by_upstream.items():
            if not ok:
                reasons.append(f"upstream {upstream}: no server up")
        return not reasons, reasons

    # -- reload --------------------------------------------------------------

    async def reload(self) -> ReloadResult:
        """Read, validate and apply the config file; the old one stays on error."""
        if self.config_path is None:
            return ReloadResult(False, ["no config file to reload (demo mode)"])
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            return self._reload_failed(exc.errors)
        return await self._apply(config, _read_text(self.config_path), rollback=False)

    async def rollback(self) -> ReloadResult:
        """Go back to the config that ran before the last successful reload."""
        if self.previous is None:
            return ReloadResult(False, ["no previous configuration to roll back to"])
        result = await self._apply(self.previous, self.previous_text, rollback=True)
        if result.ok and self.config_path is not None and self.current_text is not None:
            from phoenix_lb.atomicfile import write_atomic

            # The file matches what runs, so a later reload does not undo it.
            mode = os.stat(self.config_path).st_mode & 0o777
            write_atomic(self.config_path, self.current_text.encode(), mode)
        return result

    async def _apply(
        self, config: PhoenixConfig, text: str | None, *, rollback: bool
    ) -> ReloadResult:
        async with self._reload_lock:
            if _static_settings(config) != _static_settings(self.config):
                return self._reload_failed(
                    [
                        "workers, admin and process limits change only with a restart; "
                        "the running configuration stays"
                    ]
                )
            old = self.config
            try:
                secrets = sticky_secrets(config, self.config_path)
            except (OSError, ValueError) as exc:
                return self._reload_failed([f"{self.config_path}: sticky key: {exc}"])
            self._sync_store(config)
            try:
                await self.data_plane.reload(config, self.store.snapshot(), secrets)
            except (OSError, ValueError, RuntimeError) as exc:
                self._sync_store(old)
                return self._reload_failed([f"{self.config_path}: cannot apply: {exc}"])
            self.secrets = secrets
            self.previous, self.previous_text = old, self.current_text
            self.config, self.current_text = config, text
            if config.error_log != old.error_log:
                # (Workers reconfigure their own when they apply the reload.)
                prefix = "master" if self.data_plane.workers > 1 else ""
                setup_error_log(config.error_log, prefix=prefix)
            if self.resolver is not None:
                self.resolver.update_names(names_from_config(config.upstreams))
                await self.resolver.refresh()
            elif names_from_config(config.upstreams):
                self.resolver = Resolver(
                    self.loop,
                    names_from_config(config.upstreams),
                    self._on_resolved,
                    interval=_resolve_interval(config),
                )
                await self.resolver.refresh()
                self.resolver.start()
            known = self.resolver.addresses() if self.resolver is not None else {}
            targets = targets_from_config(config.upstreams, known)
            if self.checker is not None:
                self.checker.update_targets(targets)
            elif targets:
                self._start_checker(config)
            self._reconcile_health()
            self.reloads_ok += 1
            self.last_reload_ok = True
            self.last_reload_time = time.time()
            what = "rolled back to the previous configuration" if rollback else "reloaded"
            log.info("configuration %s", what)
            return ReloadResult(True, message=what)

    def _reload_failed(self, errors: list[str]) -> ReloadResult:
        self.reloads_failed += 1
        self.last_reload_ok = False
        for line in errors:
            log.error("reload refused: %s", line)
        log.error("reload refused: the running configuration stays in effect")
        return ReloadResult(False, errors, "the running configuration stays in effect")

    # -- stats ---------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """Counters of every worker (and of dead ones) summed."""
        live = await self.data_plane.stats()
        total = merge_all([*self._dead_stats, *live])
        now = time.monotonic()
        self._history.append((now, total))
        self._history = [(t, s) for t, s in self._history if now - t <= 30.0][-60:]
        self.resting = {
            (upstream, address)
            for upstream, data in total.get("upstreams", {}).items()
            for address, server in data.get("servers", {}).items()
            if server.get("resting")
        }
        return total

    async def recent_snapshot(self, max_age: float = 1.0) -> None:
        """Refresh the snapshot (and ``resting``) unless one is younger than ``max_age``."""
        if not self._history or time.monotonic() - self._history[-1][0] > max_age:
            await self.snapshot()

    def note_dead_worker(self, last: Snapshot | None) -> None:
        """Keep a dead worker's last counters so totals never go backwards."""
        if last:
            dead = {k: v for k, v in last.items() if k in ("listeners", "upstreams")}
            for item in dead.get("listeners", []):
                for state in ("reading", "writing", "waiting"):
                    item[state] = 0
            for upstream in dead.get("upstreams", {}).values():
                upstream["waiting"] = 0
                for server in upstream.get("servers", {}).values():
                    server["in_flight"] = 0
                    server["idle"] = 0
            self._dead_stats.append(dead)

    def control_view(self) -> dict[str, Any]:
        """Control-plane numbers and state for metrics."""
        servers = []
        for key, state in self.store.servers.items():
            backup = self._is_backup(key)
            current = state.state
            if current == "up" and key in self.resting:
                current = "down"
            if current == "up" and backup:
                current = "backup"
            servers.append(
                {
                    "upstream": key[0],
                    "address": key[1],
                    "state": current,
                    # Health alone: drain and disable are the operator's
                    # choice and must not page anyone (BackendDown); passive
                    # ejection (max_fails) is health.
                    "healthy": state.healthy
                    and state.connect_host is not None
                    and key not in self.resting,
                    "checks": dict(self._check_counts.get(key, {})),
                }
            )
        return {
            "servers": servers,
            "listener_names": [{"name": listener.name} for listener in self.config.listeners],
            "cert_expiry": certificate_expiry(self.config),
            "listen_queue": listener_queues(
                self.data_plane.listening_sockets(), read_listen_queues()
            ),
            "workers": self.data_plane.workers,
            "worker_restarts": self.data_plane.worker_restarts,
            "reloads_ok": self.reloads_ok,
            "reloads_failed": self.reloads_failed,
            "last_reload_ok": self.last_reload_ok,
            "last_reload_time": self.last_reload_time,
            "start_time": self.start_time,
            "hot_path": _hot_path(),
            "loop": loop_name(),
        }

    def _is_backup(self, key: ServerKey) -> bool:
        upstream = self.config.upstreams.get(key[0])
        if upstream is None:
            return False
        for server in upstream.servers:
            if server.address == key[1]:
                return bool(getattr(server, "backup", False))
        return False

    # -- admin routes ----------------------------------------------------------

    def _routes(self, router: AdminRouter) -> None:
        router.add("GET", "/health", self._h_health, public=True)
        router.add("GET", "/metrics", self._h_metrics)
        router.add("GET", "/nginx_status", self._h_stub_status)
        router.add("GET", "/status", self._h_status_page, public=True)
        router.add("GET", "/status.js", self._h_status_js, public=True)
        router.add("GET", "/status.css", self._h_status_css, public=True)
        router.add("GET", "/api/status", self._h_api_status)
        router.add("GET", "/api/upstreams", self._h_api_upstreams)
        router.add("POST", "/api/upstreams/", self._h_api_server_action, prefix=True)
        router.add("POST", "/api/reload", self._h_api_reload)
        router.add("POST", "/api/rollback", self._h_api_rollback)

    async def _h_health(self, request: AdminRequest) -> AdminResponse:
        # Passive ejections live in the workers: ask them (at most once a second).
        await self.recent_snapshot()
        ok, reasons = self.health()
        return AdminResponse.json(
            {"status": "ok" if ok else "unavailable", "reasons": reasons}, 200 if ok else 503
        )

    async def _h_metrics(self, request: AdminRequest) -> AdminResponse:
        body = render(await self.snapshot(), self.control_view())
        return AdminResponse(200, body, "text/plain; version=0.0.4; charset=utf-8")

    async def _h_stub_status(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, stub_status(await self.snapshot()))

    async def _h_status_page(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, STATUS_HTML, "text/html; charset=utf-8")

    async def _h_status_js(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, STATUS_JS, "application/javascript; charset=utf-8")

    async def _h_status_css(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, STATUS_CSS, "text/css; charset=utf-8")

    async def _h_api_status(self, request: AdminRequest) -> AdminResponse:
        await self.snapshot()
        return AdminResponse.json(status_view(self, self._history))

    async def _h_api_upstreams(self, request: AdminRequest) -> AdminResponse:
        out: dict[str, list[dict[str, Any]]] = {}
        for (upstream, address), state in self.store.servers.items():
            out.setdefault(upstream, []).append(
                {
                    "server": address,
                    "state": state.state,
                    "admin": state.admin,
                    "healthy": state.healthy,
                    "health_reason": state.health_reason,
                    "connect_host": state.connect_host,
                    "last_check_ok": state.last_check_ok,
                    "last_check_reason": state.last_check_reason,
                }
            )
        return AdminResponse.json(out)

    async def _h_api_server_action(self, request: AdminRequest) -> AdminResponse:
        # /api/upstreams/{upstream}/servers/{server}/{action}
        parts = [unquote(p) for p in request.path.split("/")[3:]]
        if len(parts) != 4 or parts[1] != "servers":
            return AdminResponse.json({"error": "use /api/upstreams/U/servers/S/ACTION"}, 404)
        upstream, _, server, action = parts
        state = {"drain": "drain", "enable": "enabled", "disable": "disabled"}.get(action)
        if state is None or state not in ADMIN_STATES:
            return AdminResponse.json({"error": "action must be drain, enable or disable"}, 400)
        try:
            result = self.set_admin_state(upstream, server, state)
        except KeyError as exc:
            return AdminResponse.json({"error": str(exc.args[0])}, 404)
        # Answer once every worker has it: `ctl drain && deploy` must not
        # race a request that still reaches the drained server.
        await self.data_plane.state_applied()
        return AdminResponse.json(result)

    async def _h_api_reload(self, request: AdminRequest) -> AdminResponse:
        result = await self.reload()
        return AdminResponse.json(result.to_json(), 200 if result.ok else 409)

    async def _h_api_rollback(self, request: AdminRequest) -> AdminResponse:
        result = await self.rollback()
        return AdminResponse.json(result.to_json(), 200 if result.ok else 409)

    @property
    def admin_address(self) -> tuple[str, int] | None:
        return self.admin.address if self.admin is not None else None


def _check_label(ok: bool, reason: str) -> str:
    if ok:
        return "success"
    if reason.startswith("status") or reason.startswith("invalid"):
        return "bad_status"
    if reason == "timeout":
        return "timeout"
    return "connection_error"


def _resolve_interval(config: PhoenixConfig) -> float:
    intervals = [u.resolve_interval for u in config.upstreams.values()]
    return min(intervals) if intervals else 30.0


def _static_settings(config: PhoenixConfig) -> tuple[object, ...]:
    """Settings a reload cannot change (the process model and the admin listener)."""
    return (
        config.workers,
        config.admin,
        config.worker_rlimit_nofile,
        config.listen_backlog,
    )


def _read_text(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def _hot_path() -> str:
    from phoenix_lb.server import h1

    return "compiled" if not h1.__file__.endswith(".py") else "pure"


__all__ = ["ControlPlane", "DataPlane", "LocalDataPlane", "ReloadResult", "__version__"]
