"""Access log: one line per request, written by a thread so the loop never blocks.

Lines are appended to an in-memory list (cheap under the GIL); a writer
thread swaps the list out and writes it in one call, at most every 100 ms or
sooner when it grows.  With ``format: off`` there is no AccessLog object at
all, so logging costs nothing per request.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import IO, Protocol


class LoggedRequest(Protocol):
    """What a request exposes to the access log."""

    def log_fields(self) -> dict[str, object]: ...


_FLUSH_LINES = 256


def _escape(value: bytes) -> str:
    """nginx-style escaping: quotes, backslashes and non-printables as \\xHH."""
    out = []
    for byte in value:
        if byte == 0x22 or byte == 0x5C or byte < 0x20 or byte > 0x7E:
            out.append(f"\\x{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def _printable(value: bytes) -> str:
    if all(0x20 <= b <= 0x7E and b not in (0x22, 0x5C) for b in value):
        return value.decode("ascii")
    return _escape(value)


def format_combined(fields: dict[str, object]) -> str:
    """The nginx/Apache combined format, then request id, upstream, times and TLS.

    The first nine fields are exactly ``combined``, so tools that parse it
    (GoAccess, awstats) keep working; the rest follow as ``key=value``.
    """
    request = fields["request"]
    assert isinstance(request, bytes)
    referer = fields.get("referer") or b"-"
    agent = fields.get("user_agent") or b"-"
    rid = fields.get("request_id") or b"-"
    assert isinstance(referer, bytes) and isinstance(agent, bytes) and isinstance(rid, bytes)
    urt = fields.get("upstream_response_time")
    return (
        f'{fields["remote_addr"]} - - [{fields["time_local"]}] "{_printable(request)}" '
        f'{fields["status"]} {fields["body_bytes_sent"]} "{_printable(referer)}" '
        f'"{_printable(agent)}" rid={_printable(rid)} '
        f"upstream={fields.get('upstream_addr') or '-'} rt={fields.get('request_time')} "
        f"urt={'-' if urt is None else urt} tls={fields.get('tls') or '-'}\n"
    )


def format_json(fields: dict[str, object]) -> str:
    """One JSON object per line; bytes become text with invalid bytes escaped."""
    out: dict[str, object] = {}
    for key, value in fields.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "backslashreplace")
        out[key] = value
    return json.dumps(out, separators=(",", ":")) + "\n"


class AccessLog:
    """Buffered access log writer for one destination."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.format = format_json if fmt == "json" else format_combined
        self._stream: IO[str] = self._open()
        self._lines: list[str] = []
        self._wake = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="phoenix-access-log", daemon=True)
        self._thread.start()

    def _open(self) -> IO[str]:
        if self.path == "stdout":
            return sys.stdout
        if self.path == "stderr":
            return sys.stderr
        return open(self.path, "a", encoding="utf-8", buffering=1 << 16)

    def log(self, request: LoggedRequest) -> None:
        """Queue one line for ``request``."""
        lines = self._lines
        lines.append(self.format(request.log_fields()))
        if len(lines) >= _FLUSH_LINES:
            self._wake.set()

    def reopen(self) -> None:
        """Reopen the file (after logrotate moved it)."""
        with self._lock:
            old = self._stream
            self._stream = self._open()
            if old not in (sys.stdout, sys.stderr):
                old.close()

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        with self._lock:
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except (OSError, ValueError):
                pass

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(0.1)
            self._wake.clear()
            self._flush()
        self._flush()

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)
        if self._stream not in (sys.stdout, sys.stderr):
            self._stream.close()


def open_access_log(path: str, fmt: str) -> AccessLog | None:
    """An AccessLog, or None for ``format: off`` (no per-request cost)."""
    if fmt == "off":
        return None
    if path not in ("stdout", "stderr"):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
    return AccessLog(path, fmt)
