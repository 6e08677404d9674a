"""Keys the balancer needs but must never print or put in its config file.

The sticky cookie key turns a server's identity into an opaque id; every
balancer process (and every node behind the same address) must use the same
key, or clients lose their server.  It comes from a file, an environment
variable, or is generated once and kept in ``state_dir``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from functools import partial

from phoenix_lb.config.schema import PhoenixConfig, StickyConfig

log = logging.getLogger("phoenix_lb")

MIN_SECRET = 16
_GENERATED = "sticky.key"
#: keys generated for a state_dir that could not keep them: reused for the
#: life of the process, so a reload does not re-pin every client
_RUN_KEYS: dict[str, bytes] = {}


def _resolve_path(path: str, config_path: str | None) -> str:
    if os.path.isabs(path) or config_path is None:
        return path
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), path)


def sticky_secret(sticky: StickyConfig, state_dir: str, config_path: str | None) -> bytes:
    """The key for one upstream's sticky ids; ValueError with a reason when unusable."""
    if sticky.secret_file is not None:
        path = _resolve_path(sticky.secret_file, config_path)
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise ValueError(f"{path}: the sticky key file must not be group or world readable")
        with open(path, "rb") as handle:
            key = handle.read().strip()
    elif sticky.secret_env is not None:
        value = os.environ.get(sticky.secret_env)
        if value is None:
            raise ValueError(f"environment variable {sticky.secret_env} is not set")
        key = value.encode()
    else:
        key = _state_key(state_dir)
    if len(key) < MIN_SECRET:
        raise ValueError(f"the sticky key must be at least {MIN_SECRET} bytes")
    return key


def _state_key(state_dir: str) -> bytes:
    path = os.path.join(state_dir, _GENERATED)
    try:
        with open(path, "rb") as handle:
            key = handle.read().strip()
        if len(key) >= MIN_SECRET:
            return key
    except (FileNotFoundError, NotADirectoryError):
        pass
    earlier = _RUN_KEYS.get(state_dir)
    key = earlier or secrets.token_hex(32).encode()
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
    except FileExistsError:
        with open(path, "rb") as handle:
            return handle.read().strip()
    except OSError as exc:
        if earlier is None:
            log.warning(
                "cannot keep the sticky cookie key in %s (%s): using one for this run only; "
                "clients will be re-pinned after a restart (set sticky.secret_file)",
                state_dir,
                exc,
            )
            _RUN_KEYS[state_dir] = key
    return key


def read_admin_token(token_file: str | None, config_path: str | None) -> str | None:
    """The admin bearer token from ``admin.auth_token_file`` (None when unset).

    OSError when unreadable, ValueError when too loose or too short.
    """
    if token_file is None:
        return None
    path = _resolve_path(token_file, config_path)
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise ValueError(f"{path}: the admin token file must not be group or world readable")
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    if len(token) < 16:
        raise ValueError(f"{path}: the admin token must be at least 16 characters")
    return token


def check_secret_sources(config: PhoenixConfig, config_path: str | None) -> list[str]:
    """Problems with the key and token sources a config names, as ``key.path: reason``.

    For ``phoenix-lb check`` and the start of ``run``: a missing sticky key
    file or admin token file is reported with its key, before any process
    starts.  Generated keys (state_dir) are not touched.
    """
    problems = []
    sources: list[tuple[str, Callable[[], object]]] = []
    for name, upstream in config.upstreams.items():
        sticky = upstream.sticky
        if sticky is not None and (sticky.secret_file or sticky.secret_env):
            field = "secret_file" if sticky.secret_file else "secret_env"
            key = partial(sticky_secret, sticky, config.state_dir, config_path)
            sources.append((f"upstreams.{name}.sticky.{field}", key))
    admin = config.admin
    if admin is not None and admin.auth_token_file is not None:
        token = partial(read_admin_token, admin.auth_token_file, config_path)
        sources.append(("admin.auth_token_file", token))
    for where, read in sources:
        try:
            read()
        except OSError as exc:
            problems.append(f"{where}: cannot read {exc.filename}: {exc.strerror}")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def sticky_secrets(config: PhoenixConfig, config_path: str | None) -> dict[str, str]:
    """{upstream: key (text)} for every upstream with sticky sessions."""
    out = {}
    for name, upstream in config.upstreams.items():
        if upstream.sticky is not None:
            out[name] = sticky_secret(upstream.sticky, config.state_dir, config_path).decode(
                "latin-1"
            )
    return out
