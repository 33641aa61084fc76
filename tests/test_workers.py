"""`workers: N`: streams sharded over worker processes, against the real exporter process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.streams.pipeline import Pipeline
from exporter.workers import protocol
from exporter.workers.child import Worker
from exporter.workers.pool import shard_of
from exporter.workers.router import ShardedIngest
from tests import samples
from tests.process import ExporterProcess, wait_for
from tests.state_helpers import saved_entries

ROUTES = [f"/r{i}" for i in range(6)]
# differ between a run in one process and one with workers, by nature
VARYING = (
    "llm_last_record_timestamp_seconds", "llm_exporter_input_last_record_timestamp_seconds",
    "llm_exporter_processing_seconds_total", "llm_exporter_workers", "llm_exporter_build_info",
)


def test_a_stream_always_lands_on_the_same_worker_and_streams_spread() -> None:
    assert shard_of(("gpt-4o", "/chat"), 4) == shard_of(("gpt-4o", "/chat"), 4)
    # crc32 of the joined values: the same in every process and Python version
    assert [shard_of(("gpt-4o", f"/r{i}"), 2) for i in range(6)] == [1, 1, 1, 1, 0, 0]
    counts = Counter(shard_of(("m", f"/route/{i}"), 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 850


def test_frames_round_trip_and_end_cleanly() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        message = (7, "ingest", (None, [(0, b'{"a": 1}', [(0, ("m", "/r"))])]))
        protocol.write_blocking(writer, message)
        protocol.write_blocking(writer, "second")
        writer.close()
        assert protocol.read_blocking(reader) == (True, message)
        assert protocol.read_blocking(reader) == (True, "second")
        assert protocol.read_blocking(reader) == (False, None)


async def test_frames_read_by_the_event_loop() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(protocol.encode({"x": [1, 2]}) + protocol.encode(b"\x00" * 100_000))
    reader.feed_eof()
    assert await protocol.read(reader) == {"x": [1, 2]}
    assert await protocol.read(reader) == b"\x00" * 100_000
    with pytest.raises(asyncio.IncompleteReadError):
        await protocol.read(reader)


class InProcessPool:
    """One worker in this process, its replies passed through a frame as between processes."""

    size = 1

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def request(self, shard: int, kind: str, *args: object) -> asyncio.Future[object]:
        _, ok, reply = self.worker.handle((0, kind, args))
        assert ok, reply
        reader = asyncio.StreamReader()
        reader.feed_data(protocol.encode(reply))
        reader.feed_eof()
        return asyncio.ensure_future(protocol.read(reader))

    async def drained(self, shard: int) -> None:
        return None


async def test_rejections_come_back_from_the_workers_by_record_number(monkeypatch) -> None:
    """A worker's rejections cross the frame structured and are merged with the supervisor's
    in record order; the `record N: reason: message` text is made only for the answer."""
    config = parse_config({})
    worker = Worker(Pipeline(config))
    measure = worker.pipeline.measurer.measure

    def poisoned(record, *args, **kwargs):  # a record only the worker can find unusable
        if record.output_text == "poison":
            raise ValueError("poisoned vector")
        return measure(record, *args, **kwargs)

    monkeypatch.setattr(worker.pipeline.measurer, "measure", poisoned)
    sharded = ShardedIngest(Pipeline(config, detect=False), InProcessPool(worker))
    values = [samples.chat(text="poison"), samples.chat(), {"bad": 1}, samples.chat()]
    result = await sharded.ingest(values, InputStats("t", "test"), decode=False)
    assert (result.accepted, result.rejected) == (2, 2)
    assert [(e.position, e.reason) for e in result.errors] == [
        (0, "invalid_embedding"), (2, "unknown_format")]
    assert str(result.errors[0]) == "record 0: invalid_embedding: poisoned vector"


def chat(rng: random.Random, route: str) -> bytes:
    words = " ".join(rng.choice(["refund", "parcel", "invoice", "login", "plan", "card"])
                     for _ in range(rng.randint(5, 60)))
    refused = rng.random() < 0.15
    if route == "/r1" and rng.random() < 0.7:  # the route whose replies must be JSON
        words = json.dumps({"answer": words})
    return orjson.dumps({
        "route": route, "request": {"model": "gpt-4o"},
        "response": {"object": "chat.completion", "model": "gpt-4o-2024-08-06",
                     "choices": [{"index": 0, "finish_reason": "stop", "message": {
                         "role": "assistant",
                         "content": "I'm sorry, but I can't help with that." if refused else words,
                     }}]},
    })


def write_records(path: Path, n: int = 1500) -> int:
    """Records over six streams, plus lines the supervisor must reject; returns the
    number of lines that are records."""
    rng = random.Random(5)
    lines = [chat(rng, ROUTES[i % len(ROUTES)]) for i in range(n)]
    lines[100:100] = [b"{not json", b'{"unknown": "shape"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    return n


def config(tmp_path: Path, name: str, records: Path, workers: int, state: bool = False) -> Path:
    text = {
        "workers": workers,
        "inputs": [{"type": "file", "paths": [str(records)], "start_at": "beginning"},
                   {"type": "http"}],
        "detectors": {"baseline_size": 100},
        "signals": {"format_validity": [{"match": {"route": "/r1"}, "expect": "json"}]},
    }
    if state:
        text["state_dir"] = str(tmp_path / f"{name}-state")
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(text))
    return path


def start(tmp_path: Path, name: str, cfg: Path) -> ExporterProcess:
    exporter = ExporterProcess(["run", "--config", str(cfg)], tmp_path / f"{name}.log")
    exporter.wait_ready(60)
    return exporter


def settled(exporter: ExporterProcess, records: int) -> dict:
    """Samples once every record is accounted and every detector of every stream is live."""
    def done() -> dict | None:
        samples = exporter.samples()
        read = samples.get(("llm_exporter_input_records_total", (("input", "file"),)), 0)
        ready = [v for (name, labels), v in samples.items()
                 if name == "llm_drift_baseline_ready"  # only /r1 is format-checked
                 and (("signal", "format_validity") not in labels or ("route", "/r1") in labels)]
        return samples if read == records and ready and all(ready) else None

    samples = wait_for(done, timeout=90, interval=0.5)
    assert samples, f"exporter did not settle: {exporter.log_path.read_text()[-3000:]}"
    return samples


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_two_workers_export_exactly_what_one_process_does(tmp_path: Path) -> None:
    """Per-stream order is kept and calibration is seeded, so sharding changes no number:
    counts, histograms, rejections, drift scores and thresholds all match."""
    records = tmp_path / "records.jsonl"
    n = write_records(records)
    results = {}
    for workers in (1, 2):
        exporter = start(tmp_path, f"w{workers}", config(tmp_path, f"w{workers}", records, workers))
        try:
            samples = settled(exporter, n)
            if workers == 2:
                assert len(children(exporter.process.pid)) == 2
                assert samples[("llm_exporter_workers", ())] == 2
                with urllib.request.urlopen(exporter.url("/metrics"), timeout=30) as response:
                    text = response.read().decode()
                series = [line.split(" ")[0] for line in text.splitlines()
                          if line and not line.startswith("#")]
                assert len(series) == len(set(series)), "a series exported twice"
                request = urllib.request.Request(exporter.url("/metrics"), headers={
                    "Accept": "application/openmetrics-text; version=1.0.0"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    families = {f.name for f in om_families(response.read().decode())}
                assert {"llm_records", "llm_drift_score", "llm_output_tokens"} <= families
        finally:
            assert exporter.stop() == 0
        results[workers] = {k: v for k, v in samples.items()
                            if k[0].startswith("llm_") and k[0] not in VARYING}
    assert results[1][("llm_records_rejected_total", (("reason", "invalid_json"),))] == 1
    assert sum(v for (name, _), v in results[1].items() if name == "llm_records_total") == n
    assert results[2] == results[1]


def post(exporter: ExporterProcess, path: str, body: bytes) -> dict:
    request = urllib.request.Request(exporter.url(path), data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_api_reset_push_and_checkpoints_span_the_workers(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    n = write_records(records)
    cfg = config(tmp_path, "state", records, workers=3, state=True)
    exporter = start(tmp_path, "first", cfg)
    try:
        settled(exporter, n)
        with urllib.request.urlopen(exporter.url("/api/v1/streams"), timeout=30) as response:
            streams = json.loads(response.read())["streams"]
        assert sorted(s["labels"]["route"] for s in streams) == ROUTES
        assert sum(s["records"] for s in streams) == n
        reset = post(exporter, "/api/v1/baseline/reset",
                     b'{"match": {"route": "/r2"}, "signals": ["refusal"]}')
        assert reset["reset"] == [{"model": "gpt-4o", "route": "/r2"}]
        rng = random.Random(9)
        pushed = post(exporter, "/v1/records",
                      b"[" + chat(rng, "/r3") + b', {"bad": 1}, ' + chat(rng, "/new") + b"]")
        assert pushed["accepted"] == 2 and pushed["rejected"] == 1
        assert pushed["errors"][0].startswith("record 1: unknown_format")
        samples = exporter.samples()
        assert samples[("llm_exporter_streams", ())] == 7
        ready = (("model", "gpt-4o"), ("route", "/r2"), ("signal", "refusal"))
        assert samples[("llm_drift_baseline_ready", ready)] == 0
    finally:
        assert exporter.stop() == 0
    saved = saved_entries(tmp_path / "state-state")
    assert sorted(s["labels"][1] for s in saved) == sorted([*ROUTES, "/new"])

    again = start(tmp_path, "second", cfg)
    try:
        samples = again.samples()
        live = [v for (name, labels), v in samples.items()
                if name == "llm_drift_baseline_ready" and ("route", "/r1") in labels]
        assert live == [1.0, 1.0, 1.0, 1.0]  # restored, not re-learning
        assert samples[("llm_exporter_input_records_total", (("input", "file"),))] == 0
        assert "restored detector state of 7 stream(s) into 3 workers" in (
            again.log_path.read_text())
    finally:
        assert again.stop() == 0


def test_a_dead_worker_stops_the_exporter_without_a_checkpoint(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    n = write_records(records, 600)
    exporter = start(tmp_path, "dies", config(tmp_path, "dies", records, workers=2, state=True))
    state = tmp_path / "dies-state"
    try:
        wait_for(lambda: exporter.samples().get(
            ("llm_exporter_input_records_total", (("input", "file"),))) == n, timeout=60)
        os.kill(children(exporter.process.pid)[0], signal.SIGKILL)
        code = exporter.process.wait(20)
    finally:
        exporter.stop()
    assert code == 1
    log = exporter.log_path.read_text()
    assert "exited with -9" in log and "shutting down: worker" in log
    # checkpoints taken while both workers lived hold every stream; none came after the death
    routes = sorted({labels[1] for labels in (s["labels"] for s in saved_entries(state))})
    assert routes == sorted(ROUTES), "a checkpoint without the dead worker's streams was written"
