"""OpenSSL session-cache settings that Python's ``ssl`` module does not expose.

``ssl.SSLContext`` wraps an OpenSSL ``SSL_CTX`` but has no setter for the
server's session cache: its size (``SSL_CTX_sess_set_cache_size``), whether
it is on (``SSL_CTX_set_session_cache_mode``) and how long sessions and
TLS 1.3 tickets live (``SSL_CTX_set_timeout``; OpenSSL's default is 7200 s).
nginx's ``ssl_session_cache`` and ``ssl_session_timeout`` are exactly these,
so without them two settings of the seed's config would mean nothing.  This
module calls the three through ctypes on the libssl the ``ssl`` module uses.

How the ``SSL_CTX`` is reached: CPython's ``PySSLContext`` is ``PyObject_HEAD``
followed by ``SSL_CTX *ctx`` (``Modules/_ssl.c``, the same from 3.7 to 3.13),
so the pointer sits ``object.__basicsize__`` bytes into the object.  Nothing is
written before two checks pass: the interpreter is a CPython we know, and
``SSL_CTX_get_options(pointer)`` equals ``ctx.options`` (a 64-bit value; a
wrong pointer would not give it back).  Every value set is read back.

When anything is off (another interpreter, OpenSSL linked statically into
``_ssl``, a layout change), :func:`apply_session_cache` returns the reason and
calls nothing; the caller logs it and OpenSSL's defaults stay (20480 sessions
per process, 7200 s).  Nothing here runs per connection: only when a listener's
contexts are built.
"""

from __future__ import annotations

import ctypes
import platform
import re
import ssl
import sys
from functools import cache

__all__ = ["apply_session_cache", "native_unavailable_reason", "session_cache_settings"]

# ssl.h (OpenSSL 1.1 and 3.x).
_SSL_CTRL_SET_SESS_CACHE_SIZE = 42
_SSL_CTRL_GET_SESS_CACHE_SIZE = 43
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_GET_SESS_CACHE_MODE = 45
_SSL_SESS_CACHE_OFF = 0x0000
_SSL_SESS_CACHE_SERVER = 0x0002

# Interpreters whose PySSLContext layout was checked against Modules/_ssl.c.
_KNOWN_PYTHONS = ((3, 11), (3, 12), (3, 13))


class _LibSSL:
    __slots__ = ("ctrl", "get_options", "get_timeout", "set_timeout")

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ctrl.restype = ctypes.c_long
        self.get_options = lib.SSL_CTX_get_options
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64
        self.set_timeout = lib.SSL_CTX_set_timeout
        self.set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
        self.set_timeout.restype = ctypes.c_long
        self.get_timeout = lib.SSL_CTX_get_timeout
        self.get_timeout.argtypes = [ctypes.c_void_p]
        self.get_timeout.restype = ctypes.c_long


@cache
def _libssl() -> _LibSSL | str:
    """The libssl ``_ssl`` is linked against, or why it cannot be used."""
    if platform.python_implementation() != "CPython":
        return f"{platform.python_implementation()} is not CPython"
    if sys.version_info[:2] not in _KNOWN_PYTHONS:
        return f"Python {sys.version_info[0]}.{sys.version_info[1]} is not a checked version"
    if getattr(sys, "_is_gil_enabled", lambda: True)() is False:
        return "free-threaded Python has another object layout"
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = set(re.findall(r"(/\S*/libssl\.so[.\d]*)$", maps.read(), re.MULTILINE))
    except OSError as exc:
        return f"cannot read /proc/self/maps ({exc.strerror})"
    if len(paths) != 1:
        # None: OpenSSL is linked into _ssl statically; several: ambiguous.
        return f"{len(paths)} libssl shared libraries loaded, expected one"
    try:
        return _LibSSL(ctypes.CDLL(paths.pop()))
    except (OSError, AttributeError) as exc:
        return f"cannot use libssl ({exc})"


def _ssl_ctx_pointer(lib: _LibSSL, ctx: ssl.SSLContext) -> int | str:
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer:
        return "no SSL_CTX pointer where expected"
    if lib.get_options(pointer) != ctx.options:
        return "SSL_CTX pointer check failed"
    return pointer


def native_unavailable_reason() -> str | None:
    """Why the session cache cannot be configured here, or None when it can."""
    lib = _libssl()
    if isinstance(lib, str):
        return lib
    found = _ssl_ctx_pointer(lib, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    return found if isinstance(found, str) else None


def apply_session_cache(
    ctx: ssl.SSLContext, *, sessions: int, timeout: int, enabled: bool
) -> str | None:
    """Set the server session cache of ``ctx``; None on success, else the reason it was not.

    ``sessions`` is the most sessions kept (0: OpenSSL's unbounded), ``timeout``
    the lifetime of sessions and TLS 1.3 tickets in seconds, ``enabled`` False
    turns the stateful cache off (tickets are the caller's business:
    ``num_tickets`` and ``OP_NO_TICKET``).
    """
    lib = _libssl()
    if isinstance(lib, str):
        return lib
    pointer = _ssl_ctx_pointer(lib, ctx)
    if isinstance(pointer, str):
        return pointer
    mode = _SSL_SESS_CACHE_SERVER if enabled else _SSL_SESS_CACHE_OFF
    lib.ctrl(pointer, _SSL_CTRL_SET_SESS_CACHE_MODE, mode, None)
    lib.ctrl(pointer, _SSL_CTRL_SET_SESS_CACHE_SIZE, sessions, None)
    lib.set_timeout(pointer, timeout)
    if session_cache_settings(ctx) != (mode, sessions, timeout):
        return "OpenSSL did not keep the values set"
    return None


def session_cache_settings(ctx: ssl.SSLContext) -> tuple[int, int, int] | None:
    """(cache mode, size, timeout) of ``ctx`` as OpenSSL holds them (tests, diagnostics)."""
    lib = _libssl()
    if isinstance(lib, str):
        return None
    pointer = _ssl_ctx_pointer(lib, ctx)
    if isinstance(pointer, str):
        return None
    return (
        int(lib.ctrl(pointer, _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None)),
        int(lib.ctrl(pointer, _SSL_CTRL_GET_SESS_CACHE_SIZE, 0, None)),
        int(lib.get_timeout(pointer)),
    )
