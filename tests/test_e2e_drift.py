"""End to end: baselines survive a restart; replay and baseline commands report drift."""

from __future__ import annotations

import random

import orjson
import pytest

from exporter.cli import main
from tests import samples
from tests.process import ExporterProcess, wait_for
from tests.state_helpers import saved_entries

VOCABULARY = (
    "invoice refund order parcel status account login plan card delivery"
).split()
DETECTORS = "detectors: {baseline_size: 100, window_size: 20, expected_run_time: 10000}\n"


def answers(n: int, words: int, seed: int = 0) -> list[dict]:
    """Chat records without usage (so the tokenizer counts), words drawn independently."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        record = samples.chat(text=" ".join(rng.choice(VOCABULARY) for _ in range(words)))
        del record["response"]["usage"]
        records.append(record)
    return records


def write_jsonl(path, records) -> None:
    with open(path, "ab") as handle:
        handle.writelines(orjson.dumps(r) + b"\n" for r in records)


def ready_value(exporter: ExporterProcess) -> float | None:
    key = ("llm_drift_baseline_ready",
           (("model", "gpt-4o"), ("route", "/chat"), ("signal", "output_tokens")))
    return exporter.samples().get(key)


@pytest.mark.e2e
def test_baseline_survives_restart(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        f'inputs: [{{type: file, paths: ["{logs}/*.jsonl"], start_at: beginning, '
        f"poll_interval: 0.05}}]\nstate_dir: {tmp_path / 'state'}\n{DETECTORS}"
    )
    write_jsonl(logs / "a.jsonl", answers(120, 30))
    first = ExporterProcess(["run", "--config", str(config)], tmp_path / "first.log")
    first.wait_ready()
    assert wait_for(lambda: ready_value(first) == 1.0)
    assert first.stop() == 0
    assert (tmp_path / "state" / "state.db").exists()

    second = ExporterProcess(["run", "--config", str(config)], tmp_path / "second.log")
    try:
        second.wait_ready()
        # ready at once, before any new record: the baseline came from state_dir
        assert ready_value(second) == 1.0
    finally:
        assert second.stop() == 0


def test_replay_report_has_events_with_stream_record_index(tmp_path, capsys):
    log = tmp_path / "day.jsonl"
    write_jsonl(log, answers(400, 30, seed=1) + answers(300, 90, seed=2))
    config = tmp_path / "c.yaml"
    config.write_text(DETECTORS)
    report = tmp_path / "report.json"
    assert main(["replay", "--config", str(config), "--report-json", str(report), str(log)]) == 0
    assert "output_tokens: 1 drift event(s) at record" in capsys.readouterr().out
    document = orjson.loads(report.read_bytes())
    signals = document["streams"][0]["signals"]
    assert signals["output_tokens"]["baseline_ready_at"] == 100
    events = signals["output_tokens"]["events"]
    assert len(events) == 1 and 400 <= events[0]["record"] < 430
    assert events[0]["score"] >= 1.0
    assert signals["refusal"]["events"] == []


def test_baseline_command_learns_from_known_good_file(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    write_jsonl(good, answers(150, 30))
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n{DETECTORS}")
    assert main(["baseline", "--config", str(config), str(good)]) == 0
    out = capsys.readouterr().out
    assert "output_tokens ready" in out and "format_validity NOT ready" in out
    detectors = saved_entries(tmp_path / "state")[0]["detectors"]["detectors"]
    assert detectors["output_tokens"]["baseline_ready_at"] == 100
    # learning stopped at the baseline: nothing after it was run through detection
    assert detectors["output_tokens"]["observations"] == 100


def test_baseline_command_needs_state_dir(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    good = tmp_path / "good.jsonl"
    write_jsonl(good, answers(5, 3))
    assert main(["baseline", "--config", str(config), str(good)]) == 1
    assert "state_dir: required" in capsys.readouterr().err
