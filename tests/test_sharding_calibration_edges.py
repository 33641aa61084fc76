"""Edges of sharding and of calibrating on a thread, each a defect a review found: records held
during a calibration and a checkpoint, more than MAX_HELD held records, the stream cap across
a sharded restart, and a record a worker rejects."""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from exporter.config import parse_config
from exporter.detectors.base import MAX_HELD, DetectorSettings
from exporter.detectors.calibration import CalibrationCache
from exporter.detectors.rank_cusum import RankCusum
from exporter.inputs.stats import InputStats
from exporter.service import Exporter
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import restore_streams
from exporter.workers.pool import shard_of
from tests.calibration_cases import SETTINGS as CONFIG
from tests.calibration_cases import records
from tests.process import ExporterProcess
from tests.state_helpers import load_into, round_trip, snapshots


# --- 1. a checkpoint taken while a threshold is simulated loses the held records -------
def test_checkpoint_during_calibration_keeps_the_held_observations() -> None:
    """Positions in a checkpoint cover every record read; the detector state saved with
    them must too. A snapshot taken while a calibration runs drops the observations the
    detector holds (and saves the detector as not ready): restored, those records never
    reach the detector and the baseline is re-completed with one record too many."""
    config = parse_config(CONFIG)
    inline = Pipeline(config, clock=lambda: 1.0)
    inline.ingest_values(records(), InputStats("t", "test"))
    with ThreadPoolExecutor(1) as executor:
        gate = threading.Event()
        executor.submit(gate.wait)  # the calibration thread is busy (another stream)
        threaded = Pipeline(config, clock=lambda: 1.0, calibration=executor)
        threaded.ingest_values(records(), InputStats("t", "test"))
        saved = round_trip(threaded)  # what a checkpoint writes now, the simulation running
        gate.set()
    restored = Pipeline(config, clock=lambda: 1.0)
    assert restore_streams(restored, saved) == (1, 0)
    detectors = next(iter(restored.streams)).detectors
    assert detectors is not None
    assert detectors.detectors["refusal"].baseline_ready, (
        "restored refusal detector is re-learning: the 220 records held during calibration "
        "were dropped from the checkpoint")
    assert snapshots(restored) == snapshots(inline)


async def test_stop_checkpoints_detectors_still_calibrating(tmp_path: Path) -> None:
    """The same through the real shutdown path (workers: 1): `Exporter.stop` writes the
    final checkpoint without waiting for the running calibration."""
    config = parse_config({**CONFIG, "inputs": [{"type": "http"}],
                           "state_dir": str(tmp_path / "state")})
    exporter = Exporter(config, clock=lambda: 1.0)
    assert exporter.calibration is not None
    gate = threading.Event()
    exporter.calibration.submit(gate.wait)
    exporter.pipeline.ingest_values(records(), InputStats("t", "test"))
    timer = threading.Timer(0.3, gate.set)  # the simulation ends while stop() waits
    timer.start()
    try:
        await exporter.stop()
    finally:
        gate.set()
        timer.cancel()
    inline = Pipeline(config, clock=lambda: 1.0)
    inline.ingest_values(records(), InputStats("t", "test"))
    again = Pipeline(config, clock=lambda: 1.0)
    load_into(config.state_dir, again)
    assert snapshots(again) == snapshots(inline)


# --- 2. more than MAX_HELD held observations ---------------------------------------------
def test_more_than_max_held_observations_keep_the_latest_at_their_indexes() -> None:
    """A calibration holds the latest MAX_HELD observations (the statistics forget older ones
    anyway); a shift among them is found at the record index where inline finds it."""
    settings = DetectorSettings(expected_run_time=100_000, baseline_size=100, window_size=20)
    rng = random.Random(3)
    calm = 100 + 3 * MAX_HELD  # far more than can be held
    values = [rng.gauss(100, 10) for _ in range(calm)]
    values += [rng.gauss(160, 10) for _ in range(300)]  # a clear shift at `calm`
    values += [rng.gauss(100, 10) for _ in range(MAX_HELD - 400)]

    inline = RankCusum(settings, CalibrationCache())
    for x in values:
        inline.update(x)

    with ThreadPoolExecutor(1) as executor:
        gate = threading.Event()
        executor.submit(gate.wait)
        threaded = RankCusum(settings, CalibrationCache())
        threaded.executor = executor
        for x in values:
            threaded.update(x)
        gate.set()
        threaded.settle(wait=True)
    assert threaded.baseline_ready_at == inline.baseline_ready_at == 100
    assert threaded.observations == inline.observations == len(values)
    found = [e["record"] for e in inline.event_log if e["record"] >= calm]
    held = [e["record"] for e in threaded.event_log]
    assert found and held and held[0] >= calm and abs(held[0] - found[0]) <= 3


