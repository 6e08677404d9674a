"""docs/config.md is generated from the schema and must not drift (phoenix_lb.config.docs)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from phoenix_lb.config import docs
from phoenix_lb.config.schema import PhoenixConfig

ROOT = Path(__file__).resolve().parents[3]
CHECKED_IN = ROOT / "docs" / "config.md"


def test_checked_in_docs_match_the_schema() -> None:
    # If this fails: python -m phoenix_lb.config.docs > docs/config.md
    assert CHECKED_IN.read_text(encoding="utf-8") == docs.generate()


def _key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        paths.append(path)
        annotation = info.annotation
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is list:
            inner, suffix = args[:1], "[]"
        elif origin is dict:
            inner, suffix = args[1:], ".<name>"
        else:
            inner, suffix = (annotation,), ""
        for candidate in inner:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                paths += _key_paths(candidate, f"{path}{suffix}")
    return paths


def test_every_setting_is_documented() -> None:
    text = docs.reference()
    paths = _key_paths(PhoenixConfig)
    assert "upstreams.<name>.servers[].fail_timeout" in paths
    for path in paths:
        assert f"| `{path}` |" in text, path


def test_defaults_are_rendered_with_units() -> None:
    text = docs.reference()
    assert "| `timeouts.keepalive` | duration | `65s` |" in text
    assert "| `limits.max_header_bytes` | size (at least 1k) | `16k` |" in text
    assert "| `upstreams.<name>.servers[].weight` | integer (1 to 1000) | `1` |" in text
    assert "| `listeners` | list of listeners (not empty) | required |" in text
    assert "| `access_log.format` | `combined` or `json` or `off` | `combined` |" in text


def test_error_example_is_real_loader_output() -> None:
    text = docs.generate()
    assert (
        "phoenix.yaml: upstreams.master_orchestrator.servers[1].address: "
        "port 99999 out of range (line 12)"
    ) in text
    assert "unknown key (did you mean 'keepalive'?)" in text


def test_intro_explains_check_and_units() -> None:
    text = docs.generate()
    assert "phoenix-lb check -c FILE" in text
    assert "nginx -t" in text
    assert re.search(r"`1m30s`", text)


def test_main_writes_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert docs.main() == 0
    assert capsys.readouterr().out == docs.generate()
