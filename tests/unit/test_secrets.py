"""The generated sticky cookie key: kept in state_dir, or at least for the process's life."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from phoenix_lb.config.schema import StickyConfig
from phoenix_lb.secrets import sticky_secret


def test_generated_key_is_kept_in_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = sticky_secret(StickyConfig(), str(state), None)
    assert (state / "sticky.key").read_bytes().strip() == first
    assert (state / "sticky.key").stat().st_mode & 0o777 == 0o600
    assert sticky_secret(StickyConfig(), str(state), None) == first


def test_unwritable_state_dir_keeps_one_key_for_the_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state = str(blocker / "state")  # cannot be created
    with caplog.at_level(logging.WARNING, logger="phoenix_lb"):
        keys = {sticky_secret(StickyConfig(), state, None) for _ in range(3)}
    # A reload asks again: the same key, or every client would be re-pinned.
    assert len(keys) == 1
    warnings = [r for r in caplog.records if "cannot keep the sticky cookie key" in r.message]
    assert len(warnings) == 1
