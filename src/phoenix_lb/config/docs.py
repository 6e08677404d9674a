"""Generate ``docs/config.md`` from the schema, so the reference cannot drift.

Run ``python -m phoenix_lb.config.docs > docs/config.md`` after changing
``schema.py``; ``tests/unit/config/test_docs.py`` fails until you do.

The page is a hand-written introduction (:data:`INTRO`) followed by one table
per settings section, walked from :class:`PhoenixConfig` in declaration order.
The error example in the introduction is produced by running the real loader
on a real mistake, so it is always what ``phoenix-lb check`` prints.
"""

from __future__ import annotations

import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Literal, Union

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from phoenix_lb.config.loader import ConfigError, load_config_text
from phoenix_lb.config.schema import BindAddress, PhoenixConfig, unit_of
from phoenix_lb.config.units import format_duration, format_size

__all__ = ["INTRO", "generate", "main", "reference"]

# A config with three typical mistakes, for the error example in the intro.
_BAD_EXAMPLE = """\
listeners:
  - name: public
    bind: ["127.0.0.1:8080"]
    routes:
      - path: /
        upstream: master_orchestrater
upstreams:
  master_orchestrator:
    keepalve: 64
    servers:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:99999
"""

INTRO = """\
# Configuration

Phoenix LB reads one YAML file, given with `-c`:

```sh
phoenix-lb run -c /etc/phoenix-lb/phoenix.yaml     # run in the foreground
phoenix-lb check -c /etc/phoenix-lb/phoenix.yaml   # validate only, like nginx -t
```

[`examples/minimal.yaml`](../examples/minimal.yaml) is the smallest useful
file; [`examples/phoenix.yaml`](../examples/phoenix.yaml) is the Phoenix
Orchestrator design (nginx `upstream master_orchestrator`, `least_conn`,
`max_fails=3 fail_timeout=30s`, 60s proxy timeouts) written in this format.

## The file

A minimal file names where to listen, and where to send requests:

```yaml
listeners:
  - name: public
    bind: ["127.0.0.1:8080", "[::1]:8080"]
    routes:
      - path: /                 # longest matching prefix wins
        upstream: master_orchestrator
upstreams:
  master_orchestrator:
    balance: least_conn
    servers:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
        weight: 2
```

Everything else has a default, listed in the [reference](#reference) below.

* **Unknown keys are errors.** A misspelt setting is reported (with the
  closest known key) rather than silently ignored.
* **Duplicate keys are errors.** Plain YAML readers keep the last of two
  equal keys in a mapping; Phoenix LB refuses the file.
* **YAML 1.2 scalars.** Only `true` and `false` are booleans, so `off`, `on`,
  `yes` and `no` are plain text (`format: off` means the string `off`);
  numbers with a leading zero are decimal; `1:30` is text, not 90.
* Anchors, aliases and merge keys (`<<: *defaults`) work as usual. One
  document per file.

### Units

Durations are written like nginx's:

| Unit | Meaning      | Example             |
|------|--------------|---------------------|
| `ms` | milliseconds | `500ms`             |
| `s`  | seconds      | `3s`                |
| `m`  | minutes      | `10m`               |
| `h`  | hours        | `1h`                |
| `d`  | days         | `1d`                |
| `w`  | weeks        | `1w`                |

Units combine from the largest to the smallest, each at most once, with or
without spaces: `1m30s`, `1h 30m`. A bare number is seconds (`65` = `65s`).

Sizes take `k`, `m` or `g` (either case), each 1024 times the previous: `16k`
is 16384 bytes, `100m` is 104857600 bytes. A bare number is bytes.

### Addresses

`host:port`, where host is an IPv4 address or a host name (resolved when the
balancer starts), or `[v6-address]:port` for IPv6: `127.0.0.1:8080`,
`[::1]:8080`, `master-orchestrator-0.master-orchestrator:8080`. In `bind`, a
bare port (`8080`) means every IPv4 address, like nginx's `listen 8080`.

## Checking a file

`phoenix-lb check -c FILE` behaves like `nginx -t`: it reads and validates the
file without starting anything. A valid file prints `FILE: configuration ok`
and exits 0. Otherwise it prints every problem it found, not just the first,
one per line on standard error, and exits 1. Each line reads

    FILE: key.path: reason (line N)

where `FILE` is the path as you gave it, `key.path` names the setting (mapping
keys joined by dots, list positions as `[0]`, counted from 0) and the line
number, when known, is where the key is written. For example, this file

```yaml
{bad_example}```

is reported as

```text
{bad_report}
```

A YAML syntax error is reported with its position instead of a key path:
`phoenix.yaml: line 4 column 9: mapping values are not allowed here`.

Cross-references are checked too: every route's upstream must exist, listener
names must be unique, no bind address may appear twice (in one listener or
across listeners), route paths must be unique within a listener, and server
addresses unique within an upstream.
"""

_GENERATED_NOTE = (
    "<!-- Generated from phoenix_lb/config/schema.py by "
    "`python -m phoenix_lb.config.docs > docs/config.md`; do not edit by hand. -->"
)


def generate() -> str:
    """The whole of ``docs/config.md``: introduction, then the reference."""
    filename = "phoenix.yaml"
    try:
        load_config_text(_BAD_EXAMPLE, filename)
    except ConfigError as exc:
        report = "\n".join(exc.errors)
    else:  # pragma: no cover - the example is meant to be wrong
        raise AssertionError("the error example in the docs loaded without errors")
    intro = INTRO.replace("{bad_example}", _BAD_EXAMPLE).replace("{bad_report}", report)
    return f"{_GENERATED_NOTE}\n\n{intro}\n{reference()}"


