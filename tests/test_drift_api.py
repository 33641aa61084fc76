"""Drift state through the HTTP API: streams JSON with evidence, landing page, baseline reset."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestServer

from exporter import service
from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.service import Exporter
from exporter.web.server import make_app
from tests import samples
from tests.state_helpers import plain

CONFIG = {
    "inputs": [{"type": "http"}],
    "detectors": {"baseline_size": 100, "window_size": 20, "expected_run_time": 10000},
}


def drifted_exporter() -> Exporter:
    exporter = Exporter(parse_config(CONFIG))
    stats = InputStats("t", "test")
    short = [samples.chat(text="Your invoice is attached.") for _ in range(150)]
    refusals = [samples.chat(text="I'm sorry, but I can't help with that request.")
                for _ in range(150)]
    exporter.pipeline.ingest_values(short + refusals, stats)
    exporter.pipeline.settle(wait=True)  # a running exporter simulates thresholds on a thread
    # the event fired while the settle replayed the held records: the next batch notes it
    exporter.pipeline.ingest_values(refusals[:1], stats)
    return exporter


@pytest.fixture
async def client(aiohttp_client):
    async def factory(exporter: Exporter):
        server = TestServer(make_app(exporter))
        await server.start_server(auto_decompress=False)
        return await aiohttp_client(server)

    return factory


async def test_streams_show_drift_with_evidence(client):
    api = await client(drifted_exporter())
    document = await (await api.get("/api/v1/streams")).json()
    stream = document["streams"][0]
    refusal = stream["signals"]["refusal"]
    assert refusal["baseline_ready"] and refusal["baseline_ready_at"] == 100
    assert refusal["drift_detected"] and refusal["score"] >= 1
    assert refusal["direction"] == "up"
    assert refusal["events"][0]["record"] >= 150
    assert refusal["change"]["rate"]["baseline"] == 0.0
    assert refusal["change"]["rate"]["window"] == 1.0
    examples = refusal["examples"]
    assert examples["shows"] == "refusals"
    assert [e["text"] for e in examples["window"]] == [
        "I'm sorry, but I can't help with that request."] * 3
    assert all(e["reason"] == "phrase" and e["record"] >= 150 for e in examples["window"])
    assert examples["baseline"][0] == {"text": "Your invoice is attached."}
    # the event keeps the examples it fired with
    assert refusal["events"][0]["examples"]["window"][0]["text"].startswith("I'm sorry")
    embedding = stream["signals"]["embedding"]
    assert embedding["drift_detected"]
    moved = {f["feature"]: f for f in embedding["moved_features"]}
    assert moved["invoice"]["baseline_share"] == 1.0 and moved["invoice"]["window_share"] == 0.0
    assert moved["help"]["window_share"] == 1.0
    page = await (await api.get("/")).text()
    assert "DRIFT" in page and "What changed" in page and "I&#x27;m sorry" in page
    assert "latest refusals" in page and "(reason phrase)" in page


async def test_metrics_expose_drift_state(client):
    api = await client(drifted_exporter())
    text = await (await api.get("/metrics")).text()
    labels = 'model="gpt-4o",route="/chat",signal="refusal"'
    assert f"llm_drift_detected{{{labels}}} 1.0" in text
    assert f"llm_drift_events_total{{{labels}}} 1.0" in text
    assert f"llm_drift_baseline_ready{{{labels}}} 1.0" in text
    assert f'llm_signal_window{{{labels},stat="rate"}} 1.0' in text
    assert f'llm_signal_baseline{{{labels},stat="rate"}} 0.0' in text


async def test_baseline_reset_relearns_matching_streams(client):
    exporter = drifted_exporter()
    api = await client(exporter)
    response = await api.post("/api/v1/baseline/reset", json={"match": {"route": "/chat"}})
    assert response.status == 200
    body = await response.json()
    assert body["reset"] == [{"model": "gpt-4o", "route": "/chat"}]
    stream = next(iter(exporter.pipeline.streams))
    detectors = stream.detectors.detectors.values()
    assert not any(d.baseline_ready or d.drift_detected for d in detectors)
    nothing = await api.post("/api/v1/baseline/reset", json={"match": {"route": "/other"}})
    assert (await nothing.json())["reset"] == []


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"match": "x"}', b'{"match": {"nope": "x"}}',
     b'{"match": {"route": "/chat"}, "signals": ["vibes"]}'],
)
async def test_baseline_reset_rejects_bad_requests(client, body):
    api = await client(drifted_exporter())
    response = await api.post("/api/v1/baseline/reset", data=body)
    assert response.status == 400
    assert "error" in await response.json()


async def test_evidence_can_be_switched_off(client):
    exporter = Exporter(parse_config({**CONFIG, "evidence": {"enabled": False}}))
    stats = InputStats("t", "test")
    exporter.pipeline.ingest_values(
        [samples.chat(text="Fine.") for _ in range(150)]
        + [samples.chat(text="I cannot assist with that.") for _ in range(150)], stats)
    exporter.pipeline.settle(wait=True)
    api = await client(exporter)
    refusal = (await (await api.get("/api/v1/streams")).json())["streams"][0]["signals"]["refusal"]
    assert refusal["drift_detected"] and "examples" not in refusal


def calibrating_exporter() -> Exporter:
    """Baselines complete, their thresholds simulated off-thread and finished, not yet
    taken in: no record has come since."""
    exporter = Exporter(parse_config(CONFIG))
    exporter.pipeline.ingest_values([samples.chat(text="Fine.") for _ in range(120)],
                                    InputStats("t", "test"))
    assert exporter.calibration is not None
    exporter.calibration.submit(lambda: None).result()  # queued after the simulations
    assert exporter.pipeline.calibrating()
    return exporter


def detector_snapshots(exporter: Exporter) -> list[dict]:
    return [{signal: plain(detector.snapshot()) for signal, detector in stream.detectors.items()}
            for stream in (s.detectors for s in exporter.pipeline.streams) if stream]


async def test_reads_never_advance_the_detectors(client):
    """Scrapes, the streams API and the landing page only read: a finished calibration is
    taken in on the ingest side, not by whoever looks first."""
    exporter = calibrating_exporter()
    before = detector_snapshots(exporter)
    api = await client(exporter)
    for path in ("/metrics", "/api/v1/streams", "/"):
        assert (await api.get(path)).status == 200
    assert detector_snapshots(exporter) == before
    assert exporter.pipeline.calibrating()
    exporter.pipeline.settle(wait=False)  # what the ingest side's tick does
    assert not exporter.pipeline.calibrating()
    stream = next(iter(exporter.pipeline.streams))
    assert stream.detectors is not None and stream.detectors.ready_at["refusal"] == 100


async def test_a_quiet_stream_turns_ready_on_the_settle_tick(monkeypatch):
    monkeypatch.setattr(service, "SETTLE_INTERVAL", 0.01)
    exporter = calibrating_exporter()
    tick = asyncio.create_task(exporter._settle_loop())
    try:
        for _ in range(300):
            await asyncio.sleep(0.01)
            if not exporter.pipeline.calibrating():
                break
    finally:
        tick.cancel()
    assert not exporter.pipeline.calibrating()
