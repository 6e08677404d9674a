"""Fixtures for integration tests: real backends, the proxy in-process or as a subprocess.

* ``backends(n)`` starts ``n`` :class:`~tests.support.Backend` servers on
  ephemeral ports; all are stopped at teardown.
* ``proxy(config_dict)`` runs :class:`phoenix_lb.server.runtime.Runtime` on a
  uvloop loop in a background thread, bound to 127.0.0.1:0, and returns a
  :class:`ProxyInstance` (its ``port`` and ``runtime`` for inspecting pools,
  in-flight counts and passive health).  Stopped at teardown.
* ``run_proxy_subprocess(yaml_text)`` starts ``phoenix-lb run -c FILE`` as a
  child process (``{port}`` in the text is replaced by a free port), waits
  until it answers and stops it by PID at teardown.

``helpers.make_config(...)`` builds a config dict of the YAML's shape quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from phoenix_lb.config.schema import PhoenixConfig
from phoenix_lb.eventloop import new_event_loop
from phoenix_lb.server.runtime import Runtime
from phoenix_lb.upstream.group import UpstreamGroup
from phoenix_lb.upstream.server import Server
from tests.support import Backend

from .helpers import free_port, phoenix_lb_command, port_answers

_T = TypeVar("_T")

_STOP_TIMEOUT = 10.0


# ---------------------------------------------------------------- backends


@pytest.fixture
def backends() -> Iterator[Callable[..., list[Backend]]]:
    """Factory: ``backends(n, names=None)`` starts n backends (b0, b1, ...)."""
    started: list[Backend] = []

    def start(n: int, names: Sequence[str] | None = None) -> list[Backend]:
        out = []
        for i in range(n):
            name = names[i] if names is not None else f"b{len(started)}"
            backend = Backend(name).start()
            started.append(backend)
            out.append(backend)
        return out

    yield start
    errors: list[BaseException] = []
    for backend in started:
        try:
            backend.stop()
        except BaseException as exc:  # stop the rest, then report
            errors.append(exc)
    if errors:
        raise errors[0]


# ---------------------------------------------------------------- in-process proxy


class ProxyInstance:
    """The proxy's Runtime running on a uvloop loop in a background thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = PhoenixConfig.model_validate(config)
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="proxy-loop", daemon=True)
        self.thread.start()
        self._stopped = False

        async def start() -> Runtime:
            runtime = Runtime(self.config, asyncio.get_running_loop())
            await runtime.start()
            return runtime

        try:
            self.runtime = self.call(start())
        except BaseException:
            self._shutdown_loop()
            raise
        host, port = self.runtime.listeners[0].addresses[0]
        self.host = host
        self.port = port

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = _STOP_TIMEOUT) -> _T:
        """Run ``coro`` on the proxy's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def group(self, name: str = "app") -> UpstreamGroup:
        return self.runtime.groups[name]

    def server(self, index: int, group: str = "app") -> Server:
        return self.runtime.groups[group].servers[index]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.call(self.runtime.stop(1.0))
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        async def cancel_leftovers() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Let transports closed above run their close callbacks.
            await asyncio.sleep(0)
            await asyncio.sleep(0)

        try:
            with contextlib.suppress(Exception):
                self.call(cancel_leftovers())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(_STOP_TIMEOUT)
            if not self.thread.is_alive():
                self.loop.close()


@pytest.fixture
def proxy() -> Iterator[Callable[[dict[str, Any]], ProxyInstance]]:
    """Factory: ``proxy(config_dict)`` starts the proxy in-process; stopped at teardown."""
    started: list[ProxyInstance] = []

    def start(config: dict[str, Any]) -> ProxyInstance:
        instance = ProxyInstance(config)
        started.append(instance)
        return instance

    yield start
    errors: list[BaseException] = []
    for instance in reversed(started):
        try:
            instance.stop()
        except BaseException as exc:  # stop the rest, then report
            errors.append(exc)
    if errors:
        raise errors[0]


# ---------------------------------------------------------------- subprocess proxy


class ProxyProcess:
    """``phoenix-lb run -c FILE`` as a child process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, stderr_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.stderr_path = stderr_path

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_answers(self.port):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"phoenix-lb exited with {self.proc.returncode} before listening:\n"
                    f"{self.stderr_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"phoenix-lb not listening on {self.port} after {timeout}s:\n"
                    f"{self.stderr_text()}"
                )
            time.sleep(0.02)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM by PID, SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode


@pytest.fixture
def run_proxy_subprocess(
    tmp_path: Path,
) -> Iterator[Callable[..., ProxyProcess]]:
    """Factory: ``run_proxy_subprocess(yaml_text, wait=True)``.

    ``{port}`` in the text is replaced by a free port (``.port`` of the
    result).  With ``wait`` it returns once the port answers.
    """
    started: list[ProxyProcess] = []

    def start(config_yaml_text: str, *, wait: bool = True) -> ProxyProcess:
        port = free_port()
        index = len(started)
        config_path = tmp_path / f"phoenix-{index}.yaml"
        config_path.write_text(config_yaml_text.replace("{port}", str(port)))
        stderr_path = tmp_path / f"phoenix-{index}.stderr"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                phoenix_lb_command("run", "-c", str(config_path)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=tmp_path,
            )
        process = ProxyProcess(proc, port, stderr_path)
        started.append(process)
        if wait:
            process.wait_ready()
        return process

    yield start
    for process in started:
        process.terminate()
