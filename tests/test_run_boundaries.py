"""How a stream's values are cut into runs never changes a result.

Ingestion hands each stream its records of a read chunk together, and a detector takes
them a run at a time (`Detector.update_run`; `update` is a run of one). How a chunk happens
to be cut (file reads, worker shards, push sizes) must never change a score, an event or
where it is logged: results with runs of random lengths are compared with runs of one, over
shifts that raise and end drift episodes. Rank CUSUM's ranks and tie-breaking draws are
checked against a plain per-value reference.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right

import numpy as np
import pytest
from scipy.special import ndtri

from exporter.config import EvidenceConfig
from exporter.detectors import DetectorFactory
from exporter.detectors.base import DetectorSettings
from exporter.detectors.calibration import CalibrationCache
from exporter.detectors.embedding_mmd import EmbeddingMmd
from exporter.detectors.rank_cusum import RankCusum
from exporter.records.record import Record
from exporter.signals.measure import Measurements
from exporter.streams.evidence import Evidence
from exporter.streams.stream_detectors import StreamDetectors
from tests.detector_cases import CASES, SETTINGS, episodes
from tests.state_helpers import plain

FACTORY = DetectorFactory.from_config({"baseline_size": 200, "window_size": 50,
                                       "expected_run_time": 5000})


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
def test_runs_of_any_length_give_what_runs_of_one_give(name: str, seed: int) -> None:
    make, _, _ = CASES[name]
    values = episodes(name, seed)
    alone, batched = make(), make()
    for x in values:
        alone.update(x)
    in_runs(batched, values, seed)
    assert alone.events >= 1 or name.startswith("river")
    assert plain(batched.snapshot()) == plain(alone.snapshot())
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


def _uniform(seed: int, draw: int) -> float:
    """splitmix64 of the draw counter, in Python integers: the reference."""
    mask = (1 << 64) - 1
    z = ((seed + draw) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (((z ^ (z >> 31)) >> 11) + 0.5) / 9007199254740992.0


def reference_normal_scores(ordered: list[float], seed: int, first_draw: int,
                            values: list[float]) -> list[float]:
    """Phi^-1 of each value's randomized rank against the sorted baseline, one at a time:
    ties with the baseline broken by the value's own draw."""
    scores = []
    for draw, x in enumerate(values, first_draw):
        below = bisect_left(ordered, x)
        ties = bisect_right(ordered, x) - below
        u = (below + _uniform(seed, draw) * (ties + 1)) / (len(ordered) + 1)
        scores.append(float(ndtri(u)))
    return scores


def test_rank_scores_are_the_plain_references_for_runs_of_every_length() -> None:
    """One value (numpy scalars), short runs (a block of draws computed ahead, crossed and
    drawn again) and long runs (numpy arrays) all give the reference's floats."""
    make, stationary, _ = CASES["rank_cusum"]
    detector = make()
    rng = np.random.default_rng(8)
    for x in stationary(rng, 200):  # integer-valued: ties with the baseline
        detector.update(x)
    assert detector.baseline_ready
    ordered = sorted(plain(detector._snapshot_state())["sorted"][0])
    values = [*stationary(rng, 300), -1.0, 0.0, 1e9, *detector.summary()["baseline"].values()]
    cuts, position = random.Random(8), 0
    while position < len(values):
        run = values[position:position + cuts.choice((1, 1, 2, 3, 20, 33, 100))]
        first = detector._draws + 1
        assert detector.normal_scores(run) == reference_normal_scores(
            ordered, detector.settings.seed, first, run)
        used = cuts.randint(1, len(run))  # a run may end early: the rest are drawn again
        detector._draws += used
        position += used


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
def test_a_streams_batches_log_what_one_record_at_a_time_logs(bad_at: int | None) -> None:
    """Events at stream record indexes (signals that skip records included), readiness,
    last changes and errors do not depend on how the stream's records were batched."""
    batch = measurements(4, bad_at)
    alone, batched = StreamDetectors.create(FACTORY), StreamDetectors.create(FACTORY)
    for m in batch:
        alone.update_many([m])
    cuts = random.Random(4)
    position = 0
    while position < len(batch):
        size = cuts.choice((1, 5, 100, 400))
        batched.update_many(batch[position:position + size])
        position += size
    assert alone.events and any(alone.events.values())
    assert plain(batched.snapshot()) == plain(alone.snapshot())
    assert batched.errors == alone.errors == ({"embedding": 1} if bad_at else {})


def test_events_of_a_signal_that_skips_records_carry_stream_indexes() -> None:
    """format_validity sees every third record: its events are logged with the index of
    the record in the stream, which the detector's own observation count is not."""
    stream = StreamDetectors.create(FACTORY)
    batch = measurements(4)
    for index, m in enumerate(batch):  # invalid: 1 in 7 checked replies, then 1 in 2
        m.format_invalid = "json" if index % (21 if index < 900 else 6) == 0 else None
    stream.update_many(batch)
    detector = stream.detectors["format_validity"]
    events = stream.events["format_validity"]
    assert events and detector.events == len(events)
    assert all(event["record"] % 3 == 0 for event in events)  # a record it was fed
    assert events[-1]["record"] > detector.observations
    assert stream.ready_at["format_validity"] == 3 * (200 - 1) + 1


