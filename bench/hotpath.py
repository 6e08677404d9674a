"""Per-request CPU cost of the proxy's own Python code, without sockets.

Drives one downstream H1Connection and one upstream UpstreamConnection over
fake transports: feed a request, feed the upstream's response, repeat.
What it measures is exactly the work the proxy adds on top of the kernel
and the event loop, so optimizations can be compared in seconds and
without noise from other processes.  Run:
    .venv/bin/python bench/hotpath.py [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any

from phoenix_lb.config.schema import PhoenixConfig
from phoenix_lb.eventloop import new_event_loop
from phoenix_lb.server.h1 import H1Connection
from phoenix_lb.server.runtime import Runtime
from phoenix_lb.upstream.connection import UpstreamConnection

REQUEST = (
    b"GET /api/v1/status HTTP/1.1\r\nHost: phoenix-orch.example.com\r\n"
    b"User-Agent: wrk\r\nAccept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 22:54:26 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 16\r\nConnection: keep-alive\r\n\r\n"
    b"hello from mo-1\n"
)


class FakeTransport:
    """Just enough of asyncio.Transport for the protocols."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.written.append(b"".join(data))

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=50000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    config = PhoenixConfig.model_validate(
        {
            "listeners": [
                {"name": "l", "bind": ["127.0.0.1:0"], "routes": [{"path": "/", "upstream": "u"}]}
            ],
            "upstreams": {
                "u": {
                    "keepalive_requests": 100000000,
                    "servers": [
                        {"address": "127.0.0.1:1"},
                        {"address": "127.0.0.1:2"},
                        {"address": "127.0.0.1:3"},
                    ],
                }
            },
            "access_log": {"format": "off"},
        }
    )
    loop = new_event_loop()
    runtime = Runtime(config, loop)
    loop.run_until_complete(runtime.start())
    context = runtime.listeners[0].context
    # One idle upstream connection per server, on fake transports.
    upstreams = []
    for server in runtime.groups["u"].servers:
        conn = UpstreamConnection(server.pool, loop)
        conn.connection_made(FakeTransport(("127.0.0.1", server.port)))  # type: ignore[arg-type]
        server.pool.release(conn, loop.time())
        upstreams.append(conn)
    down = H1Connection(context)
    down_transport = FakeTransport(("10.0.0.1", 5555))
    down.connection_made(down_transport)  # type: ignore[arg-type]

    def one() -> None:
        down.data_received(REQUEST)
        for conn in upstreams:
            if conn.sink is not None:
                conn.data_received(RESPONSE)
                break
        else:
            raise SystemExit("no upstream was given the request")

    for _ in range(1000):
        one()
    n = args.n
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    start = time.perf_counter()
    for _ in range(n):
        one()
    elapsed = time.perf_counter() - start
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
    print(f"{elapsed / n * 1e6:.2f} us per request (Python work of the proxy, no syscalls)")
    print("sample response:", down_transport.written[-1][:60])
    loop.run_until_complete(runtime.stop(0))
    loop.close()


if __name__ == "__main__":
    main()
