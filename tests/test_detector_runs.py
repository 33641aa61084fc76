"""Runs (`Detector.update_run`, `StreamDetectors.update_many`) against one `update` at a time.

Ingestion hands each stream its records of a read chunk together; how a chunk happens to be
cut (file reads, worker shards, push sizes) must never change a score, an event or where it
is logged. So the batched paths are compared with the one-at-a-time path for exact equality,
over shifts that raise and end drift episodes, cut into runs of random lengths.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from exporter.detectors import DetectorFactory
from exporter.signals.measure import Measurements
from exporter.streams.evidence import Evidence, EvidenceSettings
from exporter.streams.stream_detectors import StreamDetectors, signal_value
from tests.test_detectors import CASES


def episodes(name: str, seed: int) -> list:
    """Stationary, shifted, stationary again, shifted again: events start and end."""
    _, stationary, shifted = CASES[name]
    rng = np.random.default_rng(seed)
    return stationary(rng, 900) + shifted(rng, 500) + stationary(rng, 1500) + shifted(rng, 400)


def in_runs(detector, values: list, seed: int) -> None:
    cuts = random.Random(seed)
    position = 0
    while position < len(values):
        end = min(len(values), position + cuts.choice((1, 2, 7, 64, 300)))
        while position < end:
            taken = detector.update_run(values[:end], position)
            assert position < taken <= end
            position = taken


# KSWIN samples its window at random, unseeded: two instances differ whatever their input
@pytest.mark.parametrize("name", sorted(set(CASES) - {"river_kswin"}))
@pytest.mark.parametrize("seed", [1, 2])
def test_a_run_gives_what_one_update_at_a_time_gives(name: str, seed: int) -> None:
    make, _, _ = CASES[name]
    values = episodes(name, seed)
    alone, batched = make(), make()
    for x in values:
        alone.update(x)
    in_runs(batched, values, seed)
    assert alone.events >= 1 or name.startswith("river")
    assert batched.snapshot() == alone.snapshot()
    assert batched.summary() == alone.summary()


@pytest.mark.parametrize("name", ["rank_cusum", "bernoulli_cusum", "embedding_mmd"])
def test_a_live_run_ends_early_only_at_a_change_of_drift_level(name: str) -> None:
    make, _, _ = CASES[name]
    values = episodes(name, 3)
    detector = make()
    position, changes = 0, 0
    while position < len(values):
        live, before = detector.baseline_ready, detector.drift_detected
        position = detector.update_run(values, position)
        if live and position < len(values):
            assert detector.drift_detected != before
            changes += 1
    assert changes >= 1


def measurements(seed: int, bad_at: int | None = None) -> list[Measurements]:
    rng = np.random.default_rng(seed)
    tokens = CASES["rank_cusum"][1](rng, 900) + CASES["rank_cusum"][2](rng, 600)
    vectors = CASES["embedding_mmd"][1](rng, 900) + CASES["embedding_mmd"][2](rng, 600)
    refusals = CASES["bernoulli_cusum"][1](rng, 900) + CASES["bernoulli_cusum"][2](rng, 600)
    batch = []
    for index, (count, vector, refused) in enumerate(zip(tokens, vectors, refusals, strict=True)):
        if index == bad_at:
            vector = np.zeros(3)  # another dimension: this stream's detector refuses it
        batch.append(Measurements(
            output_tokens=int(count), token_method="usage", encoding="none",
            input_tokens=None, reasoning_tokens=None,
            refusal="phrase" if refused else None,
            format_checked=index % 3 == 0, format_invalid="json" if index % 7 == 0 else None,
            embedding=vector if index % 5 else None, embedding_source="user",
        ))
    return batch


@pytest.mark.parametrize("bad_at", [None, 1201])
def test_a_streams_batch_logs_what_one_record_at_a_time_logs(bad_at: int | None) -> None:
    factory = DetectorFactory.from_config({"baseline_size": 200, "window_size": 50,
                                           "expected_run_time": 5000})
    batch = measurements(4, bad_at)
    alone, batched = StreamDetectors.create(factory), StreamDetectors.create(factory)
    for index, m in enumerate(batch):  # each detector's own `update`, record by record
        alone.records += 1
        for signal, detector in alone.detectors.items():
            alone._update_one(signal, detector, signal_value(signal, m), index)
    cuts = random.Random(4)
    position = 0
    while position < len(batch):
        size = cuts.choice((1, 5, 100, 400))
        batched.update_many(batch[position:position + size])
        position += size
    assert alone.events and any(alone.events.values())
    assert batched.snapshot() == alone.snapshot()
    assert batched.errors == alone.errors == ({"embedding": 1} if bad_at else {})


@pytest.mark.parametrize("texts_kept", [0, 3, 20])
def test_evidence_of_a_batch_is_what_one_text_at_a_time_keeps(texts_kept: int) -> None:
    settings = EvidenceSettings.from_config({"texts": texts_kept, "max_chars": 12})
    texts = [f"reply number {i} " * (i % 4) for i in range(300)]
    alone, batched = Evidence(settings, baseline_size=40), Evidence(settings, baseline_size=40)
    for text in texts:
        alone.add(text)
    cuts = random.Random(texts_kept)
    position = 0
    while position < len(texts):
        size = cuts.choice((1, 2, 30, 100))
        batched.add_many(texts[position:position + size])
        position += size
    assert (batched.baseline, list(batched.window)) == (alone.baseline, list(alone.window))
    assert len(alone.window) == texts_kept
    assert list(alone.window)[-1:] == ["reply num..."][:texts_kept]


def test_rank_scores_of_a_few_values_and_of_a_run_are_the_same_floats() -> None:
    """Rank CUSUM ranks a short run in plain Python and a longer one in numpy (same draws)."""
    make, stationary, _ = CASES["rank_cusum"]
    detector = make()
    rng = np.random.default_rng(8)
    for x in stationary(rng, 200):  # integer-valued: ties with the baseline
        detector.update(x)
    assert detector.baseline_ready
    values = [*stationary(rng, 300), -1.0, 0.0, 1e9, *detector.summary()["baseline"].values()]
    in_numpy = detector.normal_scores(values)
    first = detector._draws + 1
    alone = [detector._normal_score(x, draw) for draw, x in enumerate(values, first)]
    assert in_numpy == alone
