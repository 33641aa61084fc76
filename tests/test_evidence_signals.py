"""Per-signal evidence: a drifted signal's window examples are the records that carry its change."""

from __future__ import annotations

import random
from typing import Any

import orjson

from exporter.cli import main
from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.replay import build_report
from exporter.streams.evidence import EVENT_EXAMPLES, Evidence
from exporter.streams.pipeline import Pipeline
from exporter.streams.view import streams_view
from tests import samples
from tests.state_helpers import plain

CONFIG: dict[str, Any] = {
    "inputs": [{"type": "http"}],
    "signals": {"format_validity": [{"match": {"route": "/extract"}, "expect": "json"}]},
    "detectors": {"baseline_size": 200, "window_size": 50, "expected_run_time": 2000},
}
WORDS = {
    "billing": "invoice refund charge payment card receipt billing account balance credit".split(),
    "outage": "outage latency region failover incident degraded status restore cluster".split(),
}
REFUSAL = "I'm sorry, but I can't help with that request."


def reply(text: str, route: str = "/chat", tokens: int | None = None) -> dict[str, Any]:
    body = samples.chat(route=route, text=text)
    body["response"]["usage"]["completion_tokens"] = tokens or max(1, len(text.split()))
    return body


def prose(rng: random.Random, topic: str = "billing", words: int = 30) -> str:
    return " ".join(rng.choice(WORDS[topic]) for _ in range(words)).capitalize() + "."


def document(rng: random.Random) -> str:
    return orjson.dumps({"customer": rng.choice("ABCD"), "id": rng.randint(1000, 9999)}).decode()


def pipeline_fed(bodies: list[dict[str, Any]], config: dict[str, Any] = CONFIG) -> Pipeline:
    pipeline = Pipeline(parse_config(config))
    stats = InputStats("t", "test")
    for start in range(0, len(bodies), 37):  # batches of several records, as inputs send them
        pipeline.ingest_values(bodies[start : start + 37], stats)
    return pipeline


def signal(pipeline: Pipeline, name: str) -> dict[str, Any]:
    (view,) = streams_view(pipeline.streams)
    return view["signals"][name]


def is_json_document(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict | list)
    except orjson.JSONDecodeError:
        return False


def test_format_drift_shows_invalid_replies_with_their_reason():
    rng = random.Random(1)
    bodies = [reply(document(rng), "/extract") for _ in range(300)]
    bodies += [reply("Here is the data: " + document(rng) if rng.random() < 0.3 else document(rng),
                     "/extract") for _ in range(400)]
    view = signal(pipeline_fed(bodies), "format_validity")
    assert view["drift_detected"]
    examples = view["examples"]
    assert examples["shows"] == "invalid" and len(examples["window"]) == 3
    for example in examples["window"]:
        assert not is_json_document(example["text"]) and example["reason"] == "not_json"
        assert example["record"] >= 300
    assert all(is_json_document(e["text"]) for e in examples["baseline"])
    records = [e["record"] for e in examples["window"]]
    assert records == sorted(records, reverse=True)  # newest first


def test_refusal_drift_shows_refusals_and_how_they_were_found():
    rng = random.Random(2)
    bodies = [reply(prose(rng)) for _ in range(300)]
    bodies += [reply(REFUSAL if rng.random() < 0.25 else prose(rng)) for _ in range(300)]
    structured = reply("")
    structured["response"]["choices"][0]["message"].update(content=None, refusal="Declined.")
    bodies.append(structured)
    view = signal(pipeline_fed(bodies), "refusal")
    assert view["drift_detected"] and view["examples"]["shows"] == "refusals"
    window = view["examples"]["window"]
    assert window[0] == {"text": "Declined.", "record": 600, "reason": "structured"}
    assert [(e["text"], e["reason"]) for e in window[1:]] == [(REFUSAL, "phrase")] * 2


