"""The master's data plane: worker processes sharing steered reuseport sockets.

The master opens, for every bind address, one SO_REUSEPORT socket per worker
(steered by client address, see server/sockets.py) and keeps all of them
open; worker ``i`` inherits socket ``i`` of every group.  Because the master
never closes a socket that is still configured, a worker that dies (and is
restarted with backoff) or is replaced by a reload never makes the kernel
refuse a connection: it waits in that socket's queue for the next worker.

Messages to a worker: ``start`` (config, socket fds, server state),
``state``, ``stats``, ``reload``, ``reopen_logs``, ``stop``.  From a worker:
``ready``, ``stats``, ``reloaded``.

Reloads that keep every listener address are applied inside the workers
(their open connections finish on the old config).  When addresses change,
a new generation of workers starts with the new sockets; once all are ready
the old generation drains and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from phoenix_lb.admin.metrics import Snapshot
from phoenix_lb.config.schema import PhoenixConfig, split_host_port
from phoenix_lb.control.channel import ChannelProtocol, Message
from phoenix_lb.server.sockets import worker_socket_groups

log = logging.getLogger("phoenix_lb")

READY_TIMEOUT = 30.0
STATS_TIMEOUT = 2.0
# Restart backoff: 0.1 s doubling to 10 s; reset once a worker lived 30 s.
BACKOFF_START = 0.1
BACKOFF_MAX = 10.0
STABLE_AFTER = 30.0


def worker_count(config: PhoenixConfig) -> int:
    """``workers: auto`` is one per CPU this process may run on."""
    if config.workers == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    return int(config.workers)


class Worker:
    """One worker process and its control channel."""

    def __init__(self, index: int, generation: int) -> None:
        self.index = index
        self.generation = generation
        self.process: asyncio.subprocess.Process | None = None
        self.channel: ChannelProtocol | None = None
        self.ready: asyncio.Future[None] | None = None
        self.started_at = time.monotonic()
        self.last_stats: Snapshot | None = None
        self.stopping = False
        self.pending: dict[int, asyncio.Future[Message]] = {}

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0


class WorkerPool:
    """The data plane as worker processes (``workers > 1`` or ``auto``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        on_worker_death: Callable[[Snapshot | None], None] | None = None,
    ) -> None:
        self.loop = loop
        self.config: PhoenixConfig | None = None
        self.count = 1
        #: bind address -> its socket group (one socket per worker)
        self.groups: dict[str, list[socket.socket]] = {}
        #: the current worker processes
        self.procs: list[Worker] = []
        #: workers of a replaced generation, still draining
        self._retiring: list[Worker] = []
        self.generation = 0
        self.restarts = 0
        self.state: dict[str, Any] = {}
        self.secrets: dict[str, str] = {}
        self._message_id = 0
        self._backoff: dict[int, float] = {}
        self._stopping = False
        self._on_worker_death = on_worker_death

    # -- DataPlane ---------------------------------------------------------------

    async def start(
        self, config: PhoenixConfig, state: dict[str, Any], secrets: dict[str, str]
    ) -> None:
        self.config = config
        self.state = state
        self.secrets = secrets
        self.count = worker_count(config)
        self._open_sockets(config)
        await self._start_generation(config)
        log.info("started %d worker processes", self.count)

    def apply_state(self, state: dict[str, Any]) -> None:
        self.state = state
        for worker in self.procs:
            if worker.channel is not None:
                worker.channel.send({"op": "state", "state": state})

    async def state_applied(self) -> None:
        """Wait until every worker has processed the state sent before (a ping:
        the channel is ordered, so its answer comes after the state)."""

        async def one(worker: Worker) -> None:
            # A dead worker gets the state when it is restarted.
            with contextlib.suppress(TimeoutError, ConnectionError):
                await self._request(worker, {"op": "ping"}, STATS_TIMEOUT)

        await asyncio.gather(*(one(w) for w in self.procs))

    async def stats(self) -> list[Snapshot]:
        async def one(worker: Worker) -> Snapshot | None:
            try:
                reply = await self._request(worker, {"op": "stats"}, STATS_TIMEOUT)
            except (TimeoutError, ConnectionError):
                return worker.last_stats
            data = reply.get("data")
            if isinstance(data, dict):
                worker.last_stats = data
            return worker.last_stats

        # Workers a reload replaced count until they exit (then their final
        # counters go to the control plane): totals never dip.
        results = await asyncio.gather(*(one(w) for w in [*self.procs, *self._retiring]))
        return [r for r in results if r]

    async def reload(
        self, config: PhoenixConfig, state: dict[str, Any], secrets: dict[str, str]
    ) -> None:
        assert self.config is not None
        self.state = state
        self.secrets = secrets
        if worker_count(config) != self.count:
            raise ValueError("the number of workers changes only with a restart")
        if _binds(config) == _binds(self.config):
            replies = await asyncio.gather(
                *(
                    self._request(
                        w,
                        {
                            "op": "reload",
                            "config": config.model_dump(mode="json"),
                            "state": state,
                            "secrets": secrets,
                        },
                        READY_TIMEOUT,
                    )
                    for w in self.procs
                ),
                return_exceptions=True,
            )
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise RuntimeError(f"a worker did not confirm the reload: {reply!r}")
                if not reply.get("ok"):
                    raise RuntimeError(str(reply.get("error", "a worker refused the reload")))
            self.config = config
            return
        # New addresses: a new generation of workers with the new sockets.
        old_groups = dict(self.groups)
        self._open_sockets(config)
        old_workers = list(self.procs)
        try:
            await self._start_generation(config)
        except Exception:
            for worker in self.procs:
                if worker not in old_workers:
                    self._kill(worker)
            self.procs = old_workers
            for bind, group in self.groups.items():
                if bind not in old_groups:
                    for sock in group:
                        sock.close()
            self.groups = old_groups
            raise
        self.config = config
        self._retiring.extend(old_workers)
        for worker in old_workers:
            worker.stopping = True
            if worker.channel is not None:
                worker.channel.send(
                    {"op": "stop", "timeout": config.shutdown_timeout, "graceful": True}
                )
        for bind, group in old_groups.items():
            if bind not in self.groups:
                for sock in group:
                    sock.close()

    async def stop(self, timeout: float, *, graceful: bool = True) -> None:
        self._stopping = True
        for worker in self.procs:
            worker.stopping = True
            if worker.channel is not None:
                worker.channel.send({"op": "stop", "timeout": timeout, "graceful": graceful})
            elif worker.process is not None and worker.process.returncode is None:
                worker.process.terminate()
        # Our copies go now, the workers close theirs as they stop: new
        # clients are refused instead of queueing behind the drain.
        self._close_groups(self.groups)
        self.groups = {}
        deadline = self.loop.time() + (timeout if graceful else 0.0) + 5.0
        for worker in self.procs:
            process = worker.process
            if process is None or process.returncode is not None:
                continue
            try:
                async with asyncio.timeout(max(deadline - self.loop.time(), 0.1)):
                    await process.wait()
            except TimeoutError:
                log.warning(
                    "worker %d (pid %d) did not stop in time; killing it", worker.index, worker.pid
                )
                self._kill(worker)

    def reopen_logs(self) -> None:
        for worker in self.procs:
            if worker.channel is not None:
                worker.channel.send({"op": "reopen_logs"})

    @property
    def workers(self) -> int:
        return self.count

    @property
    def worker_restarts(self) -> int:
        return self.restarts

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.procs]

    # -- sockets -----------------------------------------------------------------

    def _open_sockets(self, config: PhoenixConfig) -> None:
        wanted = [bind for listener in config.listeners for bind in listener.bind]
        new: dict[str, list[socket.socket]] = {}
        for bind in wanted:
            if bind in self.groups:
                new[bind] = self.groups[bind]
                continue
            host, port = split_host_port(bind, default_host="0.0.0.0", allow_port_zero=True)
            try:
                (group,) = worker_socket_groups([(host, port)], self.count, config.listen_backlog)
            except OSError:
                for b, g in new.items():
                    if b not in self.groups:
                        for sock in g:
                            sock.close()
                raise
            new[bind] = group
            log.info("listening on %s (%d sockets, steered by client address)", bind, self.count)
        # Only what this config binds: the caller closes what is left of
        # the previous groups once the workers using them are gone.
        self.groups = new

    @staticmethod
    def _close_groups(groups: dict[str, list[socket.socket]]) -> None:
        for group in groups.values():
            for sock in group:
                sock.close()

    def listening_sockets(self) -> dict[str, list[socket.socket]]:
        """Every listener's sockets (all workers' shares), for the accept-queue metric."""
        if self.config is None:
            return {}
        return {
            item.name: [sock for bind in item.bind for sock in self.groups.get(bind, [])]
            for item in self.config.listeners
        }

    def addresses(self, listener: str) -> list[tuple[str, int]]:
        """Bound (host, port) of a listener (tests; port 0 resolved)."""
        assert self.config is not None
        out = []
        for item in self.config.listeners:
            if item.name == listener:
                for bind in item.bind:
                    name = self.groups[bind][0].getsockname()
                    out.append((str(name[0]), int(name[1])))
        return out

    # -- workers -------------------------------------------------------------------

    async def _start_generation(self, config: PhoenixConfig) -> None:
        self.generation += 1
        workers = [Worker(i, self.generation) for i in range(self.count)]
        await asyncio.gather(*(self._spawn(w, config) for w in workers))
        old = [w for w in self.procs if w.generation != self.generation]
        self.procs = workers
        del old

    async def _spawn(self, worker: Worker, config: PhoenixConfig) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds: dict[str, list[int]] = {}
        pass_fds = [child.fileno()]
        for listener in config.listeners:
            fds[listener.name] = []
            for bind in listener.bind:
                sock = self.groups[bind][worker.index]
                fds[listener.name].append(sock.fileno())
                pass_fds.append(sock.fileno())
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "phoenix_lb.control.worker",
                str(child.fileno()),
                pass_fds=pass_fds,
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child.close()
        worker.ready = self.loop.create_future()
        worker.started_at = time.monotonic()
        _, protocol = await self.loop.create_unix_connection(
            lambda: ChannelProtocol(
                lambda m: self._on_message(worker, m), lambda: self._on_channel_closed(worker)
            ),
            sock=parent,
        )
        worker.channel = protocol
        protocol.send(
            {
                "op": "start",
                "index": worker.index,
                "generation": worker.generation,
                "config": config.model_dump(mode="json"),
                "sockets": fds,
                "state": self.state,
                "secrets": self.secrets,
            }
        )
        self.loop.create_task(self._watch(worker))
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await worker.ready
        except TimeoutError:
            self._kill(worker)
            raise RuntimeError(f"worker {worker.index} did not become ready") from None

    def _on_message(self, worker: Worker, message: Message) -> None:
        op = message.get("op")
        if op == "ready":
            if worker.ready is not None and not worker.ready.done():
                worker.ready.set_result(None)
            return
        if op == "final":
            data = message.get("data")
            if isinstance(data, dict):
                worker.last_stats = data
            return
        if op == "failed":
            if worker.ready is not None and not worker.ready.done():
                worker.ready.set_exception(RuntimeError(str(message.get("error"))))
            return
        reply_to = message.get("id")
        if isinstance(reply_to, int):
            future = worker.pending.pop(reply_to, None)
            if future is not None and not future.done():
                future.set_result(message)

    def _on_channel_closed(self, worker: Worker) -> None:
        worker.channel = None
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("worker channel closed"))
        worker.pending.clear()

    async def _request(self, worker: Worker, message: Message, timeout: float) -> Message:
        channel = worker.channel
        if channel is None:
            raise ConnectionError("worker channel closed")
        self._message_id += 1
        # Our own id: the counter moves on while we wait (overlapping stats
        # scrapes and reloads), and popping its current value would drop
        # another request's pending reply.
        message_id = self._message_id
        future: asyncio.Future[Message] = self.loop.create_future()
        worker.pending[message_id] = future
        channel.send({**message, "id": message_id})
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            worker.pending.pop(message_id, None)

    async def _watch(self, worker: Worker) -> None:
        process = worker.process
        assert process is not None
        code = await process.wait()
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_exception(RuntimeError(f"worker exited with status {code}"))
        if worker in self._retiring:
            self._retiring.remove(worker)
            if self._on_worker_death is not None:
                # A worker of a generation a reload replaced: its counters live on.
                self._on_worker_death(worker.last_stats)
        if self._stopping or worker.stopping or worker not in self.procs:
            return
        lived = time.monotonic() - worker.started_at
        log.error(
            "worker %d (pid %d) exited with status %s after %.1fs; restarting it",
            worker.index,
            worker.pid,
            code,
            lived,
        )
        if self._on_worker_death is not None:
            self._on_worker_death(worker.last_stats)
        delay = self._backoff.get(worker.index, 0.0)
        delay = BACKOFF_START if lived > STABLE_AFTER or not delay else min(delay * 2, BACKOFF_MAX)
        self._backoff[worker.index] = delay
        await asyncio.sleep(delay)
        if self._stopping or self.config is None:
            return
        replacement = Worker(worker.index, worker.generation)
        self.procs[self.procs.index(worker)] = replacement
        self.restarts += 1
        try:
            await self._spawn(replacement, self.config)
        except (OSError, RuntimeError) as exc:
            log.error("worker %d could not be restarted: %s", worker.index, exc)

    def _kill(self, worker: Worker) -> None:
        process = worker.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()


def _binds(config: PhoenixConfig) -> list[tuple[str, list[str]]]:
    return [(listener.name, list(listener.bind)) for listener in config.listeners]
