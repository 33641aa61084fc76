"""Lint of the shipped Grafana dashboards (dashboards/*.json).

Runs every rule of `dashboard_lint.LINT_RULES` on both dashboards, proves each rule catches the
mistake it claims to, checks what each dashboard shows, and has `promtool` parse every
expression. The rules and the PromQL syntax tree they walk live in `dashboard_lint.py`,
`dashboard_target_rules.py` and `dashboard_queries.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from promql_parser import Call, MatrixSelector

from tests.dashboard_lint import (
    LINT_RULES,
    rule_panel_datasource,
    rule_panel_layout,
    rule_panel_no_targets,
    rule_panel_title_description,
    rule_panel_units,
    rule_provisionable,
    rule_template_datasource,
    rule_template_instance,
    rule_template_job,
    rule_template_label_promql,
    rule_template_stream_labels,
    rule_variable_chain,
    rule_variables_defined_and_used,
)
from tests.dashboard_queries import (
    DASHBOARD_DIR,
    DASHBOARD_FILES,
    SIGNALS,
    PromQLError,
    dashboard_expressions,
    data_panels,
    duration,
    load_dashboards,
    matchers,
    parse_promql,
    raw_expressions,
    selectors,
    variables,
)
from tests.dashboard_target_rules import (
    rule_legend_labels,
    rule_metrics_exist,
    rule_target_counter_agg,
    rule_target_instance,
    rule_target_job,
    rule_target_promql,
    rule_target_rate_interval,
    rule_target_stream_labels,
    rule_variables_in_regex_matchers,
)


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


# One mistake per rule, applied to a copy of the overview dashboard.
MISTAKES: list[tuple[Any, Any]] = [
    (rule_provisionable, lambda d: d.update({"__inputs": [], "id": 7})),
    (rule_template_datasource, lambda d: d["templating"]["list"].pop(0)),
    (rule_template_job, lambda d: variables(d)["job"].update({"multi": False})),
    (rule_template_instance, lambda d: variables(d)["instance"].update({"allValue": ""})),
    (rule_template_stream_labels, lambda d: variables(d)["model"].update({"multi": False})),
    (rule_template_label_promql, lambda d: variables(d)["job"].update({"refresh": 1})),
    (
        rule_variable_chain,
        lambda d: variables(d)["route"].update(
            {"query": 'label_values(llm_records_total{job=~"$job"}, route)'}
        ),
    ),
    (rule_panel_datasource, lambda d: d["panels"].append(BAD_PANEL)),
    (rule_panel_title_description, lambda d: d["panels"].append(BAD_PANEL)),
    (rule_panel_units, lambda d: d["panels"].append(BAD_PANEL)),
    (rule_panel_no_targets, lambda d: d["panels"].append({**BAD_PANEL, "targets": []})),
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
]


@pytest.mark.parametrize(
    ("rule", "mutate"),
    MISTAKES,
    ids=lambda v: (
        v.__name__.removeprefix("rule_") if callable(v) and v.__name__ != "<lambda>" else ""
    ),
)
def test_rule_catches_mistakes(rule: Any, mutate: Any) -> None:
    dashboard = json.loads(json.dumps(load_dashboards()["llm-drift-overview"]))
    assert not rule(dashboard)
    mutate(dashboard)
    assert rule(dashboard)


def test_every_rule_has_a_mistake_it_catches() -> None:
    assert [rule for rule, _ in MISTAKES] == LINT_RULES


@pytest.mark.parametrize(
    "expr",
    [
        'sum by (model) (rate(a_total{x=~"$y"}[$__rate_interval])) / ignoring (le) group_left b',
        "histogram_quantile(0.9, sum without (instance) (rate(a_bucket[5m:1m]))) > bool 2",
        "vector(-time() + 1e3 - Inf) or vector(0) unless on (a, b) max(c offset 5m @ start())",
        'topk(3, a{"b"="c",}) and count_values("v", d) ^ 2 ^ 3',
        'increase(a_total{b="$__range"}[1d] offset ${__rate_interval})',
    ],
)
def test_parser_accepts_promql(expr: str) -> None:
    parse_promql(expr)


@pytest.mark.parametrize(
    "expr",
    ["sum(", "a{b=}", "rate(a[5m)", "a b", "a[5m][5m]", "1 +", "max(c) @ start()", "a[$job]"],
)
def test_parser_rejects_broken_promql(expr: str) -> None:
    with pytest.raises(PromQLError):
        parse_promql(expr)


def test_grafana_interval_variables_keep_their_names() -> None:
    """The rate-interval rule tells `[$__rate_interval]` from a literal `[5m]`."""
    rate = parse_promql('rate(a_total{b="$__rate_interval"}[$__rate_interval])')
    assert isinstance(rate, Call)
    (window,) = rate.args
    assert isinstance(window, MatrixSelector)
    assert duration(window.range) == "$__rate_interval"
    assert matchers(window.vector_selector) == [("b", "=", "$__rate_interval")]
    (literal,) = selectors(parse_promql("a offset ${__range}"))
    assert literal.offset is not None and duration(literal.offset) == "$__range"
    (window,) = parse_promql("rate(a[5m])").args
    assert duration(window.range) == "5m"


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
