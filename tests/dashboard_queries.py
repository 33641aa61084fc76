"""What the dashboard tests read: the shipped Grafana dashboards, their PromQL expressions, what
the exporter really exposes, and the PromQL syntax tree the lint rules walk.

Expressions are parsed by `promql-parser` (Python bindings of the Rust crate of the same name,
which follows Prometheus' own grammar), so the tests carry no PromQL grammar of their own;
`promtool` still checks every expression in `test_dashboards.py`. Shared by the lint
(`dashboard_lint.py`, `test_dashboards.py`) and the end-to-end test that evaluates every
expression against a real Prometheus (`test_e2e_dashboards.py`).
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import promql_parser
from promql_parser import (
    AggModifierType,
    AggregateExpr,
    BinaryExpr,
    Call,
    Expr,
    LabelModifierType,
    MatchOp,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    VectorMatchCardinality,
    VectorSelector,
)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards"
DASHBOARD_FILES = {
    "llm-drift-overview": DASHBOARD_DIR / "llm-drift-overview.json",
    "llm-drift-stream": DASHBOARD_DIR / "llm-drift-stream.json",
}
STREAM_LABELS = ("model", "route")
SIGNALS = ("output_tokens", "refusal", "format_validity", "embedding")
# Metrics Prometheus itself attaches to every scrape target.
SCRAPE_METRICS = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}
# Values Grafana gives its own variables; `dashboard_expressions()` uses them.
GRAFANA_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# --------------------------------------------------------------------------------------------
# Loading


@functools.cache
def load_dashboards() -> dict[str, dict[str, Any]]:
    return {uid: json.loads(path.read_text()) for uid, path in DASHBOARD_FILES.items()}


def data_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries data: rows are layout only (their nested panels are included)."""
    for panel in all_panels(dashboard):
        if panel.get("type") != "row":
            yield panel


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query", "")
    return query or ""


LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_]\w*)\s*\)\s*$")


class RawExpression(NamedTuple):
    where: str
    expr: str
    kind: str  # target | annotation | variable
    legend: str  # the label templates the expression's result feeds


def raw_expressions(dashboard: dict[str, Any]) -> Iterator[RawExpression]:
    uid = dashboard["uid"]
    for panel in data_panels(dashboard):
        for t in panel.get("targets", []):
            where = f"{uid}: panel {panel['id']} {panel.get('title')!r} target {t.get('refId')}"
            yield RawExpression(where, t.get("expr", ""), "target", t.get("legendFormat", ""))
    for a in dashboard.get("annotations", {}).get("list", []):
        if "expr" in a:
            legend = " ".join(
                [a.get("titleFormat", ""), a.get("textFormat", "")]
                + [f"{{{{{k.strip()}}}}}" for k in a.get("tagKeys", "").split(",") if k.strip()]
            )
            yield RawExpression(f"{uid}: annotation {a['name']!r}", a["expr"], "annotation", legend)
    for v in dashboard["templating"]["list"]:
        if v.get("type") == "query":
            match = LABEL_VALUES.match(variable_query(v))
            if match:
                where = f"{uid}: variable {v['name']!r}"
                yield RawExpression(where, match["selector"], "variable", "")


VARIABLE_REF = re.compile(r"\$\{(?P<braced>\w+)(?:[:.][^}]*)?\}|\$(?P<plain>\w+)")


def substitute(expr: str) -> str:
    """Grafana's interpolation as a test can do it: durations for the built-ins, `.*` for ours."""

    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        return GRAFANA_VARIABLES.get(name, ".*")

    return VARIABLE_REF.sub(value, expr)


class Expression(NamedTuple):
    where: str
    expr: str


def dashboard_expressions() -> list[Expression]:
    """Every PromQL expression of both dashboards, with variables replaced.

    Panel targets, annotation queries and the selectors inside `label_values(...)` variable
    queries; `$__rate_interval` -> 5m, `$__interval` -> 1m, `$__range` -> 1h, every dashboard
    variable (`$job`, `$instance`, `$model`, `$route`, ...) -> `.*` (all of them are used with
    `=~`). Each item is `(where, expr)`; `where` names the dashboard, panel and refId.
    """
    return [
        Expression(raw.where, substitute(raw.expr))
        for dashboard in load_dashboards().values()
        for raw in raw_expressions(dashboard)
    ]


