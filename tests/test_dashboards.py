"""Lint of the shipped Grafana dashboards (dashboards/*.json).

Implements the main rules of grafana/dashboard-linter (template-datasource, template-job,
template-instance, template-label-promql, template-on-time-change-reload, panel-datasource,
panel-title-description, panel-units, panel-no-targets, target-rate-interval,
target-counter-agg, target-job, target-instance) on a small PromQL parser of our own, plus
checks of our own: provisionable JSON (stable uid, no `__inputs`, no numeric dashboard id),
unique panel ids and a non-overlapping grid, stream-label matchers, every metric and label name
exists in what the exporter really exposes, legend labels exist in a query's result, and every
expression parses with `promtool`.

`dashboard_expressions()` returns every PromQL expression of the dashboards with the Grafana
variables replaced, ready to be evaluated against a real Prometheus.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

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
RATE_FUNCTIONS = {"rate", "irate"}
COUNTER_FUNCTIONS = {"rate", "irate", "increase"}
# Values Grafana gives its own variables; `dashboard_expressions()` uses them.
GRAFANA_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) a panel may use.
VALID_UNITS = set(
    """
    none short string percent percentunit sci locale bytes decbytes bits Bps binBps bps
    ns µs ms s m h d dtdurationms dtdurations dthms clocks dateTimeAsIso dateTimeAsSystem
    dateTimeFromNow hertz cps ops reqps rps wps iops cpm opm rpm wpm bool bool_yes_no bool_on_off
    """.split()
)


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
    import prometheus_client

    from exporter.config import parse_config
    from exporter.service import Exporter
    from tests import samples

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
        text = prometheus_client.generate_latest(exporter.registry).decode()

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
# A small PromQL parser: enough structure for the linter's rules (which function a range
# selector sits in, which matchers each selector has, grouping labels). `promtool` is the
# authority on validity; this only has to understand valid PromQL.

TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{\w+(?:[:.][^}]*)?\}|\$\w+)
  | (?P<dur>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>(?:[a-zA-Z_]|:(?=[a-zA-Z_]))[\w:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=@])
  | (?P<punct>[(){}\[\],:])
    """,
    re.VERBOSE,
)
AGGREGATIONS = set(
    """
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
    """.split()
)
BINARY_PRECEDENCE = {
    "or": 1,
    "and": 2,
    "unless": 2,
    "==": 3,
    "!=": 3,
    "<=": 3,
    "<": 3,
    ">=": 3,
    ">": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
    "atan2": 5,
    "^": 6,
}


class PromQLError(ValueError):
    pass


