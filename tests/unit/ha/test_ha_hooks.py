"""phoenix_lb.ha.hooks: what keepalived runs must stay a standard-library-only Python file."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from phoenix_lb.ha import hooks

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "src" / "phoenix_lb" / "ha" / "hooks.py"


def test_imports_only_the_standard_library() -> None:
    # keepalived runs it with the resolved base interpreter, outside any virtualenv.
    tree = ast.parse(SOURCE.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules, "no imports found"
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def test_is_not_compiled() -> None:
    # A mypyc-compiled hooks would have no .py file for keepalived to run.
    assert "src/phoenix_lb/ha/hooks.py" not in (ROOT / "setup.py").read_text()
    assert hooks.__file__ is not None and hooks.__file__.endswith(".py")


@pytest.mark.parametrize("url", ["127.0.0.1:9000/health", "ftp://x/health", "http:///health"])
def test_check_refuses_non_http_urls(url: str) -> None:
    assert hooks.check_health(url, 1.0) == (False, "expected an http:// or https:// URL")


def test_bad_port() -> None:
    assert hooks.check_health("http://127.0.0.1:99999/health", 1.0) == (False, "invalid port")


def test_notify_via_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s"
    assert hooks.main(["notify", "--state-file", str(state), "BACKUP", "INSTANCE", "x"]) == 0
    assert state.read_text() == "BACKUP\n"
    assert hooks.main(["notify", "--state-file", str(tmp_path / "no/such/dir"), "MASTER"]) == 1
    assert "phoenix-lb ha notify:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        hooks.main(["notify", "--state-file", str(state), "LEADER"])
