"""Dockerfile and .dockerignore: what can be checked without a container engine.

The image is not built here (no Docker on these machines).  These tests read
the Dockerfile's instructions: base image, non-root user, ports, health
check and entry point, and that every file it copies exists and is not
excluded from the build context.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

from tests.deploy import metrics_catalogue

ROOT = metrics_catalogue.ROOT
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _args(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


def test_base_image_is_python_slim_matching_requires_python() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    minimum = re.fullmatch(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"])
    assert minimum
    for stage in _stages():
        image = _args(stage, "FROM")[0].split()[0]
        match = re.fullmatch(r"python:3\.(\d+)-slim", image)
        assert match, image
        assert int(match.group(1)) >= int(minimum.group(1))


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    final = _stages()[-1]
    [user] = _args(final, "USER")
    defaults = dict(arg.split("=", 1) for arg in _args(final, "ARG"))
    for variable, value in defaults.items():
        user = user.replace(f"${variable}", value)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert gid.isdigit() and int(gid) != 0


def test_ports_health_check_and_entry_point() -> None:
    final = _stages()[-1]
    assert _args(final, "EXPOSE") == ["80 443 9000"]
    [healthcheck] = _args(final, "HEALTHCHECK")
    assert "http://127.0.0.1:9000/health" in healthcheck
    [entrypoint] = _args(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["phoenix-lb", "run", "-c", "/etc/phoenix-lb/phoenix.yaml"]
    assert _args(final, "STOPSIGNAL") == ["SIGTERM"]


def test_image_must_be_compiled() -> None:
    # The build falls back to pure Python silently; the image checks it did not.
    final = " ".join(_args(_stages()[-1], "RUN"))
    assert "hot_path_build" in final and "'compiled'" in final


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
            for prefix in prefixes
        ):
            ignored = not negate
    return ignored


def test_copied_files_exist_and_are_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for stage in _stages():
        for args in _args(stage, "COPY"):
            if args.startswith("--from"):
                continue
            sources += args.split()[:-1]
    assert {"pyproject.toml", "setup.py", "README.md", "src"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
    # Local environments and stale mypyc builds stay out of the context.
    for path in (".venv", ".venv-dev", "build", ".git", "src/phoenix_lb/__pycache__"):
        assert _ignored(path, patterns), path
