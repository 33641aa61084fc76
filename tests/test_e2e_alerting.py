"""Exporter -> real Prometheus with the shipped rules -> real Alertmanager -> webhook.

A drifting stream must fire the refusal drift alert with its stream labels
and annotations, then resolve once the stream is back to normal. Every rule
expression must evaluate without error in the same Prometheus.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from tests import samples
from tests.process import ExporterProcess, wait_for
from tests.prom import (
    WebhookReceiver,
    start_alertmanager,
    start_prometheus,
    with_short_for,
)

pytestmark = pytest.mark.e2e

RULES = sorted((Path(__file__).parent.parent / "rules").glob("*.yml"))


def push(exporter: ExporterProcess, texts: list[str]) -> None:
    body = orjson.dumps([samples.chat(text=t) for t in texts])
    request = urllib.request.Request(exporter.url("/v1/records"), data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture
def stack(tmp_path):
    config = tmp_path / "exporter.yaml"
    config.write_text(
        "inputs: [{type: http}]\n"
        "detectors: {baseline_size: 100, window_size: 20, expected_run_time: 10000}\n"
    )
    exporter = ExporterProcess(["run", "--config", str(config)], tmp_path / "exporter.log")
    exporter.wait_ready()
    receiver = WebhookReceiver()
    alertmanager = start_alertmanager(tmp_path, receiver.url)
    rules = [with_short_for(path, tmp_path / f"short-{path.name}") for path in RULES]
    prometheus = start_prometheus(tmp_path, [exporter.address], rules,
                                  alertmanager=f"127.0.0.1:{alertmanager.port}")
    yield exporter, prometheus, receiver
    prometheus.stop()
    alertmanager.stop()
    receiver.close()
    assert exporter.stop() == 0


def test_drift_alert_fires_and_resolves_through_alertmanager(stack):
    exporter, prometheus, receiver = stack
    push(exporter, ["Your invoice is attached and the refund is on its way."] * 150)
    refusal = "I'm sorry, but I can't help with that request."
    push(exporter, [refusal] * 60)

    def fired():
        return [a for a in receiver.alerts("firing")
                if a["labels"]["alertname"] == "LLMDriftRefusal"]

    firing = wait_for(fired, timeout=60, interval=0.5)
    assert firing, (receiver.notifications, prometheus.get_json("/api/v1/alerts"))
    alert = firing[0]
    assert alert["labels"]["model"] == "gpt-4o" and alert["labels"]["route"] == "/chat"
    assert alert["labels"]["severity"]
    for annotation in ("summary", "description", "runbook_url"):
        assert alert["annotations"][annotation]

    # back to normal: the drift clears after a window of calm records, the alert resolves
    push(exporter, ["Your invoice is attached and the refund is on its way."] * 200)

    def resolved():
        return [a for a in receiver.alerts("resolved")
                if a["labels"]["alertname"] == "LLMDriftRefusal"]

    assert wait_for(resolved, timeout=60, interval=0.5), receiver.notifications


def test_every_rule_expression_evaluates_in_real_prometheus(stack):
    exporter, prometheus, _ = stack
    push(exporter, ["Fine answer."] * 20)
    time.sleep(3)
    expressions = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                expressions.append((rule.get("alert") or rule.get("record"), rule["expr"]))
    assert expressions
    for name, expr in expressions:
        answer = prometheus.get_json("/api/v1/query", query=expr)
        assert answer["status"] == "success", (name, answer)
    groups = prometheus.get_json("/api/v1/rules")["data"]["groups"]
    unhealthy = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
                 if r.get("health") not in ("ok", "unknown")]
    assert not unhealthy
