"""The error log: where the balancer reports what it does and what went wrong.

Lines are written by a thread per destination (``QueueHandler`` in front,
``QueueListener`` behind), so a slow disk or a full pipe never stalls the
event loop that logged them, as the access log never does either.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import sys

from phoenix_lb.config.schema import ErrorLogConfig

_DATE = "%Y/%m/%d %H:%M:%S"

#: logger name -> (the thread writing its lines, the handler it writes to)
_writers: dict[str, tuple[logging.handlers.QueueListener, logging.Handler]] = {}
#: the process role of the last setup_error_log (listener logs use it too)
_prefix = ""


def setup_error_log(config: ErrorLogConfig, *, prefix: str = "") -> logging.Logger:
    """Configure the ``phoenix_lb`` logger from the config (again, to reopen the file).

    Lines read ``2026/11/29 22:39:21 [WARNING] 1234#worker 1: message``: the pid
    and the process role, so the master's and the workers' lines can be told apart.
    """
    global _prefix
    _prefix = prefix
    logger = logging.getLogger("phoenix_lb")
    _attach(logger, config, prefix)
    return logger


def listener_error_log(name: str, config: ErrorLogConfig) -> logging.Logger:
    """A listener's own error log (``listeners[].error_log``): its clients' and upstreams'
    errors go there instead of the main error log."""
    logger = logging.getLogger(f"phoenix_lb.listener.{name}")
    _attach(logger, config, _prefix)
    return logger


def _attach(logger: logging.Logger, config: ErrorLogConfig, prefix: str) -> None:
    previous = _writers.pop(logger.name, None)
    if previous is not None:
        previous[0].stop()  # writes what is queued first
        previous[1].close()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    target: logging.Handler
    if config.path == "stderr":
        target = logging.StreamHandler(sys.stderr)
    elif config.path == "stdout":
        target = logging.StreamHandler(sys.stdout)
    else:
        target = logging.FileHandler(config.path, encoding="utf-8")
    who = f"{os.getpid()}#{prefix}: " if prefix else ""
    target.setFormatter(logging.Formatter(f"%(asctime)s [%(levelname)s] {who}%(message)s", _DATE))
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.handlers.QueueListener(lines, target)
    writer.start()
    _writers[logger.name] = (writer, target)
    logger.addHandler(logging.handlers.QueueHandler(lines))
    logger.setLevel(config.level.upper())
    logger.propagate = False


def flush_error_logs() -> None:
    """Write every queued line and stop the writer threads (at exit)."""
    for name in list(_writers):
        writer, target = _writers.pop(name)
        writer.stop()
        target.flush()
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        # Anything logged after this goes straight to the destination.
        logger.addHandler(target)


atexit.register(flush_error_logs)
