"""The error log: lines reach their file through a writer thread, per listener too."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from phoenix_lb.config.schema import ErrorLogConfig
from phoenix_lb.logsetup import (
    _writers,
    flush_error_logs,
    listener_error_log,
    setup_error_log,
)


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    names = ("phoenix_lb", "phoenix_lb.listener.edge")
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
    yield
    flush_error_logs()
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def test_lines_are_written_by_another_thread(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    writers: list[str] = []

    class Spy(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            writers.append(threading.current_thread().name)
            return True

    logger = setup_error_log(ErrorLogConfig(path=str(path), level="info"), prefix="worker 1")
    _writers["phoenix_lb"][1].addFilter(Spy())  # the file side
    logger.info("hello %s", "there")
    logger.debug("not at info")
    flush_error_logs()
    (line,) = path.read_text().splitlines()
    assert "[INFO] " in line and "#worker 1: hello there" in line
    assert len(writers) == 1 and writers[0] != threading.current_thread().name


def test_listener_log_is_separate(tmp_path: Path) -> None:
    main, edge = tmp_path / "main.log", tmp_path / "edge.log"
    setup_error_log(ErrorLogConfig(path=str(main), level="info"))
    own = listener_error_log("edge", ErrorLogConfig(path=str(edge), level="warning"))
    own.warning("upstream 10.0.0.1:80 refused")
    own.info("below this listener's level")
    logging.getLogger("phoenix_lb").info("started")
    flush_error_logs()
    assert "upstream 10.0.0.1:80 refused" in edge.read_text()
    assert "below" not in edge.read_text()
    assert "refused" not in main.read_text() and "started" in main.read_text()


def test_reopen_writes_to_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    config = ErrorLogConfig(path=str(path), level="info")
    logger = setup_error_log(config)
    logger.info("before rotation")
    rotated = tmp_path / "error.log.1"
    flush_error_logs()
    path.rename(rotated)
    logger = setup_error_log(config)  # SIGUSR1
    logger.info("after rotation")
    flush_error_logs()
    assert "before rotation" in rotated.read_text()
    assert path.read_text().count("\n") == 1 and "after rotation" in path.read_text()
