"""Lint rules over each PromQL expression of the dashboards (panel targets, annotations and the
selectors of `label_values()` variables), walked on the syntax tree of
`dashboard_queries.parse_promql`: grafana/dashboard-linter's target-* rules plus ours (stream
label matchers, metric and label names the exporter really exposes, legend labels present in
the result). Each takes a dashboard and returns its problems; `dashboard_lint.LINT_RULES` lists
them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from promql_parser import AggModifierType, AggregateExpr, Expr, MatrixSelector, VectorSelector

from tests.dashboard_queries import (
    STREAM_LABELS,
    TARGET_LABELS,
    MetricInfo,
    PromQLError,
    RawExpression,
    duration,
    exporter_metrics,
    function_name,
    matchers,
    metric_name,
    output_labels,
    parse_promql,
    raw_expressions,
    selectors,
    walk,
)

RATE_FUNCTIONS = {"rate", "irate"}
COUNTER_FUNCTIONS = {"rate", "irate", "increase"}


def _parsed(d: dict[str, Any]) -> Iterator[tuple[RawExpression, Expr | None, str]]:
    for raw in raw_expressions(d):
        try:
            yield raw, parse_promql(raw.expr), ""
        except PromQLError as exc:
            yield raw, None, str(exc)


def rule_target_promql(d: dict[str, Any]) -> list[str]:
    return [f"{raw.where}: {error}" for raw, node, error in _parsed(d) if node is None]


def rule_target_rate_interval(d: dict[str, Any]) -> list[str]:
    problems = []
    for raw, node, _ in _parsed(d):
        for sub, parents in walk(node) if node else ():
            if not isinstance(sub, MatrixSelector):
                continue
            name = metric_name(sub.vector_selector)
            function = function_name(parents[-1]) if parents else None
            window = duration(sub.range)
            if function is None:
                problems.append(f"{raw.where}: range selector {name} outside a function")
            elif function in RATE_FUNCTIONS and window != "$__rate_interval":
                problems.append(f"{raw.where}: {function}() over {window}, not $__rate_interval")
    return problems


def rule_target_counter_agg(d: dict[str, Any]) -> list[str]:
    """Counters (and histogram series) only as the range argument of rate/irate/increase."""
    metrics = exporter_metrics()
    problems = []
    for raw, node, _ in _parsed(d):
        if raw.kind == "variable":  # label_values() takes a series selector, not a query
            continue
        for sub, parents in walk(node) if node else ():
            if not isinstance(sub, VectorSelector):
                continue
            name = metric_name(sub)
            info = metrics.get(name)
            counter_like = name.endswith(("_total", "_bucket", "_count", "_sum")) or (
                info is not None and info.type in {"counter", "histogram"}
            )
            # The selector must be the range of a matrix selector that is a counter function's
            # argument: rate(x[5m]), not x, sum(x) or rate(x[5m:1m]).
            in_counter_function = (
                len(parents) >= 2
                and isinstance(parents[-1], MatrixSelector)
                and function_name(parents[-2]) in COUNTER_FUNCTIONS
            )
            if counter_like and not in_counter_function:
                problems.append(f"{raw.where}: counter {name} not inside rate()/increase()")
    return problems


def _required_matchers(
    raw: RawExpression, found: list[VectorSelector], names: tuple[str, ...]
) -> list[str]:
    problems = []
    for selector in found:
        have = set(matchers(selector))
        for name in names:
            if (name, "=~", f"${name}") not in have:
                problems.append(f'{raw.where}: {metric_name(selector)} lacks {name}=~"${name}"')
    return problems


def rule_target_job(d: dict[str, Any]) -> list[str]:
    return [
        problem
        for raw, node, _ in _parsed(d)
        if node is not None and raw.kind != "variable"
        for problem in _required_matchers(raw, selectors(node), ("job",))
    ]


def rule_target_instance(d: dict[str, Any]) -> list[str]:
    return [
        problem
        for raw, node, _ in _parsed(d)
        if node is not None and raw.kind != "variable"
        for problem in _required_matchers(raw, selectors(node), ("instance",))
    ]


def rule_target_stream_labels(d: dict[str, Any]) -> list[str]:
    """Every selector of a per-stream metric is narrowed by the stream label variables."""
    metrics = exporter_metrics()
    problems = []
    for raw, node, _ in _parsed(d):
        if node is None or raw.kind == "variable":
            continue
        for selector in selectors(node):
            labels = (metrics.get(metric_name(selector)) or MetricInfo("")).labels or set()
            if set(STREAM_LABELS) <= labels:
                problems += _required_matchers(raw, [selector], STREAM_LABELS)
    return problems


def rule_metrics_exist(d: dict[str, Any]) -> list[str]:
    """Metric names, matcher labels and grouping labels exist in the exporter's output."""
    metrics = exporter_metrics()
    problems = []
    for raw, node, _ in _parsed(d):
        for sub, _parents in walk(node) if node else ():
            if isinstance(sub, VectorSelector):
                problems += _unknown_names(raw, sub, metrics)
            elif (
                isinstance(sub, AggregateExpr)
                and sub.modifier is not None
                and sub.modifier.type == AggModifierType.By
            ):
                inner = output_labels(sub.expr, metrics)
                missing = set(sub.modifier.labels) - inner if inner is not None else set()
                if missing:
                    problems.append(f"{raw.where}: by {sorted(missing)} not in {sorted(inner)}")
    return problems


def _unknown_names(
    raw: RawExpression, selector: VectorSelector, metrics: dict[str, MetricInfo]
) -> list[str]:
    name = metric_name(selector)
    info = metrics.get(name)
    if info is None:
        return [f"{raw.where}: metric {name!r} is not exported"]
    if info.labels is None:
        return []
    known = info.labels | TARGET_LABELS | {"__name__"}
    return [
        f"{raw.where}: {name} has no label {label!r}"
        for label, _op, _value in matchers(selector)
        if label not in known
    ]


def rule_legend_labels(d: dict[str, Any]) -> list[str]:
    """`{{label}}` in a legend or annotation text exists on every series of the result."""
    metrics = exporter_metrics()
    problems = []
    for raw, node, _ in _parsed(d):
        used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", raw.legend))
        have = output_labels(node, metrics) if node else None
        if have is not None and used - have:
            problems.append(f"{raw.where}: legend uses {sorted(used - have)}, has {sorted(have)}")
    return problems


def rule_variables_in_regex_matchers(d: dict[str, Any]) -> list[str]:
    """Multi-value and All variables only work with =~; a test substitutes `.*` for them."""
    problems = []
    for raw, node, _ in _parsed(d):
        for selector in selectors(node) if node else ():
            for label, op, value in matchers(selector):
                if "$" in value and op != "=~":
                    problems.append(f"{raw.where}: {label}{op}{value!r} must use =~")
    return problems
