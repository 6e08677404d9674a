"""Read a YAML config file into a :class:`PhoenixConfig`, or explain every mistake in it.

Three passes, each of which reports all it finds before giving up:

1. YAML: the text is composed into a node tree (not loaded), so every value
   keeps its line number.  A syntax error stops here:
   ``phoenix.yaml: line 4 column 9: mapping values are not allowed here``.
2. Shape: the tree becomes plain dicts/lists; duplicate keys, which PyYAML
   would silently resolve to the last one, are errors.  Then pydantic
   validates against the schema.
3. Meaning: cross-references the schema cannot express alone (a route's
   upstream exists, bind addresses and names are unique).

Every error is one line, ``FILE: key.path: reason``, with `` (line N)``
appended when the key's line is known, so a user (or an editor's quickfix
list) can jump to it.  The same strings come back in :attr:`ConfigError.errors`
and are what ``phoenix-lb check`` prints.

YAML is read with YAML 1.2 core-schema scalars rather than PyYAML's YAML 1.1:
only ``true``/``false`` are booleans (so ``format: off`` is the string
``off``, as an nginx user means it), ``010`` is ten, and ``1:30`` is text.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from phoenix_lb.config.schema import (
    PhoenixConfig,
    resolve_relative_paths,
    split_host_port,
    unit_of,
)
from phoenix_lb.config.units import format_duration, format_size

__all__ = ["ConfigError", "format_key_path", "load_config", "load_config_text"]

KeyPath = tuple[str | int, ...]

# Aliases can make a small file expand into a huge document ("billion laughs").
# No real config comes near this many values; past it, validation would hang.
_MAX_VALUES = 100_000


class ConfigError(Exception):
    """The configuration is invalid; :attr:`errors` holds one line per problem.

    Each line reads ``FILE: key.path: reason`` (optionally followed by
    `` (line N)``); ``str(error)`` is all of them, one per line.
    """

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors: list[str] = errors

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[str]]]:
        # So the error survives pickling, e.g. from a worker process to the supervisor.
        return (type(self), (self.errors,))


def load_config(path: str | os.PathLike[str]) -> PhoenixConfig:
    """Read, parse and validate the config file at ``path``.

    Error messages name the file as the caller gave it.  Raises
    :class:`ConfigError` listing every problem found.
    """
    filename = os.fspath(path)
    try:
        # utf-8-sig: tolerate the BOM some Windows editors write.
        with open(path, encoding="utf-8-sig") as file:
            text = file.read()
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{filename}: cannot read: not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError([f"{filename}: cannot read: {exc.strerror or exc}"]) from None
    # Certificate paths relative to the file, whatever the current directory.
    directory = os.path.dirname(os.path.abspath(filename))
    return resolve_relative_paths(load_config_text(text, filename), directory)


def load_config_text(text: str, filename: str) -> PhoenixConfig:
    """Parse and validate config ``text``; ``filename`` is used in error messages.

    Raises :class:`ConfigError` listing every problem found.
    """
    report = _Report(filename)
    try:
        root = _compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{filename}: {_describe_yaml_error(exc, text)}"]) from None

    if root is None:
        raise ConfigError([f"{filename}: the file is empty; expected a mapping of settings"])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            [
                f"{filename}: expected a mapping of settings at the top level, "
                f"got {_node_kind(root)} (line {_line(root)})"
            ]
        )

    builder = _Builder(report)
    data = builder.build(root, ())
    if builder.too_large:
        # Validating a structure this size (shared by aliases) would take ages.
        raise ConfigError(report.render())
    config: PhoenixConfig | None = None
    try:
        config = PhoenixConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            path, reason = _explain(error)
            report.add(path, reason)
    _check_references(data, report)
    _check_policies(data, report)
    if report.issues or config is None:
        raise ConfigError(report.render())
    return config


def format_key_path(path: KeyPath) -> str:
    """Render ``("upstreams", "mo", "servers", 1)`` as ``upstreams.mo.servers[1]``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out.append(f"[{part}]")
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            out.append(f".{part}" if out else part)
        else:
            # Keys with dots or spaces would make the path ambiguous.
            out.append(f"[{part!r}]")
    return "".join(out)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


# -- reporting -------------------------------------------------------------


