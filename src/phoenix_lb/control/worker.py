"""A worker process: ``python -m phoenix_lb.control.worker CONTROL_FD``.

Started by the master with its share of the listening sockets and one end of
a control socket pair.  It serves requests with a ``Runtime`` and obeys the
master: applies server state, answers stats, reloads, reopens logs, stops.
If the master goes away (the channel closes) it drains and exits, so no
worker is ever orphaned.

Signals: SIGINT, SIGHUP and SIGUSR1 are the master's business (a terminal's
Ctrl-C reaches the whole process group; the master coordinates); SIGTERM
sent to a worker directly stops it gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

from phoenix_lb.config.schema import PhoenixConfig
from phoenix_lb.control.channel import ChannelProtocol, Message
from phoenix_lb.eventloop import new_event_loop
from phoenix_lb.gctune import settle
from phoenix_lb.logsetup import setup_error_log
from phoenix_lb.server.runtime import Runtime

log = logging.getLogger("phoenix_lb")


class WorkerMain:
    """The worker's control loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.channel: ChannelProtocol | None = None
        self.runtime: Runtime | None = None
        self.config: PhoenixConfig | None = None
        self.done = asyncio.Event()
        self.index = -1
        self.exit_code = 0
        self._stopping = False
        #: set once the channel closed after the final counters were sent
        self._flushed: asyncio.Event | None = None

    async def run(self, control_fd: int) -> int:
        sock = socket.socket(fileno=control_fd)
        _, self.channel = await self.loop.create_unix_connection(
            lambda: ChannelProtocol(self._on_message, self._on_channel_closed), sock=sock
        )
        self.loop.add_signal_handler(signal.SIGTERM, self._stop_soon)
        await self.done.wait()
        return self.exit_code

    def _send(self, message: Message) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def _on_message(self, message: Message) -> None:
        op = message.get("op")
        if op == "start":
            self.loop.create_task(self._start(message))
        elif op == "state":
            if self.runtime is not None:
                self.runtime.apply_server_state(message["state"])
        elif op == "ping":
            self._send({"op": "pong", "id": message.get("id")})
        elif op == "stats":
            data = self.runtime.stats_snapshot() if self.runtime is not None else {}
            # Keyed by worker, so that summing the workers' snapshots keeps
            # them apart (phoenix_worker_client_connections).
            data["worker_connections"] = {str(self.index): data.get("connections", 0)}
            self._send({"op": "stats", "id": message.get("id"), "data": data})
        elif op == "reload":
            self._reload(message)
        elif op == "reopen_logs":
            if self.config is not None:
                setup_error_log(self.config.error_log, prefix=f"worker {self.index}")
            if self.runtime is not None:
                self.runtime.reopen_logs()
        elif op == "stop":
            timeout = float(message.get("timeout", 30.0))
            graceful = bool(message.get("graceful", True))
            self.loop.create_task(self._stop(timeout if graceful else 0.0))

    async def _start(self, message: Message) -> None:
        config = PhoenixConfig.model_validate(message["config"])
        self.config = config
        self.index = int(message.get("index", 0))
        setup_error_log(config.error_log, prefix=f"worker {self.index}")
        sockets: dict[str, list[socket.socket]] = {}
        for name, fds in message.get("sockets", {}).items():
            sockets[name] = [socket.socket(fileno=int(fd)) for fd in fds]
        try:
            runtime = Runtime(
                config, self.loop, sockets=sockets, secrets=message.get("secrets", {})
            )
            runtime.apply_server_state(message.get("state", {}))
            await runtime.start(resolve=False)
        except Exception as exc:
            # Say why at once (a certificate gone bad before a restart, say):
            # otherwise the master only learns it from its ready timeout.
            log.error("worker %d cannot start: %s", self.index, exc)
            self._send({"op": "failed", "error": f"worker {self.index}: {exc}"})
            self.exit_code = 1
            self.done.set()
            return
        self.runtime = runtime
        settle()
        self._send({"op": "ready", "pid": os.getpid()})

    def _reload(self, message: Message) -> None:
        reply: dict[str, Any] = {"op": "reloaded", "id": message.get("id")}
        try:
            config = PhoenixConfig.model_validate(message["config"])
            assert self.runtime is not None
            self.runtime.secrets = dict(message.get("secrets", {}))
            self.runtime.reload(config)
            self.runtime.apply_server_state(message.get("state", {}))
            if self.config is None or config.error_log != self.config.error_log:
                setup_error_log(config.error_log, prefix=f"worker {self.index}")
            self.config = config
            reply["ok"] = True
        except Exception as exc:  # reported to the master, which keeps the old config
            reply["ok"] = False
            reply["error"] = f"worker {self.index}: {exc}"
        self._send(reply)

    def _on_channel_closed(self) -> None:
        self.channel = None
        if self._flushed is not None:
            self._flushed.set()
        if not self._stopping:
            log.warning("worker %d: the master is gone; draining and exiting", self.index)
            timeout = self.config.shutdown_timeout if self.config is not None else 5.0
            self.loop.create_task(self._stop(timeout))

    def _stop_soon(self) -> None:
        timeout = self.config.shutdown_timeout if self.config is not None else 5.0
        self.loop.create_task(self._stop(timeout))

    async def _stop(self, timeout: float) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self.runtime is not None:
            await self.runtime.stop(timeout)
            # The master keeps these, so totals do not go backwards when a
            # reload replaces this worker (what it served since the last
            # scrape would be lost otherwise).
            channel = self.channel
            if channel is not None and channel.send(
                {"op": "final", "data": self.runtime.stats_snapshot()}
            ):
                self._flushed = asyncio.Event()
                channel.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self._flushed.wait()
        self.done.set()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m phoenix_lb.control.worker CONTROL_FD", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    loop = new_event_loop()
    try:
        return loop.run_until_complete(WorkerMain(loop).run(int(args[0])))
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
