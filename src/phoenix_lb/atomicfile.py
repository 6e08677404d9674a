"""Write a file so that readers see the old content or the new, never a torn mix.

The data goes to a temporary file in the target's directory (same file
system, so the rename is atomic), is flushed to disk, gets its mode, and is
renamed over the target; on any failure the temporary file is removed and the
target is untouched.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically; the file ends up with ``mode``."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    temp = os.path.join(directory, f".{os.path.basename(target)}.{os.getpid()}.tmp")
    # Created with no permissions for others from the first byte: the content
    # may be a secret.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            os.fchmod(file.fileno(), mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