@dataclass
class Node:
    kind: str  # selector | call | agg | binary | unary | paren | subquery | number | string
    name: str = ""
    args: list[Node] = field(default_factory=list)
    matchers: list[tuple[str, str, str]] = field(default_factory=list)
    range: str | None = None
    grouping: tuple[str, list[str]] | None = None  # ("by" | "without", labels)
    matching: tuple[str, list[str]] | None = None  # ("on" | "ignoring", labels)
    include: list[str] | None = None  # group_left/group_right labels

    def walk(self, parents: tuple[Node, ...] = ()) -> Iterator[tuple[Node, tuple[Node, ...]]]:
        yield self, parents
        for arg in self.args:
            yield from arg.walk((*parents, self))

    def selectors(self) -> list[Node]:
        return [node for node, _ in self.walk() if node.kind == "selector"]


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    return re.sub(r"\\(.)", r"\1", token[1:-1])


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            match = TOKEN.match(text, pos)
            if match is None:
                raise PromQLError(f"unexpected character {text[pos]!r} at {pos} in {text!r}")
            pos = match.end()
            kind = match.lastgroup or ""
            if kind != "ws":
                self.tokens.append((kind, match.group()))
        self.pos = 0
        self.text = text

    def parse(self) -> Node:
        node = self.expr(0)
        if self.pos != len(self.tokens):
            self.fail("trailing input")
        return node

    def fail(self, message: str) -> None:
        near = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "end of input"
        raise PromQLError(f"{message} near {near!r} in {self.text!r}")

    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else ("eof", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok_kind, tok_value = self.peek()
        if (value is not None and tok_value.lower() != value) or (kind and tok_kind != kind):
            self.fail(f"expected {value or kind}")
        self.pos += 1
        return tok_value

    def accept(self, value: str) -> bool:
        if self.peek()[1].lower() == value and self.peek()[0] in {"op", "punct", "ident"}:
            self.pos += 1
            return True
        return False

    def binary_op(self) -> str | None:
        kind, value = self.peek()
        if kind == "op" and value in BINARY_PRECEDENCE:
            return value
        if kind == "ident" and value.lower() in {"and", "or", "unless", "atan2"}:
            return value.lower()
        return None

    def expr(self, min_precedence: int) -> Node:
        left = self.unary()
        while (op := self.binary_op()) is not None and BINARY_PRECEDENCE[op] >= min_precedence:
            self.pos += 1
            node = Node("binary", name=op)
            if self.accept("bool"):
                node.name += " bool"
            if self.peek()[1].lower() in {"on", "ignoring"}:
                node.matching = (self.take().lower(), self.labels())
            if self.peek()[1].lower() in {"group_left", "group_right"}:
                self.pos += 1
                node.include = self.labels() if self.peek()[1] == "(" else []
            precedence = BINARY_PRECEDENCE[op]
            right = self.expr(precedence if op == "^" else precedence + 1)
            node.args = [left, right]
            left = node
        return left

    def unary(self) -> Node:
        if self.peek() in {("op", "-"), ("op", "+")}:
            return Node("unary", name=self.take(), args=[self.unary()])
        return self.postfix(self.primary())

    def duration(self) -> str:
        kind, value = self.peek()
        if kind not in {"dur", "var"}:
            self.fail("expected a duration")
        self.pos += 1
        return value

    def postfix(self, node: Node) -> Node:
        while True:
            if self.peek() == ("punct", "["):
                self.pos += 1
                window = self.duration()
                if self.accept(":"):
                    step = self.duration() if self.peek()[1] != "]" else ""
                    node = Node("subquery", args=[node], range=f"{window}:{step}")
                elif node.kind == "selector" and node.range is None:
                    node.range = window
                else:
                    self.fail("range on a non-selector")
                self.take("]")
            elif self.peek()[1].lower() == "offset" and self.peek()[0] == "ident":
                self.pos += 1
                self.accept("-")
                self.duration()
            elif self.peek() == ("op", "@"):
                self.pos += 1
                if self.peek()[0] == "num":
                    self.pos += 1
                else:
                    self.take(kind="ident")
                    self.take("(")
                    self.take(")")
            else:
                return node

    def labels(self) -> list[str]:
        self.take("(")
        names: list[str] = []
        while not self.accept(")"):
            kind, value = self.peek()
            if kind not in {"ident", "str"}:
                self.fail("expected a label name")
            self.pos += 1
            names.append(_unquote(value) if kind == "str" else value)
            if not self.accept(","):
                self.take(")")
                break
        return names

    def arguments(self) -> list[Node]:
        self.take("(")
        args: list[Node] = []
        while not self.accept(")"):
            args.append(self.expr(0))
            if not self.accept(","):
                self.take(")")
                break
        return args

    def matchers(self) -> list[tuple[str, str, str]]:
        self.take("{")
        out: list[tuple[str, str, str]] = []
        while not self.accept("}"):
            kind, name = self.peek()
            if kind not in {"ident", "str"}:
                self.fail("expected a label matcher")
            self.pos += 1
            op_kind, op = self.peek()
            if op_kind == "op" and op in {"=", "!=", "=~", "!~"}:
                self.pos += 1
                out.append((name, op, _unquote(self.take(kind="str"))))
            elif kind == "str":  # Prometheus 3 quoted metric name
                out.append(("__name__", "=", _unquote(name)))
            else:
                self.fail("expected a matcher operator")
            if not self.accept(","):
                self.take("}")
                break
        return out

    def primary(self) -> Node:
        kind, value = self.peek()
        if kind == "num":
            self.pos += 1
            return Node("number", name=value)
        if kind == "str":
            self.pos += 1
            return Node("string", name=_unquote(value))
        if value == "(":
            self.pos += 1
            inner = self.expr(0)
            self.take(")")
            return Node("paren", args=[inner])
        if value == "{":
            return Node("selector", matchers=self.matchers())
        if kind != "ident":
            self.fail("expected an expression")
        self.pos += 1
        lowered = value.lower()
        if lowered in {"inf", "nan"}:
            return Node("number", name=value)
        following = self.peek()[1].lower()
        if lowered in AGGREGATIONS and following in {"(", "by", "without"}:
            node = Node("agg", name=lowered)
            if following in {"by", "without"}:
                node.grouping = (self.take(), self.labels())
            node.args = self.arguments()
            if self.peek()[1].lower() in {"by", "without"}:
                node.grouping = (self.take().lower(), self.labels())
            return node
        if following == "(":
            return Node("call", name=value, args=self.arguments())
        node = Node("selector", name=value)
        if self.peek()[1] == "{":
            node.matchers = self.matchers()
        return node


def parse_promql(expr: str) -> Node:
    return Parser(expr).parse()


def output_labels(node: Node, metrics: dict[str, MetricInfo]) -> set[str] | None:
    """Label names every series of the result carries; None when the test cannot tell."""
    if node.kind == "selector":
        info = metrics.get(node.name)
        if info is None or info.labels is None:
            return None
        return info.labels | TARGET_LABELS
    if node.kind in {"number", "string"}:
        return set()
    if node.kind in {"paren", "unary", "subquery"}:
        return output_labels(node.args[0], metrics)
    if node.kind == "agg":
        inner = output_labels(node.args[-1], metrics)
        if node.name in {"topk", "bottomk", "limitk", "limit_ratio"}:
            return inner
        if node.grouping is None:
            return set()
        mode, names = node.grouping
        if mode == "by":
            return set(names)
        return None if inner is None else inner - set(names)
    if node.kind == "call":
        if node.name in {"time", "vector", "scalar"}:
            return set()
        vectors = [a for a in node.args if a.kind not in {"number", "string"}]
        if not vectors:
            return set()
        inner = output_labels(
            vectors[-1] if node.name == "histogram_quantile" else vectors[0], metrics
        )
        if node.name == "histogram_quantile" and inner is not None:
            return inner - {"le"}
        return inner
    if node.kind == "binary":
        left, right = (output_labels(a, metrics) for a in node.args)
        scalar_left = _is_scalar(node.args[0])
        scalar_right = _is_scalar(node.args[1])
        if scalar_left:
            return right
        if scalar_right or node.name in {"and", "unless"}:
            return left
        if node.name == "or":
            return None if left is None or right is None else left & right
        if left is None:
            return None
        if node.matching and node.matching[0] == "on" and node.include is None:
            return left & set(node.matching[1])
        return left | set(node.include or [])
    return None


def _is_scalar(node: Node) -> bool:
    while node.kind in {"paren", "unary"}:
        node = node.args[0]
    return node.kind == "number" or (node.kind == "call" and node.name in {"time", "scalar"})


# --------------------------------------------------------------------------------------------
# Rules: each returns a list of problems (empty = the dashboard passes).


def _uses_datasource_variable(ds: Any) -> bool:
    if isinstance(ds, dict):
        return ds.get("uid") in {"$datasource", "${datasource}"} and ds.get("type") == "prometheus"
    return ds in {"$datasource", "${datasource}"}


def rule_provisionable(d: dict[str, Any]) -> list[str]:
    problems = []
    if "__inputs" in d or "__requires" in d or "__elements" in d:
        problems.append("exported with __inputs/__requires/__elements: not file-provisionable")
    if d.get("id") is not None:
        problems.append(f"numeric dashboard id {d['id']!r}: must be absent or null")
    if not d.get("uid") or not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", d["uid"]):
        problems.append(f"uid {d.get('uid')!r} is not a stable Grafana uid")
    if not isinstance(d.get("schemaVersion"), int) or not 36 <= d["schemaVersion"] <= 41:
        problems.append(f"schemaVersion {d.get('schemaVersion')!r} not in 36..41")
    if not d.get("title"):
        problems.append("no title")
    if "${DS_" in json.dumps(d):
        problems.append("refers to an import-time ${DS_...} input")
    return problems


def rule_template_datasource(d: dict[str, Any]) -> list[str]:
    templated = [v for v in d["templating"]["list"] if v.get("type") == "datasource"]
    if len(templated) != 1:
        return [f"expected one datasource variable, found {len(templated)}"]
    ds = templated[0]
    problems = []
    if ds.get("name") != "datasource":
        problems.append(f"datasource variable named {ds.get('name')!r}, should be 'datasource'")
    if ds.get("label") != "Data source":
        problems.append(f"datasource variable labelled {ds.get('label')!r}, not 'Data source'")
    if ds.get("query") != "prometheus":
        problems.append(f"datasource variable query {ds.get('query')!r}, not 'prometheus'")
    return problems


def _check_filter_template(d: dict[str, Any], name: str) -> list[str]:
    v = variables(d).get(name)
    if v is None:
        return [f"missing the {name} variable"]
    problems = []
    if not _uses_datasource_variable(v.get("datasource")):
        problems.append(f"{name} variable does not use $datasource: {v.get('datasource')!r}")
    if v.get("type") != "query":
        problems.append(f"{name} variable is {v.get('type')!r}, not a Prometheus query")
    if v.get("label") != name.title():
        problems.append(f"{name} variable labelled {v.get('label')!r}, not {name.title()!r}")
    if not v.get("multi"):
        problems.append(f"{name} variable is not multi-select")
    if not v.get("includeAll") or v.get("allValue") != ".+":
        problems.append(f"{name} variable needs includeAll with allValue '.+'")
    return problems


def rule_template_job(d: dict[str, Any]) -> list[str]:
    return _check_filter_template(d, "job")


def rule_template_instance(d: dict[str, Any]) -> list[str]:
    return _check_filter_template(d, "instance")


def rule_template_stream_labels(d: dict[str, Any]) -> list[str]:
    """One variable per stream label: multi + All on the overview, single on the drill-down."""
    overview = d["uid"] == "llm-drift-overview"
    problems = []
    for name in STREAM_LABELS:
        v = variables(d).get(name)
        if v is None:
            problems.append(f"missing the {name} variable")
            continue
        if not _uses_datasource_variable(v.get("datasource")) or v.get("type") != "query":
            problems.append(f"{name} variable must be a query on $datasource")
        if overview and not (v.get("multi") and v.get("includeAll") and v.get("allValue") == ".+"):
            problems.append(f"{name} variable must be multi with All ('.+') on the overview")
        if not overview and (v.get("multi") or v.get("includeAll")):
            problems.append(f"{name} variable must be a single value on the drill-down")
    return problems


def rule_template_label_promql(d: dict[str, Any]) -> list[str]:
    problems = []
    for v in d["templating"]["list"]:
        if v.get("type") != "query":
            continue
        query = variable_query(v)
        match = LABEL_VALUES.match(query)
        if match is None:
            problems.append(f"variable {v['name']!r}: not label_values(selector, label): {query!r}")
            continue
        try:
            parse_promql(match["selector"])
        except PromQLError as exc:
            problems.append(f"variable {v['name']!r}: {exc}")
        if v.get("refresh") != 2:
            problems.append(f"variable {v['name']!r} must refresh on time range change (2)")
    return problems


def rule_variable_chain(d: dict[str, Any]) -> list[str]:
    """Each filter variable is narrowed by the ones before it: job, instance, model, route."""
    chain = ["job", "instance", *STREAM_LABELS]
    problems = []
    for index, name in enumerate(chain):
        v = variables(d).get(name)
        match = LABEL_VALUES.match(variable_query(v)) if v else None
        if match is None:
            continue
        if match["label"] != name:
            problems.append(f"variable {name!r} lists label {match['label']!r}")
        for selector in parse_promql(match["selector"]).selectors():
            have = {(label, op, value) for label, op, value in selector.matchers}
            for earlier in chain[:index]:
                if (earlier, "=~", f"${earlier}") not in have:
                    problems.append(f'variable {name!r} is not filtered by {earlier}=~"${earlier}"')
    return problems


def rule_panel_datasource(d: dict[str, Any]) -> list[str]:
    problems = []
    for p in data_panels(d):
        if not _uses_datasource_variable(p.get("datasource")):
            problems.append(f"panel {p.get('title')!r} datasource {p.get('datasource')!r}")
        for t in p.get("targets", []):
            if not _uses_datasource_variable(t.get("datasource", p.get("datasource"))):
                problems.append(f"panel {p.get('title')!r} target {t.get('refId')} datasource")
    for a in d.get("annotations", {}).get("list", []):
        if not _uses_datasource_variable(a.get("datasource")):
            problems.append(f"annotation {a.get('name')!r} datasource {a.get('datasource')!r}")
    return problems


def rule_panel_title_description(d: dict[str, Any]) -> list[str]:
    return [
        f"panel id {p.get('id')} has no title or no description"
        for p in data_panels(d)
        if not p.get("title", "").strip() or not p.get("description", "").strip()
    ]


def rule_panel_units(d: dict[str, Any]) -> list[str]:
    problems = []
    for p in data_panels(d):
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        units = [defaults.get("unit")]
        for override in p.get("fieldConfig", {}).get("overrides", []):
            units += [prop["value"] for prop in override["properties"] if prop["id"] == "unit"]
        for unit in units:
            if unit not in VALID_UNITS:
                problems.append(f"panel {p.get('title')!r} has no or an invalid unit: {unit!r}")
    return problems


def rule_panel_no_targets(d: dict[str, Any]) -> list[str]:
    problems = []
    for p in data_panels(d):
        targets = p.get("targets", [])
        if not targets or not all(t.get("expr", "").strip() for t in targets):
            problems.append(f"panel {p.get('title')!r} has no or an empty target")
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            problems.append(f"panel {p.get('title')!r} has missing or duplicate refIds")
    return problems


def rule_panel_layout(d: dict[str, Any]) -> list[str]:
    problems = []
    ids = [p.get("id") for p in all_panels(d)]
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) for i in ids):
        problems.append(f"panel ids not unique integers: {ids}")
    boxes: list[tuple[str, int, int, int, int]] = []
    for p in all_panels(d):
        grid = p.get("gridPos")
        if not isinstance(grid, dict) or not all(isinstance(grid.get(k), int) for k in "hwxy"):
            problems.append(f"panel {p.get('title')!r} gridPos missing or not integers: {grid}")
            continue
        if grid["w"] <= 0 or grid["h"] <= 0 or grid["x"] < 0 or grid["x"] + grid["w"] > 24:
            problems.append(f"panel {p.get('title')!r} outside the 24-column grid: {grid}")
        for title, x, y, w, h in boxes:
            if (
                x < grid["x"] + grid["w"]
                and grid["x"] < x + w
                and y < grid["y"] + grid["h"]
                and (grid["y"] < y + h)
            ):
                problems.append(f"panel {p.get('title')!r} overlaps {title!r}")
        boxes.append((p.get("title", ""), grid["x"], grid["y"], grid["w"], grid["h"]))
    return problems


