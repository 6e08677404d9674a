"""Server state with one owner: health, operator (drain/disable) and address.

Everything that several worker processes must agree on about a server
lives here, in the control plane (the single process, or the master when
``workers > 1``); workers only receive ``snapshot()`` dictionaries and apply
them (``Runtime.apply_server_state``).  Keys are ``(upstream, address)`` with
the address as configured, so the state survives a reload and a reordering
of the server list (nginx Plus keeps drain state across reloads the same way).

Derived flags the data path reads:

* ``accepting``: new requests may be balanced to it (health up and operator
  state ``enabled``);
* ``sticky_ok``: clients pinned by a sticky cookie may keep using it (health
  up and not ``disabled``): a draining server finishes its sticky sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

AdminState = Literal["enabled", "drain", "disabled"]
ADMIN_STATES: tuple[AdminState, ...] = ("enabled", "drain", "disabled")

ServerKey = tuple[str, str]


@dataclass
class ServerState:
    """What the control plane knows about one server."""

    upstream: str
    address: str
    admin: AdminState = "enabled"
    #: None until the first active check (or always, without active checks)
    healthy: bool = True
    health_reason: str = ""
    health_changed_at: float = 0.0
    last_check_ok: bool | None = None
    last_check_reason: str = ""
    last_check_at: float = 0.0
    #: the resolved address the data path connects to (None: unresolved)
    connect_host: str | None = None
    checks_ok: int = 0
    checks_failed: int = 0
    #: loop time when it last came back (slow start ramps from here)
    recovered_at: float = float("-inf")

    @property
    def accepting(self) -> bool:
        return self.healthy and self.admin == "enabled" and self.connect_host is not None

    @property
    def sticky_ok(self) -> bool:
        return self.healthy and self.admin != "disabled" and self.connect_host is not None

    @property
    def state(self) -> str:
        """One word for status pages: up, down, draining, disabled, unresolved."""
        if self.admin == "disabled":
            return "disabled"
        if self.connect_host is None:
            return "unresolved"
        if not self.healthy:
            return "down"
        if self.admin == "drain":
            return "draining"
        return "up"

    def to_wire(self) -> dict[str, object]:
        """The fields workers apply (kept small: sent on every change)."""
        return {
            "accepting": self.accepting,
            "sticky_ok": self.sticky_ok,
            "connect_host": self.connect_host,
            "recovered_at": self.recovered_at,
        }


@dataclass
class StateStore:
    """All servers' state; notifies subscribers after each change."""

    servers: dict[ServerKey, ServerState] = field(default_factory=dict)
    subscribers: list[Callable[[dict[ServerKey, ServerState]], None]] = field(default_factory=list)
    #: bumped on every change, so pollers can tell whether anything moved
    version: int = 0

    def sync_servers(self, keys: list[tuple[ServerKey, str | None, bool]]) -> None:
        """Make the store match a (new) config.

        ``keys`` lists (key, initial connect host, initial health) for every
        configured server.  Known servers keep their state (drain survives a
        reload); removed ones are forgotten.
        """
        wanted = {key for key, _, _ in keys}
        for key in list(self.servers):
            if key not in wanted:
                del self.servers[key]
        for key, host, healthy in keys:
            if key not in self.servers:
                self.servers[key] = ServerState(key[0], key[1], healthy=healthy, connect_host=host)
        self._changed()

    def set_admin(self, key: ServerKey, admin: AdminState) -> ServerState:
        """Operator action; KeyError for an unknown server."""
        state = self.servers[key]
        if state.admin != admin:
            state.admin = admin
            self._changed()
        return state

    def set_health(self, key: ServerKey, healthy: bool, reason: str, now: float) -> None:
        state = self.servers.get(key)
        if state is None or state.healthy == healthy:
            return
        state.healthy = healthy
        state.health_reason = reason
        state.health_changed_at = now
        if healthy:
            state.recovered_at = now
        self._changed()

    def record_check(self, key: ServerKey, ok: bool, reason: str, now: float) -> None:
        """A single check result (for status pages; no distribution needed)."""
        state = self.servers.get(key)
        if state is None:
            return
        state.last_check_ok = ok
        state.last_check_reason = reason
        state.last_check_at = now
        if ok:
            state.checks_ok += 1
        else:
            state.checks_failed += 1

    def set_connect_host(self, key: ServerKey, host: str | None) -> None:
        state = self.servers.get(key)
        if state is None or state.connect_host == host:
            return
        state.connect_host = host
        self._changed()

    def snapshot(self) -> dict[str, dict[str, dict[str, object]]]:
        """{upstream: {address: wire fields}}, what workers apply."""
        out: dict[str, dict[str, dict[str, object]]] = {}
        for (upstream, address), state in self.servers.items():
            out.setdefault(upstream, {})[address] = state.to_wire()
        return out

    def _changed(self) -> None:
        self.version += 1
        for callback in list(self.subscribers):
            callback(self.servers)
