"""The shipped alerting rules and the example Alertmanager config, checked with the real tools.

promtool and amtool come from the Debian packages `prometheus` and `prometheus-alertmanager`
(scripts/install-system-deps). Without them these tests skip, except in CI (env CI set), where a
missing tool is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "rules").glob("*.yml"))
RULE_TESTS = sorted((ROOT / "tests" / "rules").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK_BASE = "https://github.com/llm-drift-exporter/llm-drift-exporter/blob/main/docs/runbooks/"
SEVERITIES = {"page", "ticket", "info"}
TIMEOUT = 120


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found on PATH; run scripts/install-system-deps"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: missing tools fail instead of skipping)")
        pytest.skip(message)
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT
    )


def _alert_rules() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def test_rule_files_exist() -> None:
    assert RULE_FILES, "no rules/*.yml"
    assert RULE_TESTS, "no tests/rules/*.yml"


def test_promtool_check_rules() -> None:
    promtool = _tool("promtool")
    result = _run(promtool, "check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests() -> None:
    """`promtool test rules tests/rules/*.yml`, one process per file, run side by side."""
    promtool = _tool("promtool")
    procs = {
        path.name: subprocess.Popen(
            [promtool, "test", "rules", path.name],
            cwd=path.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for path in RULE_TESTS
    }
    failures = []
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=TIMEOUT)
        if proc.returncode != 0:
            failures.append(f"--- {name}\n{output}")
    assert not failures, "\n".join(failures)


def test_amtool_check_config() -> None:
    amtool = _tool("amtool")
    result = _run(amtool, "check-config", ALERTMANAGER_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("severity", "receiver"),
    [("page", "llm-drift-page"), ("ticket", "llm-drift-ticket"), ("info", "llm-drift-info")],
)
def test_alertmanager_routes_by_severity(severity: str, receiver: str) -> None:
    amtool = _tool("amtool")
    result = _run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receiver}",
        "alertname=LLMDriftRefusal",
        f"severity={severity}",
        "model=gpt-4o",
        "route=/chat",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_complete() -> None:
    rules = _alert_rules()
    assert rules
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"LLM(Drift|Exporter)([A-Z][a-z0-9]+)+", name), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name}: no {key}"
        assert "{{" in annotations["description"], f"{name}: description is not templated"
        url = annotations["runbook_url"]
        assert url == f"{RUNBOOK_BASE}{name}.md", f"{name}: runbook_url {url}"
        assert (RUNBOOKS / f"{name}.md").is_file(), f"{name}: no docs/runbooks/{name}.md"


def test_runbook_index_lists_every_alert() -> None:
    names = {rule["alert"] for rule in _alert_rules()}
    index = (RUNBOOKS / "README.md").read_text()
    for name in names:
        assert f"({name}.md)" in index, f"docs/runbooks/README.md does not link {name}"
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == names, f"runbooks without an alert: {sorted(pages - names)}"


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _alert_rules()}
    assert names - firing == set(), f"alerts never tested firing: {sorted(names - firing)}"
    assert names - quiet == set(), f"alerts never tested quiet: {sorted(names - quiet)}"


def test_every_alert_rule_fires_in_some_unit_test() -> None:
    """Alerts with several rules (page and ticket, burn-rate windows): each rule fires somewhere."""
    fired: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                for alert in case.get("exp_alerts") or []:
                    labels = alert.get("exp_labels", {})
                    fired.add((case["alertname"], tuple(sorted(labels.items()))))
    for rule in _alert_rules():
        static = rule.get("labels", {}).items()
        assert any(
            name == rule["alert"] and static <= dict(labels).items() for name, labels in fired
        ), f"no unit test fires {rule['alert']} with labels {dict(static)}"