def _parsed(d: dict[str, Any]) -> Iterator[tuple[RawExpression, Node | None, str]]:
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
        for sub, parents in node.walk() if node else ():
            if sub.kind != "selector" or sub.range is None:
                continue
            parent = parents[-1] if parents else None
            if parent is None or parent.kind != "call":
                problems.append(f"{raw.where}: range selector {sub.name} outside a function")
            elif parent.name in RATE_FUNCTIONS and sub.range not in {
                "$__rate_interval",
                "${__rate_interval}",
            }:
                problems.append(
                    f"{raw.where}: {parent.name}() over {sub.range}, not $__rate_interval"
                )
    return problems


def rule_target_counter_agg(d: dict[str, Any]) -> list[str]:
    """Counters (and histogram series) only as the range argument of rate/irate/increase."""
    metrics = exporter_metrics()
    problems = []
    for raw, node, _ in _parsed(d):
        if raw.kind == "variable":  # label_values() takes a series selector, not a query
            continue
        for sub, parents in node.walk() if node else ():
            if sub.kind != "selector":
                continue
            info = metrics.get(sub.name)
            counter_like = sub.name.endswith(("_total", "_bucket", "_count", "_sum")) or (
                info is not None and info.type in {"counter", "histogram"}
            )
            parent = parents[-1] if parents else None
            if counter_like and not (
                sub.range is not None
                and parent is not None
                and parent.kind == "call"
                and parent.name in COUNTER_FUNCTIONS
            ):
                problems.append(f"{raw.where}: counter {sub.name} not inside rate()/increase()")
    return problems