# --- 3/4. workers: 2 - the stream cap and restart ----------------------------------------
def chat(route: str, **extra: object) -> bytes:
    return orjson.dumps({
        "route": route, "request": {"model": "gpt-4o"},
        "response": {"object": "chat.completion", "model": "gpt-4o-2024-08-06",
                     "choices": [{"index": 0, "finish_reason": "stop", "message": {
                         "role": "assistant", "content": "Your parcel ships today."}}]},
        **extra,
    })


def post(exporter: ExporterProcess, body: bytes) -> dict:
    request = urllib.request.Request(exporter.url("/v1/records"), data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def start(tmp_path: Path, name: str, cfg: dict) -> ExporterProcess:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(cfg))
    exporter = ExporterProcess(["run", "--config", str(path)], tmp_path / f"{name}.log")
    exporter.wait_ready(60)
    return exporter


def routes_counted(exporter: ExporterProcess) -> dict[str, float]:
    return {dict(labels)["route"]: v for (name, labels), v in exporter.samples().items()
            if name == "llm_records_total"}


@pytest.mark.e2e
def test_sharded_restart_keeps_streams_under_the_cap(tmp_path: Path) -> None:
    """workers: 2, cap reached, clean restart: the checkpoint lists streams worker by
    worker, so `__other__` (worker 0) is saved before /r0 (worker 1). `_restore_shards`
    re-admits them in that order and the cap now falls on /r0: after the restart its
    records are counted as `__other__`. With workers: 1 /r0 stays its own stream."""
    assert shard_of(("gpt-4o", "/r4"), 2) == 0 and shard_of(("gpt-4o", "/r0"), 2) == 1
    assert shard_of(("__other__", "__other__"), 2) == 0
    cfg = {"workers": 2, "max_streams": 2, "inputs": [{"type": "http"}],
           "state_dir": str(tmp_path / "state"), "detectors": {"baseline_size": 100}}
    first = start(tmp_path, "first", cfg)
    try:
        assert post(first, b"[" + chat("/r4") + b"," + chat("/r0") + b"," + chat("/r1") + b"]"
                    )["accepted"] == 3
        assert routes_counted(first) == {"/r4": 1, "/r0": 1, "__other__": 1}
    finally:
        assert first.stop() == 0
    again = start(tmp_path, "again", cfg)
    try:
        assert post(again, chat("/r0"))["accepted"] == 1
        counted = routes_counted(again)
    finally:
        assert again.stop() == 0
    assert counted.get("/r0") == 1, f"/r0's record went to the overflow stream: {counted}"


@pytest.mark.e2e
def test_sharded_rejected_record_does_not_take_a_stream_slot(tmp_path: Path) -> None:
    """A record rejected for its embedding creates no stream in one process (the
    pipeline says so: "a stream is created only for a record that made it"); with
    workers the supervisor admits its stream before a worker measures and rejects it,
    so it uses up `max_streams` and the next real stream lands in `__other__`."""
    base = {"max_streams": 1, "inputs": [{"type": "http"}],
            "signals": {"embedding": {"path": "emb"}}, "detectors": {"baseline_size": 100}}
    body = b"[" + chat("/bad", emb="not a vector") + b"," + chat("/good") + b"]"
    single = Pipeline(parse_config(base))
    done = single.ingest_values(orjson.loads(body), InputStats("t", "test"))
    assert (done.accepted, done.rejected) == (1, 1)
    assert [s.labels for s in single.streams] == [("gpt-4o", "/good")]

    exporter = start(tmp_path, "w2", {**base, "workers": 2})
    try:
        pushed = post(exporter, body)
        counted = routes_counted(exporter)
    finally:
        assert exporter.stop() == 0
    assert (pushed["accepted"], pushed["rejected"]) == (1, 1)
    assert counted == {"/good": 1}, f"workers: 2 counted {counted}"