@pytest.mark.parametrize("texts_kept", [0, 3, 20])
def test_evidence_of_a_batch_is_what_one_record_at_a_time_keeps(texts_kept: int) -> None:
    settings = EvidenceConfig(texts=texts_kept, max_chars=12)
    batch = measurements(5)[:300]
    records = [Record(shape="openai_chat", output_text=f"reply number {i} " * (i % 4))
               for i in range(300)]
    lengths = CASES["rank_cusum"][0]()  # its baseline's p5 and p95 pick the length carriers
    for m in batch:
        lengths.update(float(m.output_tokens))
    alone, batched = Evidence(settings, baseline_size=40), Evidence(settings, baseline_size=40)
    for i in range(len(records)):
        alone.add_many(records[i : i + 1], batch[i : i + 1], i, lengths)
    cuts = random.Random(texts_kept)
    position = 0
    while position < len(records):
        size = cuts.choice((1, 2, 30, 100))
        end = position + size
        batched.add_many(records[position:end], batch[position:end], position, lengths)
        position = end

    def kept(evidence: Evidence) -> tuple:
        rings = {name: [e.as_dict() for e in ring] for name, ring in evidence.rings.items()}
        return evidence.baseline, list(evidence.window), rings

    assert kept(batched) == kept(alone)
    assert len(alone.window) == texts_kept
    assert list(alone.window)[-1:] == ["reply num..."][:texts_kept]
    assert all(len(ring) == 3 for ring in alone.rings.values())  # the latest 3 carriers each


def _first_episode_end(values: list) -> int:
    """Index of the value whose `update` ends the first drift episode."""
    detector = EmbeddingMmd(SETTINGS)
    for index, x in enumerate(values):
        was = detector.drift_detected
        detector.update(x)
        if was and not detector.drift_detected:
            return index
    raise AssertionError("no drift episode ended")


def _embedding_only(vector: np.ndarray) -> Measurements:
    return Measurements(10, "usage", "none", None, None, None, False, None, vector, "user")


def test_mmd_episode_ending_on_the_last_value_of_a_run_rearms() -> None:
    """The end of an episode on a run's last value re-arms the EWMA (it once kept the
    run's last EWMA instead)."""
    values = episodes("embedding_mmd", 1)
    end = _first_episode_end(values)
    alone, batched = EmbeddingMmd(SETTINGS), EmbeddingMmd(SETTINGS)
    for x in values[: end + 1]:
        alone.update(x)
    position = 0
    while position <= end:
        position = batched.update_run(values[: end + 1], position)
    assert not batched.drift_detected
    assert plain(batched.snapshot()) == plain(alone.snapshot())
    assert batched.summary() == alone.summary()  # window mmd2 is 0.0 right after re-arming


def test_one_record_at_a_time_through_a_stream_gives_the_detectors_scores() -> None:
    """A one-record batch (a one-record push, a quiet stream) is a run of one value: every
    episode end is on a run's last value."""
    factory = DetectorFactory.from_config(
        {"baseline_size": SETTINGS.baseline_size, "window_size": SETTINGS.window_size,
         "expected_run_time": SETTINGS.expected_run_time}
    )
    values = episodes("embedding_mmd", 1)
    end = _first_episode_end(values)
    reference = EmbeddingMmd(SETTINGS)
    stream = StreamDetectors.create(factory)
    for x in values[: end + 20]:
        reference.update(x)
        stream.update_many([_embedding_only(x)])
        assert stream.detectors["embedding"].score == reference.score


def test_a_batch_of_refused_embeddings_is_not_restacked_per_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a stream's embedding dimension changes (a new embedding model) every vector is
    refused: each must cost itself, not a re-read of the rest of the batch (which made a
    batch quadratic: 2,000 records of 3,072 floats took 11 s)."""
    count = 300
    stream = StreamDetectors.create(FACTORY)
    rng = np.random.default_rng(0)
    for vector in rng.normal(size=(250, 16)):
        stream.update_many([_embedding_only(vector)])
    assert stream.detectors["embedding"].baseline_ready
    observed = stream.detectors["embedding"].observations
    stacked = []
    original = EmbeddingMmd._vectors

    def counting(self: EmbeddingMmd, xs: list, start: int) -> np.ndarray:
        try:
            rows = original(self, xs, start)
        except ValueError:
            stacked.append(1)  # refused at the first vector it read
            raise
        stacked.append(len(rows))
        return rows

    monkeypatch.setattr(EmbeddingMmd, "_vectors", counting)
    stream.update_many([_embedding_only(v) for v in rng.normal(size=(count, 32))])
    assert stream.errors["embedding"] == count
    assert stream.detectors["embedding"].observations == observed + count  # each counted
    assert sum(stacked) <= 4 * count, f"{sum(stacked)} vectors stacked for {count} records"


def test_a_state_with_an_empty_sorted_baseline_still_restores() -> None:
    """A hand-made or corrupt state with an empty learned baseline restores, as it did
    before the baseline became an array (a ZeroDivisionError would escape the state load)."""
    saved = RankCusum(DetectorSettings(), CalibrationCache()).snapshot()
    saved["state"]["sorted"], saved["state"]["threshold"] = [], 5.0
    restored = RankCusum(DetectorSettings(), CalibrationCache())
    restored.restore(saved)
    restored.update(3.0)
    assert restored.baseline_ready and "baseline" not in restored.summary()