def lengths_pipeline(changed: int) -> tuple[Pipeline, list[int]]:
    rng = random.Random(3)
    baseline = [int(rng.gauss(100, 8)) for _ in range(300)]
    bodies = [reply(prose(rng, words=n), tokens=n) for n in baseline]
    for _ in range(300):
        n = changed if rng.random() < 0.4 else int(rng.gauss(100, 8))
        bodies.append(reply(prose(rng, words=5) + f" ({n})", tokens=n))
    return pipeline_fed(bodies), baseline[:200]


def test_longer_replies_show_those_beyond_the_baselines_p95():
    pipeline, baseline = lengths_pipeline(changed=300)
    view = signal(pipeline, "output_tokens")
    assert view["drift_detected"] and view["direction"] == "up"
    assert view["examples"]["shows"] == "above_p95"
    assert [e["output_tokens"] for e in view["examples"]["window"]] == [300] * 3
    assert all(e["text"].endswith("(300)") for e in view["examples"]["window"])
    detector = next(iter(pipeline.streams)).detectors.detectors["output_tokens"]
    assert detector.baseline_quantile(0.95) < 300 and max(baseline) < 300


def test_shorter_replies_show_those_below_the_baselines_p5():
    view = signal(lengths_pipeline(changed=20)[0], "output_tokens")
    assert view["drift_detected"] and view["direction"] == "down"
    assert view["examples"]["shows"] == "below_p5"
    assert [e["output_tokens"] for e in view["examples"]["window"]] == [20] * 3


def test_embedding_drift_shows_the_replies_the_witness_finds_most_unlike_the_baseline():
    rng = random.Random(4)
    bodies = [reply(prose(rng)) for _ in range(300)]
    bodies += [reply(prose(rng, "outage" if rng.random() < 0.3 else "billing"))
               for _ in range(300)]
    pipeline = pipeline_fed(bodies)
    view = signal(pipeline, "embedding")
    assert view["drift_detected"] and view["examples"]["shows"] == "most_unlike_baseline"
    window = view["examples"]["window"]
    assert len(window) == 3
    outage = set(WORDS["outage"])
    for example in window:  # each is one of the ~30% outage replies among the latest 40
        assert set(example["text"].lower().rstrip(".").split()) <= outage
    witness = [e["witness"] for e in window]
    assert witness == sorted(witness, reverse=True) and witness[-1] > 0


def test_user_supplied_vectors_show_the_latest_replies_and_say_so():
    rng = random.Random(5)
    config = {**CONFIG, "signals": {"embedding": {"path": "vector"}}}
    bodies = []
    for i in range(600):
        body = reply(prose(rng))
        shift = 3.0 if i >= 300 else 0.0
        body["vector"] = [rng.gauss(shift, 1) for _ in range(8)]
        bodies.append(body)
    view = signal(pipeline_fed(bodies, config), "embedding")
    assert view["drift_detected"] and view["examples"]["shows"] == "latest"
    assert len(view["examples"]["window"]) == 3


def test_each_event_keeps_the_examples_it_fired_with():
    rng = random.Random(6)
    bodies = [reply(prose(rng)) for _ in range(300)]
    bodies += [reply(REFUSAL if rng.random() < 0.3 else prose(rng)) for _ in range(100)]
    pipeline = pipeline_fed(bodies)
    (event,) = signal(pipeline, "refusal")["events"]
    examples = event["examples"]
    assert examples["shows"] == "refusals" and len(examples["baseline"]) == 3
    # the records that raised the alarm: refusals logged at or before the event's batch
    assert all(e["text"] == REFUSAL and e["record"] < event["record"] + 37
               for e in examples["window"])


def evidence_state(evidence: Evidence) -> Any:
    return (list(evidence.baseline), list(evidence.window),
            {name: [e.as_dict() for e in ring] for name, ring in evidence.rings.items()},
            evidence.event_examples("refusal"), evidence.event_examples("embedding"))


