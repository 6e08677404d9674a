"""The error log: where the balancer reports what it does and what went wrong."""

from __future__ import annotations

import logging
import os
import sys

from phoenix_lb.config.schema import ErrorLogConfig

_DATE = "%Y/%m/%d %H:%M:%S"


def setup_error_log(config: ErrorLogConfig, *, prefix: str = "") -> logging.Logger:
    """Configure the ``phoenix_lb`` logger from the config (again, to reopen the file).

    Lines read ``2026/11/29 22:39:21 [WARNING] 1234#worker 1: message``: the pid
    and the process role, so the master's and the workers' lines can be told apart.
    """
    logger = logging.getLogger("phoenix_lb")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    new_handler: logging.Handler
    if config.path == "stderr":
        new_handler = logging.StreamHandler(sys.stderr)
    elif config.path == "stdout":
        new_handler = logging.StreamHandler(sys.stdout)
    else:
        new_handler = logging.FileHandler(config.path, encoding="utf-8")
    who = f"{os.getpid()}#{prefix}: " if prefix else ""
    new_handler.setFormatter(
        logging.Formatter(f"%(asctime)s [%(levelname)s] {who}%(message)s", _DATE)
    )
    logger.addHandler(new_handler)
    logger.setLevel(config.level.upper())
    logger.propagate = False
    return logger