# --------------------------------------------------------------------------------------------
# What the exporter really exposes


@dataclass
class MetricInfo:
    type: str  # counter | gauge | histogram (for _bucket/_sum/_count) | untyped
    labels: set[str] | None = None  # None: exposed without samples, label names unknown


@functools.cache
def exporter_metrics() -> dict[str, MetricInfo]:
    """Metric names (with _bucket/_sum/_count/_total suffixes) and labels from a real collector."""
    from exporter.config import parse_config
    from exporter.service import Exporter
    from tests import samples
    from tests.exposition_helpers import metrics_text

    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "inputs": [{"type": "http"}, {"type": "file", "paths": [f"{tmp}/*.jsonl"]}],
                "signals": {
                    "format_validity": [{"match": {"route": "/extract"}, "expect": "json"}]
                },
                "detectors": {"baseline_size": 20, "window_size": 5},
            }
        )
        exporter = Exporter(config)
        stats = next(s for s in exporter.input_stats if s.kind == "http")
        records: list[dict[str, Any]] = []
        for i in range(25):
            records.append(samples.chat(text="word " * (i % 7 + 1)))
            records.append(samples.chat(route="/extract", text='{"a": 1}' if i % 3 else "no"))
        result = exporter.pipeline.ingest_values(records, stats)
        assert result.accepted == len(records), result.errors
        text = metrics_text(exporter).decode()

    metrics: dict[str, MetricInfo] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if kind == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    metrics[name + suffix] = MetricInfo("histogram")
            else:
                metrics[name] = MetricInfo(kind)
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            name = name.split(" ")[0]
            labels = set(re.findall(r'(\w+)="', rest.rpartition("}")[0])) if rest else set()
            info = metrics.setdefault(name, MetricInfo("untyped"))
            info.labels = (info.labels or set()) | labels
    for name, labels in SCRAPE_METRICS.items():
        metrics[name] = MetricInfo("gauge", set(labels))
    return metrics


# --------------------------------------------------------------------------------------------
# PromQL: the syntax tree of `promql-parser`, plus the few questions the lint rules ask of it.


class PromQLError(ValueError):
    pass