def _required_matchers(raw: RawExpression, node: Node, names: tuple[str, ...]) -> list[str]:
    problems = []
    for selector in node.selectors():
        have = set(selector.matchers)
        for name in names:
            if (name, "=~", f"${name}") not in have:
                problems.append(f'{raw.where}: {selector.name} lacks {name}=~"${name}"')
    return problems


def rule_target_job(d: dict[str, Any]) -> list[str]:
    return [
        problem
        for raw, node, _ in _parsed(d)
        if node is not None and raw.kind != "variable"
        for problem in _required_matchers(raw, node, ("job",))
    ]


def rule_target_instance(d: dict[str, Any]) -> list[str]:
    return [
        problem
        for raw, node, _ in _parsed(d)
        if node is not None and raw.kind != "variable"
        for problem in _required_matchers(raw, node, ("instance",))
    ]


def rule_target_stream_labels(d: dict[str, Any]) -> list[str]:
    """Every selector of a per-stream metric is narrowed by the stream label variables."""
    metrics = exporter_metrics()
    problems = []
    for raw, node, _ in _parsed(d):
        if node is None or raw.kind == "variable":
            continue
        for selector in node.selectors():
            labels = (metrics.get(selector.name) or MetricInfo("")).labels or set()
            if set(STREAM_LABELS) <= labels:
                single = Node("selector", name=selector.name, matchers=selector.matchers)
                problems += _required_matchers(raw, single, STREAM_LABELS)
    return problems


