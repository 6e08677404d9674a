"""Build: the hot-path modules are compiled with mypyc unless PHOENIX_LB_PURE=1.

mypyc turns the strictly typed modules into C extensions (about twice the
request throughput on the benchmark machine); the same sources run as plain
Python when compilation is switched off or impossible.  Use PHOENIX_LB_PURE=1
for editable development installs, so that edits are not shadowed by stale
compiled modules.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Fall back to pure Python when the C compiler fails, with a clear warning."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler failure: fall back
            print(f"phoenix-lb: compiling failed ({exc}); pure Python", file=sys.stderr)

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)  # type: ignore[arg-type]
        except Exception as exc:
            print(f"phoenix-lb: cannot compile {ext}: {exc}; pure Python", file=sys.stderr)

# Modules on the request path.  Everything else (config, CLI, admin) stays
# Python: it runs once, and pydantic models do not compile.
COMPILED = [
    "src/phoenix_lb/clock.py",
    "src/phoenix_lb/deadline.py",
    "src/phoenix_lb/balancing/__init__.py",
    "src/phoenix_lb/balancing/base.py",
    "src/phoenix_lb/balancing/least_conn.py",
    "src/phoenix_lb/balancing/round_robin.py",
    "src/phoenix_lb/health/passive.py",
    "src/phoenix_lb/http/errors.py",
    "src/phoenix_lb/http/path.py",
    "src/phoenix_lb/http/request.py",
    "src/phoenix_lb/http/response.py",
    "src/phoenix_lb/http/status.py",
    "src/phoenix_lb/server/context.py",
    "src/phoenix_lb/server/downstream.py",
    "src/phoenix_lb/server/exchange.py",
    "src/phoenix_lb/server/h1.py",
    # admission.py and h2.py subclass or call the compiled exchange (a compiled
    # class cannot be subclassed by interpreted code).
    "src/phoenix_lb/server/admission.py",
    "src/phoenix_lb/server/h2.py",
    "src/phoenix_lb/http/hpack_static.py",
    "src/phoenix_lb/server/route.py",
    "src/phoenix_lb/server/router.py",
    "src/phoenix_lb/server/tunnel.py",
    "src/phoenix_lb/stats.py",
    "src/phoenix_lb/sticky.py",
    "src/phoenix_lb/access.py",
    "src/phoenix_lb/realip.py",
    "src/phoenix_lb/limits/__init__.py",
    "src/phoenix_lb/limits/ratelimit.py",
    "src/phoenix_lb/limits/connlimit.py",
    "src/phoenix_lb/http/proxy_protocol.py",
    "src/phoenix_lb/balancing/random_two.py",
    "src/phoenix_lb/balancing/ewma.py",
    "src/phoenix_lb/balancing/consistent_hash.py",
    "src/phoenix_lb/upstream/connection.py",
    "src/phoenix_lb/upstream/group.py",
    "src/phoenix_lb/upstream/pool.py",
    "src/phoenix_lb/upstream/server.py",
]


def _ext_modules() -> list[object]:
    if os.environ.get("PHOENIX_LB_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("phoenix-lb: mypyc not available, installing pure Python", file=sys.stderr)
        return []
    # The build environment has only build requirements: modules outside the
    # compiled set (pydantic models and the like) are followed silently.
    options = ["--follow-imports=silent", "--ignore-missing-imports"]
    return list(mypycify(options + COMPILED, opt_level="3"))


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