# Grafana's own variables stand where PromQL wants a duration (`[$__rate_interval]`,
# `offset $__rate_interval`), which no PromQL parser accepts. Before parsing, each becomes a
# duration no dashboard writes by hand; `duration()` turns it back into the variable's name.
_PLACEHOLDERS = {
    name: timedelta(milliseconds=100_000_001 + index)
    for index, name in enumerate(GRAFANA_VARIABLES)
}
_VARIABLES_BY_PLACEHOLDER = {duration: f"${name}" for name, duration in _PLACEHOLDERS.items()}
# A string literal (left alone: dashboard variables in matcher values are plain text) or a
# Grafana variable outside one.
_STRING_OR_VARIABLE = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)|""" + VARIABLE_REF.pattern
)
# The bindings' enums compare but do not hash: pairs, not a dict.
_MATCH_OPS = (
    (MatchOp.Equal, "="),
    (MatchOp.NotEqual, "!="),
    (MatchOp.Re, "=~"),
    (MatchOp.NotRe, "!~"),
)


def parse_promql(expr: str) -> Expr:
    """The syntax tree of a dashboard expression as written, Grafana variables included."""

    def placeholder(match: re.Match[str]) -> str:
        stand_in = _PLACEHOLDERS.get(match["braced"] or match["plain"] or "")
        if stand_in is None:
            return match.group()
        return f"{stand_in // timedelta(milliseconds=1)}ms"

    try:
        return promql_parser.parse(_STRING_OR_VARIABLE.sub(placeholder, expr))
    except ValueError as exc:
        raise PromQLError(f"{exc} in {expr!r}") from None


def duration(value: timedelta) -> str:
    """A range or offset as the dashboard wrote it: `$__rate_interval`, or `5m`."""
    return _VARIABLES_BY_PLACEHOLDER.get(value) or promql_parser.display_duration(value)


def children(node: Expr) -> list[Expr]:
    match node:
        case BinaryExpr():
            return [node.lhs, node.rhs]
        case AggregateExpr():
            return [node.expr] if node.param is None else [node.param, node.expr]
        case Call():
            return list(node.args)
        case MatrixSelector():
            return [node.vector_selector]
        case ParenExpr() | UnaryExpr() | SubqueryExpr():
            return [node.expr]
    return []


def walk(node: Expr, parents: tuple[Expr, ...] = ()) -> Iterator[tuple[Expr, tuple[Expr, ...]]]:
    """Every node with its ancestors, outermost first: rules ask what a selector sits in."""
    yield node, parents
    for child in children(node):
        yield from walk(child, (*parents, node))


def selectors(node: Expr) -> list[VectorSelector]:
    return [sub for sub, _ in walk(node) if isinstance(sub, VectorSelector)]


def metric_name(selector: VectorSelector) -> str:
    return selector.name or ""


def matchers(selector: VectorSelector) -> list[tuple[str, str, str]]:
    """(label, operator, value) of each matcher, operators as PromQL writes them."""
    return [
        (m.name, next(text for op, text in _MATCH_OPS if op == m.op), m.value)
        for m in selector.matchers.matchers
    ]


def function_name(node: Expr) -> str | None:
    return node.func.name if isinstance(node, Call) else None


def output_labels(node: Expr, metrics: dict[str, MetricInfo]) -> set[str] | None:
    """Label names every series of the result carries; None when the test cannot tell."""
    match node:
        case VectorSelector():
            info = metrics.get(metric_name(node))
            if info is None or info.labels is None:
                return None
            return info.labels | TARGET_LABELS
        case NumberLiteral() | StringLiteral():
            return set()
        case MatrixSelector():
            return output_labels(node.vector_selector, metrics)
        case ParenExpr() | UnaryExpr() | SubqueryExpr():
            return output_labels(node.expr, metrics)
        case AggregateExpr():
            return _aggregation_labels(node, metrics)
        case Call():
            return _call_labels(node, metrics)
        case BinaryExpr():
            return _binary_labels(node, metrics)
    return None


def _aggregation_labels(node: AggregateExpr, metrics: dict[str, MetricInfo]) -> set[str] | None:
    inner = output_labels(node.expr, metrics)
    if str(node.op) in {"topk", "bottomk", "limitk", "limit_ratio"}:
        return inner
    if node.modifier is None:
        return set()
    names = set(node.modifier.labels)
    if node.modifier.type == AggModifierType.By:
        return names
    return None if inner is None else inner - names


def _call_labels(node: Call, metrics: dict[str, MetricInfo]) -> set[str] | None:
    name = node.func.name
    if name in {"time", "vector", "scalar"}:
        return set()
    vectors = [a for a in node.args if not isinstance(a, NumberLiteral | StringLiteral)]
    if not vectors:
        return set()
    inner = output_labels(vectors[-1] if name == "histogram_quantile" else vectors[0], metrics)
    if name == "histogram_quantile" and inner is not None:
        return inner - {"le"}
    return inner


def _binary_labels(node: BinaryExpr, metrics: dict[str, MetricInfo]) -> set[str] | None:
    left, right = output_labels(node.lhs, metrics), output_labels(node.rhs, metrics)
    op = str(node.op)
    if _is_scalar(node.lhs):
        return right
    if _is_scalar(node.rhs) or op in {"and", "unless"}:
        return left
    if op == "or":
        return None if left is None or right is None else left & right
    if left is None:
        return None
    modifier = node.modifier
    if modifier is None:  # one-to-one on all labels
        return left
    if modifier.card in (VectorMatchCardinality.ManyToOne, VectorMatchCardinality.OneToMany):
        return left | set(modifier.group_labels or ())  # group_left/right (labels) adds those
    matching = modifier.matching
    if matching is not None and matching.type == LabelModifierType.Include:
        return left & set(matching.labels)  # one-to-one `on (labels)` keeps only those
    return left


def _is_scalar(node: Expr) -> bool:
    while isinstance(node, ParenExpr | UnaryExpr):
        node = node.expr
    return isinstance(node, NumberLiteral) or function_name(node) in {"time", "scalar"}
