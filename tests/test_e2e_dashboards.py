"""Every dashboard panel returns data from a real Prometheus scraping the running demo."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.dashboard_queries import dashboard_expressions
from tests.process import ExporterProcess, wait_for
from tests.prom import start_prometheus

pytestmark = pytest.mark.e2e


def test_every_panel_returns_data_while_the_demo_runs(tmp_path):
    demo = ExporterProcess(["demo"], tmp_path / "demo.log")
    demo.wait_ready()
    prometheus = start_prometheus(tmp_path, [demo.address], [])
    try:
        def baselines_ready() -> bool:
            answer = prometheus.get_json(
                "/api/v1/query", query="min(llm_drift_baseline_ready{signal!='format_validity'})")
            result = answer["data"]["result"]
            return bool(result) and result[0]["value"][1] == "1"

        assert wait_for(baselines_ready, timeout=90, interval=1.0)
        by_panel: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for where, expr in dashboard_expressions():
            if " annotation " in where:
                continue  # annotations mark events; they are empty until something happens
            answer = prometheus.get_json("/api/v1/query", query=expr)
            assert answer["status"] == "success", (where, expr, answer)
            panel = where.split(" target")[0]
            by_panel[panel].append((expr, len(answer["data"]["result"])))
        empty = {panel: targets for panel, targets in by_panel.items()
                 if not any(count for _, count in targets)}
        assert not empty, empty
        assert len(by_panel) >= 30
    finally:
        prometheus.stop()
        assert demo.stop() == 0