def rule_metrics_exist(d: dict[str, Any]) -> list[str]:
    """Metric names, matcher labels and grouping labels exist in the exporter's output."""
    metrics = exporter_metrics()
    problems = []
    for raw, node, _ in _parsed(d):
        for sub, _parents in node.walk() if node else ():
            if sub.kind == "selector":
                info = metrics.get(sub.name)
                if info is None:
                    problems.append(f"{raw.where}: metric {sub.name!r} is not exported")
                    continue
                if info.labels is None:
                    continue
                known = info.labels | TARGET_LABELS | {"__name__"}
                for label, _op, _value in sub.matchers:
                    if label not in known:
                        problems.append(f"{raw.where}: {sub.name} has no label {label!r}")
            elif sub.kind == "agg" and sub.grouping and sub.grouping[0] == "by":
                inner = output_labels(sub.args[-1], metrics)
                missing = set(sub.grouping[1]) - inner if inner is not None else set()
                if missing:
                    problems.append(f"{raw.where}: by {sorted(missing)} not in {sorted(inner)}")
    return problems


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


def rule_variables_defined_and_used(d: dict[str, Any]) -> list[str]:
    text = json.dumps(d)
    defined = set(variables(d))
    referenced = {m["braced"] or m["plain"] for m in VARIABLE_REF.finditer(text)} - set(
        GRAFANA_VARIABLES
    )
    referenced = {name for name in referenced if not name.startswith("__")}
    problems = [f"undefined variable ${name}" for name in sorted(referenced - defined)]
    problems += [f"variable {name!r} is never used" for name in sorted(defined - referenced)]
    return problems


