"""End to end: the real exporter process tails a file, accepts pushes, and serves /metrics."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request

import orjson
import pytest

from tests import samples
from tests.process import ExporterProcess, wait_for

pytestmark = pytest.mark.e2e


def post(exporter: ExporterProcess, body: bytes, headers: dict[str, str] | None = None):
    request = urllib.request.Request(
        exporter.url("/v1/records"), data=body, headers=headers or {}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read() or b"{}")


@pytest.fixture
def running(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
inputs:
  - type: file
    paths: ["{logs}/*.jsonl"]
    start_at: beginning
    poll_interval: 0.05
  - type: http
    max_body_bytes: 2000000
"""
    )
    exporter = ExporterProcess(["run", "--config", str(config)], tmp_path / "exporter.log")
    exporter.wait_ready()
    yield exporter, logs
    assert exporter.stop() == 0, (tmp_path / "exporter.log").read_text()


def records_total(metrics, model: str, route: str) -> float:
    return metrics.get(("llm_records_total", (("model", model), ("route", route))), 0.0)


def rejected(metrics, reason: str) -> float:
    return metrics.get(("llm_records_rejected_total", (("reason", reason),)), 0.0)


def test_file_and_push_counted_exactly_per_stream(running):
    exporter, logs = running
    lines = [samples.chat(), samples.anthropic(), samples.otel_span(), samples.litellm()] * 25
    with open(logs / "app.jsonl", "wb") as handle:
        handle.writelines(orjson.dumps(line) + b"\n" for line in lines)
    pushed = [samples.responses(), samples.chat(model="gpt-4o-mini", route="/chat")] * 10
    status, answer = post(exporter, orjson.dumps(pushed), {"Content-Type": "application/json"})
    assert status == 200 and answer == {"accepted": 20, "rejected": 0, "errors": []}
    ndjson = gzip.compress(
        b"\n".join(orjson.dumps(samples.anthropic("claude-haiku-4-5", "/sum")) for _ in range(7))
    )
    status, answer = post(
        exporter, ndjson, {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    )
    assert status == 200 and answer["accepted"] == 7

    expected = {
        ("gpt-4o", "/chat"): 50,
        ("claude-sonnet-4-5", "/chat"): 25,
        ("gpt-4o", "/agent"): 25,
        ("gpt-4.1-mini", "/extract"): 10,
        ("gpt-4o-mini", "/chat"): 10,
        ("claude-haiku-4-5", "/sum"): 7,
    }

    def counted():
        metrics = exporter.samples()
        return all(records_total(metrics, *key) == n for key, n in expected.items()) and metrics

    metrics = wait_for(counted)
    assert metrics, exporter.samples()
    finish = (
        "llm_finish_reasons_total",
        (("finish_reason", "length"), ("model", "gpt-4.1-mini"), ("route", "/extract")),
    )
    assert metrics[finish] == 10
    served = (
        "llm_served_model_records_total",
        (("model", "gpt-4o"), ("route", "/chat"), ("served_model", "gpt-4o-2024-08-06")),
    )
    assert metrics[served] == 50
    assert metrics[("llm_exporter_input_records_total", (("input", "file"),))] == 100
    assert metrics[("llm_exporter_input_records_total", (("input", "http"),))] == 27
    assert sum(v for (name, _), v in metrics.items() if name == "llm_records_rejected_total") == 0
    build = [k for k in metrics if k[0] == "llm_exporter_build_info"]
    assert len(build) == 1


def test_malformed_input_is_counted_and_disturbs_nothing(running):
    exporter, logs = running
    good = orjson.dumps(samples.chat()) + b"\n"
    with open(logs / "bad.jsonl", "wb") as handle:
        handle.write(good)
        handle.write(b'{"broken json\n')
        handle.write(b"\xff\xfe\xfd invalid utf-8\n")
        handle.write(b'{"some": "other shape"}\n')
        handle.write(b"{" + b"x" * (10 * 1024 * 1024) + b"}\n")  # a 10 MB line
        handle.write(good)

    # over HTTP: empty body, an unknown shape, broken JSON, invalid UTF-8, a body over the limit
    assert post(exporter, b"")[0] == 400
    status, answer = post(exporter, b'{"foo": 1}')
    assert status == 400 and answer["errors"][0].startswith("record 0: unknown_format")
    assert post(exporter, b"{not json")[0] == 400
    assert post(exporter, b'{"a": "\xff"}')[0] == 400
    assert post(exporter, b"x" * 3_000_000)[0] == 413
    status, answer = post(exporter, good)
    assert status == 200 and answer["accepted"] == 1

    def settled():
        metrics = exporter.samples()
        return records_total(metrics, "gpt-4o", "/chat") == 3 and metrics

    metrics = wait_for(settled)
    assert metrics, exporter.samples()
    assert rejected(metrics, "invalid_json") == 2
    assert rejected(metrics, "invalid_utf8") == 2
    assert rejected(metrics, "unknown_format") == 2
    assert rejected(metrics, "too_large") == 2
    assert rejected(metrics, "empty_body") == 1
    assert rejected(metrics, "internal_error") == 0
    # the exporter is still up and healthy
    with urllib.request.urlopen(exporter.url("/-/healthy"), timeout=5) as response:
        assert response.status == 200


def test_invalid_config_refuses_to_start(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("inputs:\n  - type: file\n    path: [x]\nmax_stream: 3\n")
    process = ExporterProcess(["run", "--config", str(config)], tmp_path / "log")
    assert process.process.wait(30) == 1
    log = (tmp_path / "log").read_text()
    assert "inputs.0.path: unknown key" in log
    assert "inputs.0.paths: required key is missing" in log
    assert "max_stream: unknown key" in log