@dataclass(slots=True)
class _Report:
    """Collects problems with their key paths; renders them in file order."""

    filename: str
    issues: list[tuple[KeyPath, str, int | None]] = field(default_factory=list)
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def add(self, path: KeyPath, reason: str, line: int | None = None) -> None:
        if line is None:
            line = self.line_of(path)
        self.issues.append((path, reason, line))

    def line_of(self, path: KeyPath) -> int | None:
        """Line of ``path``, or of its nearest ancestor present in the file."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def render(self) -> list[str]:
        # Stable sort: problems without a line (a missing top-level key) first,
        # the rest top to bottom, as an editor would list them.
        ordered = sorted(self.issues, key=lambda issue: issue[2] or 0)
        out = []
        for path, reason, line in ordered:
            where = f"{format_key_path(path)}: " if path else ""
            suffix = f" (line {line})" if line is not None else ""
            out.append(f"{self.filename}: {where}{reason}{suffix}")
        return out


# -- YAML ------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars (see the module docstring)."""

    # Start from no implicit resolvers instead of PyYAML's YAML 1.1 set; this is
    # a class-level table in PyYAML, filled by add_implicit_resolver below.
    yaml_implicit_resolvers: dict[Any, Any] = {}


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)  # YAML 1.2: a leading zero is not octal


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _compose(text: str) -> yaml.Node | None:
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _describe_yaml_error(exc: yaml.YAMLError, text: str) -> str:
    """``line N column M: reason`` for a YAML syntax error."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.problem.startswith("but "):
            # PyYAML splits "expected X, but found Y" across context and problem.
            reason = f"{exc.context}, {exc.problem}"
        elif exc.context and exc.problem:
            context = exc.context
            cmark = exc.context_mark
            if cmark is not None and mark is not None and cmark.line != mark.line:
                context += f" started at line {cmark.line + 1}"
            reason = f"{reason} ({context})"
        if mark is not None:
            return f"line {mark.line + 1} column {mark.column + 1}: {reason}"
        return reason
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return f"line {line} column {column}: character #x{exc.character:04x} is not allowed"
    return str(exc)


def _line(node: yaml.Node) -> int | None:
    mark = node.start_mark
    return None if mark is None else mark.line + 1


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a single value"


class _Builder:
    """Turns a composed node tree into dicts and lists, recording each key's line.

    Also where duplicate keys are caught: PyYAML's constructor keeps the last
    one silently, which hides a typo'd copy-paste.
    """

    __slots__ = ("_active", "_done", "_loader", "_report", "_values")

    def __init__(self, report: _Report) -> None:
        self._report = report
        self._loader = _Loader("")  # used only as a scalar constructor
        self._active: set[int] = set()
        # An aliased node is built once; its result (and size) is shared.
        self._done: dict[int, tuple[object, int]] = {}
        self._values = 0

    def build(self, node: yaml.Node, path: KeyPath) -> object:
        key = id(node)
        if key in self._done:
            value, size = self._done[key]
            self._count(size, node, path)
            return value
        if key in self._active:
            self._report.add(path, "alias refers to itself", _line(node))
            return None
        before = self._values
        self._active.add(key)
        try:
            value = self._build(node, path)
        finally:
            self._active.discard(key)
        self._done[key] = (value, self._values - before)
        return value

    @property
    def too_large(self) -> bool:
        """True when aliases expanded the document past :data:`_MAX_VALUES`."""
        return self._values > _MAX_VALUES

    def _count(self, size: int, node: yaml.Node, path: KeyPath) -> None:
        if self._values <= _MAX_VALUES < self._values + size:
            self._report.add(
                path,
                f"document too large: aliases expand it past {_MAX_VALUES} values",
                _line(node),
            )
        self._values += size

    def _build(self, node: yaml.Node, path: KeyPath) -> object:
        self._count(1, node, path)
        if self._values > _MAX_VALUES:
            return None
        if isinstance(node, yaml.SequenceNode):
            items: list[object] = []
            for index, child in enumerate(node.value):
                child_path = (*path, index)
                line = _line(child)
                if line is not None:
                    self._report.lines.setdefault(child_path, line)
                items.append(self.build(child, child_path))
            return items
        if isinstance(node, yaml.MappingNode):
            return self._build_mapping(node, path)
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self._report.add(path, exc.problem or "cannot read this value", _line(node))
            return None

    def _build_mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[object, object]:
        merge_tag = "tag:yaml.org,2002:merge"
        own: list[tuple[yaml.Node, yaml.Node]] = [
            pair for pair in node.value if pair[0].tag != merge_tag
        ]
        first_line: dict[object, int | None] = {}
        for key_node, _ in own:
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in first_line:
                self._report.add(path, f"duplicate key {key!r}", _line(key_node))
            else:
                first_line[key] = _line(key_node)
        if len(own) != len(node.value):
            try:
                # Puts the merged pairs first, then the mapping's own ones.
                self._loader.flatten_mapping(node)
            except yaml.constructor.ConstructorError as exc:
                self._report.add(path, exc.problem or "invalid merge", _line(node))
                node.value = own
        merged_count = len(node.value) - len(own)
        result: dict[object, object] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key = self._key(key_node, path, report=False)
            if key is None:
                continue
            from_merge = index < merged_count
            if from_merge and (key in result or key in first_line):
                continue  # the mapping's own key, or an earlier merge, wins
            child_path = (*path, key)
            line = _line(key_node)
            if line is not None and not from_merge:
                self._report.lines[child_path] = line
            elif line is not None:
                self._report.lines.setdefault(child_path, line)
            result[key] = self.build(value_node, child_path)
        return result

    def _key(self, node: yaml.Node, path: KeyPath, *, report: bool = True) -> str | int | None:
        if isinstance(node, yaml.ScalarNode):
            try:
                key = self._loader.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError:
                key = node.value
            if isinstance(key, str | int) and not isinstance(key, bool):
                return key
            return str(node.value)
        if report:
            self._report.add(
                path, f"keys must be plain values, not {_node_kind(node)}", _line(node)
            )
        return None


# -- pydantic errors -> human reasons --------------------------------------


def _explain(error: ErrorDetails) -> tuple[KeyPath, str]:
    """Key path and reason for one pydantic error."""
    loc: KeyPath = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}

    if loc and loc[-1] == "[key]":
        return loc[:-1], "name must be text"
    if kind == "invalid_key":
        return loc, "keys must be text"
    if kind == "missing":
        return loc, "required key missing"
    if kind == "extra_forbidden":
        return loc, _unknown_key_reason(loc)

    info = _field_at(loc)
    unit = unit_of(info) if info is not None else None

    if kind == "value_error":
        message = _strip_prefix(error["msg"], "Value error, ")
        # A check over several fields of a section ("advert_interval: VRRPv2
        # takes whole seconds") names the field it is about: point at it.
        name, colon, rest = message.partition(": ")
        model = _model_at(loc)
        if colon and model is not None and name in model.model_fields:
            return (*loc, name), rest
        return loc, message
    if kind == "assertion_error":
        return loc, _strip_prefix(error["msg"], "Assertion failed, ")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return loc, f"expected a whole number, got {_describe(value)}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return loc, f"expected a number, got {_describe(value)}"
    if kind in ("string_type", "string_unicode"):
        return loc, f"expected text, got {_describe(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return loc, f"expected true or false, got {_describe(value)}"
    if kind in ("list_type", "tuple_type"):
        return loc, f"expected a list, got {_describe(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return loc, f"expected a mapping of settings, got {_describe(value)}"
    if kind == "literal_error":
        return loc, _literal_reason(loc, value)
    if kind in ("too_short", "string_too_short"):
        minimum = ctx.get("min_length", 1)
        if minimum == 1:
            return loc, "must not be empty"
        return loc, f"needs at least {minimum} items"
    if kind in ("too_long", "string_too_long"):
        return loc, f"allows at most {ctx.get('max_length')} items"
    bounds = {
        "greater_than_equal": ("ge", "must be at least"),
        "greater_than": ("gt", "must be more than"),
        "less_than_equal": ("le", "must be at most"),
        "less_than": ("lt", "must be less than"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        return loc, f"{words} {_render(ctx.get(key), unit)}, got {_render(value, unit)}"
    msg = error["msg"]
    return loc, msg[:1].lower() + msg[1:]


def _strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text


def _describe(value: object) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value:g}" if isinstance(value, float) else f"the number {value}"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _render(value: object, unit: Literal["duration", "size"] | None) -> str:
    if unit == "duration" and isinstance(value, int | float) and math.isfinite(value):
        return format_duration(float(value))
    if unit == "size" and isinstance(value, int):
        return format_size(value)
    return str(value)


def _unknown_key_reason(loc: KeyPath) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (expected one of: {', '.join(known)})"


def _literal_reason(loc: KeyPath, value: object) -> str:
    choices: list[str] = []
    info = _field_at(loc)
    if info is not None:
        choices = [str(choice) for choice in _literal_choices(info.annotation)]
    if not choices:
        return f"invalid value {_describe(value)}"
    reason = f"expected {' or '.join(choices)}, got {_describe(value)}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        if close:
            reason += f" (did you mean {close[0]!r}?)"
    return reason


def _literal_choices(annotation: object) -> list[object]:
    for candidate in _flatten(annotation):
        if typing.get_origin(candidate) is Literal:
            return list(typing.get_args(candidate))
    return []


def _flatten(annotation: object) -> Iterator[object]:
    """The members of a union (and Annotated's inner type), or the type itself."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        yield from _flatten(typing.get_args(annotation)[0])
    elif origin is Union or origin is types.UnionType:
        for arg in typing.get_args(annotation):
            yield from _flatten(arg)
    else:
        yield annotation


def _step(annotation: object, part: str | int) -> object | None:
    """The type found one key below ``annotation`` (a model, list or dict)."""
    for candidate in _flatten(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            info = candidate.model_fields.get(str(part))
            if info is not None:
                return info
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin is list and isinstance(part, int) and args:
            element: object = args[0]
            return element
        if origin is dict and len(args) == 2:
            value: object = args[1]
            return value
    return None


def _walk(loc: KeyPath) -> object | None:
    current: object = PhoenixConfig
    for part in loc:
        step = _step(current.annotation if isinstance(current, FieldInfo) else current, part)
        if step is None:
            return None
        current = step
    return current


def _field_at(loc: KeyPath) -> FieldInfo | None:
    found = _walk(loc)
    return found if isinstance(found, FieldInfo) else None


def _model_at(loc: KeyPath) -> type[BaseModel] | None:
    found = _walk(loc)
    annotation = found.annotation if isinstance(found, FieldInfo) else found
    for candidate in _flatten(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


# -- cross-references ------------------------------------------------------
#
# These run on the plain data rather than the validated model, so they are
# reported even when some other part of the file failed validation.  Each
# check skips values of the wrong shape: pydantic has already said so.


def _check_policies(data: object, report: _Report) -> None:
    """Zones, access rules, trusted proxies and hash keys that refer or parse."""
    if not isinstance(data, dict):
        return
    from phoenix_lb.access import AccessRules
    from phoenix_lb.realip import RealIp

    zones = {
        "rate_limit": set(data.get("rate_limits") or {})
        if isinstance(data.get("rate_limits"), dict)
        else set(),
        "conn_limit": set(data.get("conn_limits") or {})
        if isinstance(data.get("conn_limits"), dict)
        else set(),
    }
    tops = {"rate_limit": "rate_limits", "conn_limit": "conn_limits"}
    trusted = data.get("trusted_proxies")
    if isinstance(trusted, list):
        try:
            RealIp([str(t) for t in trusted], str(data.get("real_ip_header", "X-Forwarded-For")))
        except ValueError as exc:
            report.add(("trusted_proxies",), str(exc))
    listeners = data.get("listeners")
    for li, listener in enumerate(listeners if isinstance(listeners, list) else []):
        if not isinstance(listener, dict):
            continue
        if listener.get("proxy_protocol") is True and not trusted:
            report.add(
                ("listeners", li, "proxy_protocol"),
                "needs trusted_proxies: only the L4 balancer's addresses may say who the client is",
            )
        routes = listener.get("routes")
        for ri, route in enumerate(routes if isinstance(routes, list) else []):
            if not isinstance(route, dict):
                continue
            for kind in ("rate_limit", "conn_limit"):
                ref = route.get(kind)
                if (
                    isinstance(ref, dict)
                    and isinstance(ref.get("zone"), str)
                    and ref["zone"] not in zones[kind]
                ):
                    known = ", ".join(sorted(zones[kind])) or "none defined"
                    report.add(
                        ("listeners", li, "routes", ri, kind, "zone"),
                        f"unknown zone {ref['zone']!r} under {tops[kind]} (known: {known})",
                    )
            rules = route.get("access")
            if isinstance(rules, list):
                pairs = []
                for rule in rules:
                    if isinstance(rule, dict) and len(rule) == 1:
                        ((verb, target),) = rule.items()
                        pairs.append((str(verb), str(target)))
                try:
                    AccessRules(pairs)
                except ValueError as exc:
                    report.add(("listeners", li, "routes", ri, "access"), str(exc))
    upstreams = data.get("upstreams")
    for name, upstream in upstreams.items() if isinstance(upstreams, dict) else []:
        if not isinstance(upstream, dict):
            continue
        key = upstream.get("hash_key")
        if upstream.get("balance") == "hash" and key is None:
            report.add(
                ("upstreams", name, "balance"),
                "hash needs hash_key (remote_addr, uri, header:NAME or cookie:NAME)",
            )
        if isinstance(key, str) and not (
            key in ("remote_addr", "uri")
            or (key.startswith(("header:", "cookie:")) and len(key.split(":", 1)[1]) > 0)
        ):
            report.add(
                ("upstreams", name, "hash_key"),
                f"{key!r}: use remote_addr, uri, header:NAME or cookie:NAME",
            )


def _check_references(data: object, report: _Report) -> None:
    if not isinstance(data, dict):
        return
    upstreams = data.get("upstreams")
    known_upstreams = (
        sorted(str(name) for name in upstreams) if isinstance(upstreams, dict) else None
    )
    listeners = data.get("listeners")
    if not isinstance(listeners, list):
        return

    names: dict[str, KeyPath] = {}
    binds: dict[tuple[str, int], KeyPath] = {}
    for index, listener in enumerate(listeners):
        if not isinstance(listener, dict):
            continue
        here: KeyPath = ("listeners", index)

        name = listener.get("name")
        if isinstance(name, str):
            if name in names:
                report.add(
                    (*here, "name"),
                    f"duplicate listener name {name!r} (first at {format_key_path(names[name])})",
                )
            else:
                names[name] = (*here, "name")

        bind = listener.get("bind")
        if isinstance(bind, list):
            for bind_index, address in enumerate(bind):
                key = _bind_key(address)
                if key is None:
                    continue
                bind_path = (*here, "bind", bind_index)
                if key in binds:
                    report.add(
                        bind_path,
                        f"bind address {_show_address(key)} already used by "
                        f"{format_key_path(binds[key])}",
                    )
                else:
                    binds[key] = bind_path

        routes = listener.get("routes")
        if isinstance(routes, list):
            _check_routes(routes, here, known_upstreams, report)

    if isinstance(upstreams, dict):
        for name, upstream in upstreams.items():
            if isinstance(upstream, dict) and isinstance(upstream.get("servers"), list):
                _check_servers(upstream["servers"], ("upstreams", name, "servers"), report)


def _check_routes(
    routes: list[object], here: KeyPath, known_upstreams: list[str] | None, report: _Report
) -> None:
    paths: dict[str, KeyPath] = {}
    for index, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        route_path: KeyPath = (*here, "routes", index)
        path = route.get("path")
        if isinstance(path, str):
            if path in paths:
                report.add(
                    (*route_path, "path"),
                    f"duplicate route path {path!r} (first at {format_key_path(paths[path])})",
                )
            else:
                paths[path] = route_path
        upstream = route.get("upstream")
        if (
            isinstance(upstream, str)
            and known_upstreams is not None
            and upstream not in known_upstreams
        ):
            report.add(
                (*route_path, "upstream"),
                f"unknown upstream {upstream!r} (known: {', '.join(known_upstreams)})",
            )


def _check_servers(servers: list[object], here: KeyPath, report: _Report) -> None:
    seen: dict[tuple[str, int], KeyPath] = {}
    for index, server in enumerate(servers):
        if not isinstance(server, dict):
            continue
        key = _address_key(server.get("address"), default_host=None)
        if key is None:
            continue
        address_path = (*here, index, "address")
        if key in seen:
            report.add(
                address_path,
                f"duplicate server {_show_address(key)} "
                f"(first at {format_key_path(seen[key][:-1])})",
            )
        else:
            seen[key] = address_path


def _bind_key(value: object) -> tuple[str, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _address_key(value, default_host="0.0.0.0")


def _address_key(value: object, *, default_host: str | None) -> tuple[str, int] | None:
    """``(host, port)`` with the host in a canonical form, or None if unparsable."""
    if not isinstance(value, str):
        return None
    try:
        host, port = split_host_port(value, default_host=default_host)
    except ValueError:
        return None  # already reported by the schema
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        host = host.lower().rstrip(".")
    return host, port


def _show_address(key: tuple[str, int]) -> str:
    host, port = key
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