def rule_variables_in_regex_matchers(d: dict[str, Any]) -> list[str]:
    """Multi-value and All variables only work with =~; a test substitutes `.*` for them."""
    problems = []
    for raw, node, _ in _parsed(d):
        for selector in node.selectors() if node else ():
            for label, op, value in selector.matchers:
                if "$" in value and op != "=~":
                    problems.append(f"{raw.where}: {label}{op}{value!r} must use =~")
    return problems


LINT_RULES = [
    rule_provisionable,
    rule_template_datasource,
    rule_template_job,
    rule_template_instance,
    rule_template_stream_labels,
    rule_template_label_promql,
    rule_variable_chain,
    rule_panel_datasource,
    rule_panel_title_description,
    rule_panel_units,
    rule_panel_no_targets,
    rule_panel_layout,
    rule_target_promql,
    rule_target_rate_interval,
    rule_target_counter_agg,
    rule_target_job,
    rule_target_instance,
    rule_target_stream_labels,
    rule_metrics_exist,
    rule_legend_labels,
    rule_variables_defined_and_used,
    rule_variables_in_regex_matchers,
]


# --------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("uid", sorted(DASHBOARD_FILES))
@pytest.mark.parametrize("rule", LINT_RULES, ids=lambda r: r.__name__.removeprefix("rule_"))
def test_lint_rule(uid: str, rule: Any) -> None:
    problems = rule(load_dashboards()[uid])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("uid", sorted(DASHBOARD_FILES))
def test_dashboard_file_is_valid_json_with_its_uid(uid: str) -> None:
    path = DASHBOARD_FILES[uid]
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard["uid"] == uid == path.stem
    assert {"llm-drift"} <= set(dashboard["tags"])


