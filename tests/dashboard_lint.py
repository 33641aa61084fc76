"""Lint of the shipped Grafana dashboards: each rule takes a dashboard and returns its problems
(empty: it passes); `test_dashboards.py` runs every rule of `LINT_RULES` on both dashboards
and proves each can fail.

The main rules of grafana/dashboard-linter (template-datasource, template-job,
template-instance, template-label-promql, template-on-time-change-reload, panel-datasource,
panel-title-description, panel-units, panel-no-targets, and the target-* rules on the PromQL
syntax tree in `dashboard_target_rules.py`), plus checks of our own: provisionable JSON (stable
uid, no `__inputs`, no numeric dashboard id), unique panel ids and a non-overlapping grid,
variables chained job -> instance -> model -> route, every variable defined and used.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.dashboard_queries import (
    GRAFANA_VARIABLES,
    LABEL_VALUES,
    STREAM_LABELS,
    VARIABLE_REF,
    PromQLError,
    all_panels,
    data_panels,
    matchers,
    parse_promql,
    selectors,
    variable_query,
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

# Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) a panel may use.
VALID_UNITS = set(
    """
    none short string percent percentunit sci locale bytes decbytes bits Bps binBps bps
    ns µs ms s m h d dtdurationms dtdurations dthms clocks dateTimeAsIso dateTimeAsSystem
    dateTimeFromNow hertz cps ops reqps rps wps iops cpm opm rpm wpm bool bool_yes_no bool_on_off
    """.split()
)


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
        for selector in selectors(parse_promql(match["selector"])):
            have = set(matchers(selector))
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