def test_reading_views_changes_no_evidence():
    rng = random.Random(7)
    bodies = [reply(prose(rng)) for _ in range(300)]
    bodies += [reply(REFUSAL if rng.random() < 0.3 else prose(rng, "outage")) for _ in range(300)]
    pipeline = pipeline_fed(bodies)
    (stream,) = pipeline.streams
    assert stream.evidence is not None
    before = evidence_state(stream.evidence)
    detectors = {s: plain(d.snapshot()) for s, d in stream.detectors.detectors.items()}
    first = streams_view(pipeline.streams)
    assert first[0]["signals"]["embedding"]["examples"]["shows"] == "most_unlike_baseline"
    for _ in range(3):
        assert streams_view(pipeline.streams) == first
    build_report(pipeline, summary=_summary())
    assert evidence_state(stream.evidence) == before
    assert {s: plain(d.snapshot()) for s, d in stream.detectors.detectors.items()} == detectors


def _summary() -> Any:
    from exporter.replay import ReplaySummary

    return ReplaySummary(files=0, bytes_read=0, records=0, rejected=0, seconds=0.0)


def test_disabled_evidence_keeps_and_shows_nothing():
    rng = random.Random(8)
    bodies = [reply(prose(rng)) for _ in range(300)]
    bodies += [reply(REFUSAL if rng.random() < 0.3 else prose(rng)) for _ in range(300)]
    pipeline = pipeline_fed(bodies, {**CONFIG, "evidence": {"enabled": False}})
    (stream,) = pipeline.streams
    assert stream.evidence is None
    refusal = signal(pipeline, "refusal")
    assert refusal["drift_detected"] and refusal["events"]
    report = orjson.dumps(build_report(pipeline, _summary())).decode()
    assert "examples" not in report and "sorry" not in report


def test_rings_are_bounded_and_a_reset_empties_those_of_the_reset_signals():
    rng = random.Random(9)
    bodies = [reply(REFUSAL if rng.random() < 0.5 else document(rng), "/extract")
              for _ in range(2000)]
    pipeline = pipeline_fed(bodies)
    (stream,) = pipeline.streams
    evidence = stream.evidence
    assert evidence is not None
    assert all(len(ring) <= 3 for ring in evidence.rings.values())
    assert len(evidence.window) == 40 and len(evidence.baseline) == 40
    assert all(len(noted) <= EVENT_EXAMPLES for noted in evidence._events.values())
    stream.reset_baselines(("refusal",))
    assert not evidence.rings["refusal"] and evidence.baseline == []


def test_replay_report_has_the_examples_of_each_event_unless_evidence_is_off(tmp_path):
    rng = random.Random(10)
    log = tmp_path / "day.jsonl"
    lines = [reply(prose(rng)) for _ in range(300)]
    lines += [reply(REFUSAL if rng.random() < 0.3 else prose(rng)) for _ in range(200)]
    log.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    detectors = "detectors: {baseline_size: 200, window_size: 50, expected_run_time: 10000}\n"
    for evidence, shown in (("", True), ("evidence: {enabled: false}\n", False)):
        config, report = tmp_path / "c.yaml", tmp_path / "report.json"
        config.write_text(detectors + evidence)
        args = ["replay", "--config", str(config), "--report-json", str(report), str(log)]
        assert main(args) == 0
        document = orjson.loads(report.read_bytes())
        (event,) = document["streams"][0]["signals"]["refusal"]["events"]
        if shown:
            assert [e["text"] for e in event["examples"]["window"]] == [REFUSAL] * 3
        else:
            assert "examples" not in event and b"sorry" not in report.read_bytes()


def test_a_ring_fills_one_carrier_at_a_time_and_keeps_the_latest():
    pipeline = Pipeline(parse_config(CONFIG))
    stats = InputStats("t", "test")
    sizes = []
    for i in range(5):
        pipeline.ingest_values([reply("Fine."), reply(f"I cannot assist with that ({i}).")], stats)
        (stream,) = pipeline.streams
        sizes.append([e.record for e in stream.evidence.rings["refusal"]])
    assert sizes == [[1], [1, 3], [1, 3, 5], [3, 5, 7], [5, 7, 9]]