def reference() -> str:
    """Markdown tables for every settings section, starting at the top level."""
    parts = [
        "## Reference\n",
        "Each table lists a section's keys with their full key path. "
        "`[]` stands for any item of a list, `<name>` for a name you choose.\n",
    ]
    for title, model, prefix in _sections(PhoenixConfig, "", "Top level"):
        parts.append(_section(title, model, prefix))
    return "\n".join(parts)


def main() -> int:
    """Write the generated page to standard output."""
    sys.stdout.write(generate())
    return 0


# -- walking the schema ----------------------------------------------------


def _sections(
    model: type[BaseModel], prefix: str, title: str
) -> Iterator[tuple[str, type[BaseModel], str]]:
    """``(title, model, key prefix)`` for ``model`` and every model below it, depth first."""
    yield title, model, prefix
    for name, info in model.model_fields.items():
        nested = _nested(info.annotation, f"{prefix}.{name}" if prefix else name)
        if nested is not None:
            path, child = nested
            yield from _sections(child, path, f"`{path}`")


def _nested(annotation: object, path: str) -> tuple[str, type[BaseModel]] | None:
    """Where a field's annotation leads to another model, and the key path to it."""
    for candidate in _members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return path, candidate
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin is list and args:
            found = _nested(args[0], f"{path}[]")
            if found is not None:
                return found
        if origin is dict and len(args) == 2:
            found = _nested(args[1], f"{path}.<name>")
            if found is not None:
                return found
    return None


def _members(annotation: object) -> Iterator[object]:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        yield from _members(typing.get_args(annotation)[0])
    elif origin is Union or origin is types.UnionType:
        for arg in typing.get_args(annotation):
            yield from _members(arg)
    else:
        yield annotation


def _section(title: str, model: type[BaseModel], prefix: str) -> str:
    doc = textwrap.dedent(model.__doc__ or "").strip()
    doc = doc.replace("``", "`")
    rows = [
        f"### {title}\n",
        f"{doc}\n" if doc else "",
        "| Key | Type | Default | Description |",
        "|-----|------|---------|-------------|",
    ]
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        cells = (
            f"`{path}`",
            _type_text(info),
            _default_text(info),
            _cell(info.description or _summary(info.annotation)),
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(row for row in rows if row) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _summary(annotation: object) -> str:
    """First line of the docstring of the model a field holds (for fields without a description)."""
    for candidate in _members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate.__doc__:
            return candidate.__doc__.strip().splitlines()[0].replace("``", "`")
    return ""


def _type_text(info: FieldInfo) -> str:
    unit = unit_of(info)
    if unit is not None:
        base: str = unit
    elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
        base = "section"
    else:
        base = _annotation_text(info.annotation)
    limits = _bounds(info)
    return f"{base} ({limits})" if limits else base


def _annotation_text(annotation: object) -> str:
    if annotation == BindAddress:
        return "address"
    members = [m for m in _members(annotation) if m is not type(None)]
    if len(members) > 1:
        return " or ".join(_annotation_text(m) for m in members)
    annotation = members[0] if members else annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " or ".join(f"`{arg}`" for arg in args)
    if origin is list and args:
        return f"list of {_plural(_annotation_text(args[0]))}"
    if origin is dict and len(args) == 2:
        return f"mapping of names to {_plural(_annotation_text(args[1]))}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        # ListenerConfig -> "listener"; its own table follows below.
        return annotation.__name__.removesuffix("Config").lower()
    names = {int: "integer", float: "number", str: "string", bool: "`true` or `false`"}
    if isinstance(annotation, type) and annotation in names:
        return names[annotation]
    return str(annotation)


def _plural(text: str) -> str:
    return f"{text}es" if text.endswith("ss") else f"{text}s"


def _bounds(info: FieldInfo) -> str:
    unit = unit_of(info)
    low: object = None
    high: object = None
    words: list[str] = []
    for item in info.metadata:
        if isinstance(item, Ge):
            low = item.ge
        elif isinstance(item, Gt):
            words.append(f"more than {_value_text(item.gt, unit)}")
        elif isinstance(item, Le):
            high = item.le
        elif isinstance(item, Lt):
            words.append(f"less than {_value_text(item.lt, unit)}")
        elif isinstance(item, MinLen) and item.min_length == 1:
            words.append("not empty")
        elif isinstance(item, MinLen):
            words.append(f"at least {item.min_length} items")
    if low is not None and high is not None:
        words.insert(0, f"{_value_text(low, unit)} to {_value_text(high, unit)}")
    elif low is not None:
        words.insert(0, f"at least {_value_text(low, unit)}")
    elif high is not None:
        words.insert(0, f"at most {_value_text(high, unit)}")
    return ", ".join(words)


def _default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "see below"
    default = info.default
    if default is PydanticUndefined:
        return "required"
    if default is None:
        return "unset"
    return f"`{_value_text(default, unit_of(info))}`"


def _value_text(value: object, unit: Literal["duration", "size"] | None) -> str:
    if unit == "duration" and isinstance(value, int | float):
        return format_duration(float(value))
    if unit == "size" and isinstance(value, int):
        return format_size(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