def test_uids_and_titles_unique() -> None:
    dashboards = list(load_dashboards().values())
    assert len({d["uid"] for d in dashboards}) == len({d["title"] for d in dashboards}) == 2
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted(
        p.name for p in DASHBOARD_FILES.values()
    )


def _exprs(uid: str) -> str:
    return "\n".join(raw.expr for raw in raw_expressions(load_dashboards()[uid]))


def _panel(uid: str, title: str) -> dict[str, Any]:
    panels = [p for p in data_panels(load_dashboards()[uid]) if p["title"] == title]
    assert len(panels) == 1, f"{uid}: no single panel titled {title!r}"
    return panels[0]


def test_overview_content() -> None:
    d = load_dashboards()["llm-drift-overview"]
    table = _panel("llm-drift-overview", "Drift state per stream and signal")
    assert table["type"] == "table"
    exprs = [t["expr"] for t in table["targets"]]
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    assert any("llm_drift_detected" in e for e in exprs)
    assert any("llm_drift_score" in e for e in exprs)
    assert all("by (model, route, signal)" in e for e in exprs)
    mapped = json.dumps(table["fieldConfig"]["overrides"])
    assert '"DRIFT"' in mapped and '"red"' in mapped
    text = _exprs("llm-drift-overview")
    for needle in (
        "rate(llm_records_total",
        "rate(llm_refusals_total",
        "rate(llm_format_invalid_total",
        "rate(llm_format_checked_total",
        'finish_reason="length"',
        "histogram_quantile(0.5, sum by (le, model, route) (rate(llm_output_tokens_bucket",
        "histogram_quantile(0.95, sum by (le, model, route) (rate(llm_output_tokens_bucket",
    ):
        assert needle in text, needle
    annotations = {a["name"]: a["expr"] for a in d["annotations"]["list"]}
    assert "increase(llm_drift_events_total" in annotations["Drift events"]
    assert "llm_served_model_records_total" in annotations["Served model changes"]
    assert "unless" in annotations["Served model changes"]
    urls = [link["url"] for link in d["links"]] + [
        link["url"]
        for p in data_panels(d)
        for link in p["fieldConfig"]["defaults"].get("links", [])
    ]
    assert any(u.startswith("/d/llm-drift-stream") for u in urls)
    assert all("var-model=" in u and "var-route=" in u for u in urls if "?" in u)
    assert any(link.get("includeVars") and link.get("keepTime") for link in d["links"])


