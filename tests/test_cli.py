from __future__ import annotations

import subprocess
import sys
import urllib.request

import orjson

from exporter import __version__
from exporter.cli import main
from tests import samples
from tests.process import ExporterProcess, wait_for


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"llm-drift-exporter {__version__}"


def test_check_config_ok(tmp_path, capsys):
    config = tmp_path / "ok.yaml"
    config.write_text("inputs: [{type: http}]\n")
    assert main(["check-config", str(config)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_lists_every_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("inputs: [{type: file, paths: []}]\nformat: openai\nmax_streams: 0\n")
    assert main(["check-config", str(config)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "format: must be one of auto | openai_chat | openai_responses | anthropic | otel_genai "
        "| litellm | langfuse, got 'openai'",
        "inputs.0.paths: [] should be non-empty",
        "max_streams: 0 is less than the minimum of 1",
    ]


def test_replay_writes_report(tmp_path, capsys):
    log = tmp_path / "day.jsonl"
    lines = [samples.chat(), samples.anthropic(), samples.chat()]
    # the last line has no trailing newline: replay still counts it
    log.write_bytes(
        b"\n".join(orjson.dumps(r) for r in lines)
        + b"\nnot json\n"
        + orjson.dumps(samples.responses())
    )
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    report = tmp_path / "report.json"
    assert main(["replay", "--config", str(config), "--report-json", str(report), str(log)]) == 0
    out = capsys.readouterr().out
    assert "4 records" in out and "1 rejected" in out
    document = orjson.loads(report.read_bytes())
    assert document["records"] == 4 and document["rejected"] == 1
    assert document["rejected_by_reason"] == {"invalid_json": 1}
    by_labels = {tuple(s["labels"].values()): s["records"] for s in document["streams"]}
    assert by_labels == {
        ("gpt-4o", "/chat"): 2,
        ("claude-sonnet-4-5", "/chat"): 1,
        ("gpt-4.1-mini", "/extract"): 1,
    }


def test_replay_missing_file_fails_cleanly(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    assert main(["replay", "--config", str(config), str(tmp_path / "missing.jsonl")]) == 1
    assert "missing.jsonl" in capsys.readouterr().err


def test_demo_serves_live_metrics_within_seconds(tmp_path):
    demo = ExporterProcess(["demo"], tmp_path / "demo.log")
    try:
        demo.wait_ready()

        def three_streams():
            metrics = demo.samples()
            streams = {k for k in metrics if k[0] == "llm_records_total" and metrics[k] > 0}
            return len(streams) == 3 and streams

        assert wait_for(three_streams, timeout=10)
        with urllib.request.urlopen(demo.url("/"), timeout=5) as response:
            assert b"/extract" in response.read()
    finally:
        assert demo.stop() == 0


def test_log_level_is_accepted_after_the_command(tmp_path):
    config = tmp_path / "ok.yaml"
    config.write_text("inputs: [{type: http}]\n")
    assert main(["check-config", str(config), "--log.level", "debug"]) == 0
