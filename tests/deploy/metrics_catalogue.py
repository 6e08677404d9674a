"""The metric catalogue of docs/metrics.md, parsed: the one list of metric names.

The alert rules, the Grafana dashboard and (later) the ``/metrics`` output
are checked against it, so a name used anywhere must first be documented.
A catalogue row is a Markdown table row whose first cell is a backquoted
``phoenix_`` name::

    | `phoenix_x_total` | counter | `a`, `b` | sum | meaning | nginx equivalent |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METRICS_DOC = ROOT / "docs" / "metrics.md"

TYPES = ("counter", "gauge", "histogram")
# Series a histogram exposes besides its name (which itself is not a series).
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_ROW = re.compile(r"^\|\s*`(phoenix_[a-z0-9_]+)`\s*\|")
_BACKQUOTED = re.compile(r"`([^`]+)`")
# A metric name in a PromQL expression (not a label: those follow `{` or `,`).
_PROMQL_NAME = re.compile(r"\bphoenix_[a-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Metric:
    """One documented metric."""

    name: str
    type: str
    labels: tuple[str, ...]
    workers: str
    meaning: str

    @property
    def series_names(self) -> tuple[str, ...]:
        """The names that appear in an exposition and in PromQL."""
        if self.type == "histogram":
            return tuple(self.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        return (self.name,)


def parse(text: str) -> dict[str, Metric]:
    """Every catalogue row of ``text``, by name; a malformed row is an error."""
    metrics: dict[str, Metric] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _ROW.match(line)
        if not match:
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6:
            raise ValueError(f"docs/metrics.md:{number}: expected 6 cells, got {len(cells)}")
        _name, type_, labels, workers, meaning, _equivalent = cells
        type_ = type_.lower()
        if type_ not in TYPES:
            raise ValueError(f"docs/metrics.md:{number}: unknown type {type_!r}")
        if match.group(1) in metrics:
            raise ValueError(f"docs/metrics.md:{number}: {match.group(1)} listed twice")
        metrics[match.group(1)] = Metric(
            name=match.group(1),
            type=type_,
            labels=tuple(_BACKQUOTED.findall(labels)),
            workers=workers,
            meaning=meaning,
        )
    if not metrics:
        raise ValueError("docs/metrics.md: no catalogue rows found")
    return metrics


def load() -> dict[str, Metric]:
    """The catalogue of the checked-in docs/metrics.md."""
    return parse(METRICS_DOC.read_text(encoding="utf-8"))


def series_names(metrics: dict[str, Metric]) -> dict[str, Metric]:
    """Every name usable in PromQL (``_bucket`` and friends for histograms) -> its metric."""
    return {series: metric for metric in metrics.values() for series in metric.series_names}


def names_in_promql(expr: str) -> set[str]:
    """The ``phoenix_`` metric names an expression uses."""
    return set(_PROMQL_NAME.findall(expr))


def undocumented(expr: str, metrics: dict[str, Metric]) -> set[str]:
    """Names in ``expr`` that the catalogue does not list."""
    return names_in_promql(expr) - set(series_names(metrics))


# nginx's stub_status text (ngx_http_stub_status_module.c writes each line
# with a space before the newline); GET /nginx_status must match it exactly.
STUB_STATUS = re.compile(
    r"\AActive connections: (?P<active>\d+) \n"
    r"server accepts handled requests\n"
    r" (?P<accepts>\d+) (?P<handled>\d+) (?P<requests>\d+) \n"
    r"Reading: (?P<reading>\d+) Writing: (?P<writing>\d+) Waiting: (?P<waiting>\d+) \n\Z"
)


def parse_stub_status(text: str) -> dict[str, int]:
    """The seven numbers of a stub_status page; ValueError if it is not one."""
    match = STUB_STATUS.match(text)
    if match is None:
        raise ValueError(f"not nginx stub_status text: {text!r}")
    return {key: int(value) for key, value in match.groupdict().items()}
