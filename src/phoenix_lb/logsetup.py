"""The error log: where the balancer reports what it does and what went wrong."""

from __future__ import annotations

import logging
import sys

from phoenix_lb.config.schema import ErrorLogConfig

_FORMAT = "%(asctime)s [%(levelname)s] %(message)s"


def setup_error_log(config: ErrorLogConfig) -> logging.Logger:
    """Configure the ``phoenix_lb`` logger from the config."""
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
    new_handler.setFormatter(logging.Formatter(_FORMAT, "%Y/%m/%d %H:%M:%S"))
    logger.addHandler(new_handler)
    logger.setLevel(config.level.upper())
    logger.propagate = False
    return logger