def test_drilldown_content() -> None:
    d = load_dashboards()["llm-drift-stream"]
    text = _exprs("llm-drift-stream")
    for signal in SIGNALS:
        assert f'llm_signal_baseline{{{_S}, signal="{signal}"' in text, signal
        assert f'llm_signal_window{{{_S}, signal="{signal}"' in text, signal
    score = _panel("llm-drift-stream", "Drift score against the 1.0 threshold")
    defaults = score["fieldConfig"]["defaults"]
    assert "llm_drift_score" in score["targets"][0]["expr"]
    assert {"color": "red", "value": 1} in defaults["thresholds"]["steps"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] != "off"
    heatmap = [p for p in data_panels(d) if p["type"] == "heatmap"]
    assert len(heatmap) == 1
    assert heatmap[0]["targets"][0]["format"] == "heatmap"
    assert "increase(llm_output_tokens_bucket" in heatmap[0]["targets"][0]["expr"]
    finish = _panel("llm-drift-stream", "Finish reasons")
    assert finish["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    assert "sum by (finish_reason) (rate(llm_finish_reasons_total" in finish["targets"][0]["expr"]
    for needle in (
        "rate(llm_served_model_records_total",
        'up{job=~"$job", instance=~"$instance"}',
        "rate(llm_exporter_input_records_total",
        "rate(llm_records_rejected_total",
        "llm_exporter_streams{",
        "llm_exporter_max_streams{",
        "rate(llm_exporter_processing_seconds_total",
        "time() - max by (instance, input) (llm_exporter_input_last_record_timestamp_seconds",
    ):
        assert needle in text, needle
    assert any(link["url"] == "/d/llm-drift-overview" for link in d["links"])


_S = 'job=~"$job", instance=~"$instance", model=~"$model", route=~"$route"'


def test_dashboard_expressions_are_substituted() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) > 40
    assert len({e.where for e in expressions}) == len(expressions)
    for where, expr in expressions:
        assert "$" not in expr, where
        parse_promql(expr)
    assert any("[5m]" in e.expr for e in expressions)
    assert any('job=~".*"' in e.expr for e in expressions)


def test_promtool_parses_every_expression(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI (Debian package `prometheus`)")
        pytest.skip("promtool not installed (apt-get install -y prometheus)")
    expressions = dashboard_expressions()
    rules = [
        {"record": f"dashboard:expression_{i}:check", "expr": e.expr}
        for i, e in enumerate(expressions)
    ]
    path = tmp_path / "dashboard-expressions.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    index = "\n".join(f"rule {i}: {e.where}: {e.expr}" for i, e in enumerate(expressions))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{index}"
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# The rules must catch what they claim to catch: a dashboard with one of each mistake.

BAD_PANEL = {
    "id": 1,
    "type": "timeseries",
    "title": "Bad",
    "datasource": {"type": "prometheus", "uid": "prometheus"},
    "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
    "fieldConfig": {"defaults": {"unit": "tokens"}, "overrides": []},
    "targets": [
        {"refId": "A", "expr": 'sum(llm_records_total{job="x"})', "legendFormat": "{{route}}"},
        {"refId": "B", "expr": "rate(llm_refusals_total[5m])"},
        {"refId": "C", "expr": "sum by (routes) (llm_drift_score)"},
        {"refId": "D", "expr": 'llm_no_such_metric{model=~"$nope"}'},
        {"refId": "E", "expr": "sum(rate(llm_records_total[$__rate_interval]"},
    ],
}


@pytest.mark.parametrize(
    ("rule", "mutate"),
    [
        (rule_provisionable, lambda d: d.update({"__inputs": [], "id": 7})),
        (rule_template_datasource, lambda d: d["templating"]["list"].pop(0)),
        (rule_template_job, lambda d: variables(d)["job"].update({"multi": False})),
        (rule_template_instance, lambda d: variables(d)["instance"].update({"allValue": ""})),
        (rule_template_label_promql, lambda d: variables(d)["job"].update({"refresh": 1})),
        (rule_panel_datasource, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_panel_title_description, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_panel_units, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_panel_layout, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_target_promql, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_target_rate_interval, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_target_counter_agg, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_target_job, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_target_instance, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_target_stream_labels, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_metrics_exist, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_legend_labels, lambda d: d["panels"].append(BAD_PANEL)),
        (rule_variables_defined_and_used, lambda d: d["panels"].append(BAD_PANEL)),
        (
            rule_variables_in_regex_matchers,
            lambda d: variables(d)["model"].update(
                {"query": 'label_values(llm_records_total{job="$job"}, model)'}
            ),
        ),
    ],
    ids=lambda v: (
        v.__name__.removeprefix("rule_") if callable(v) and v.__name__ != "<lambda>" else ""
    ),
)
def test_rule_catches_mistakes(rule: Any, mutate: Any) -> None:
    dashboard = json.loads(json.dumps(load_dashboards()["llm-drift-overview"]))
    assert not rule(dashboard)
    mutate(dashboard)
    assert rule(dashboard)


@pytest.mark.parametrize(
    "expr",
    [
        'sum by (model) (rate(a_total{x=~"$y"}[$__rate_interval])) / ignoring (le) group_left b',
        "histogram_quantile(0.9, sum without (instance) (rate(a_bucket[5m:1m]))) > bool 2",
        "-time() + 1e3 - Inf or vector(0) unless on (a, b) max(c offset 5m) @ start()",
        'topk(3, a{"b"="c",}) and count_values("v", d) ^ 2 ^ 3',
    ],
)
def test_parser_accepts_promql(expr: str) -> None:
    parse_promql(expr)


@pytest.mark.parametrize("expr", ["sum(", "a{b=}", "rate(a[5m)", "a b", "a[5m][5m]", "1 +"])
def test_parser_rejects_broken_promql(expr: str) -> None:
    with pytest.raises(PromQLError):
        parse_promql(expr)


def test_provisioning_examples() -> None:
    provisioning = DASHBOARD_DIR / "provisioning"
    for name in ("dashboards.yml", "datasources.yml"):
        assert (provisioning / name).read_text().startswith("# "), f"{name}: comment header"
    providers = yaml.safe_load((provisioning / "dashboards.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    datasources = yaml.safe_load((provisioning / "datasources.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] and datasource["url"].startswith("http")
