"""Seasonal and rolling baselines keep per-phase references that must survive what a
running exporter does to a stream's state: checkpoints (plain snapshots, and the SQLite
store's incremental parts), restarts, any batching of the records, and a baseline reset.

A restored stream must go on *exactly* as the original (events, scores, the phase table,
what it says it compares with), whatever the cut points; the phase table of a week of
hours must stay small; the saved settings of a fixed baseline must be those of the
versions before seasonal baselines (their states restore), and a change of mode must
re-learn. The streams cycle by the time of day (`benchmarks/seasonal_streams.py`), their
day squeezed into an hour so that a few periods take a few hundred records."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.detectors.factory import DetectorFactory
from exporter.detectors.seasonal import EMPTY
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore
from exporter.streams.stream_detectors import StreamDetectors
from exporter.streams.table import StreamState
from exporter.streams.view import signal_view
from tests.state_helpers import snapshots
from tests.test_state_store import check_tables, keyed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from tests.seasonal_helpers import (
    CACHE,
    PHASED,
    ROLLING,
    SEASONAL,
    factory,
    feed,
    index_at,
    ingest,
    one_go,
    restored_from,
    seasons_parts,
    section,
    state_of,
    store_pipeline,
    stored,
    stream,
)


def test_the_stream_exercises_what_the_other_tests_rely_on() -> None:
    """A guard on the data, not on the product: fed in one go, the cyclic stream learns,
    leaves a first period uncompared, compares afterwards, has late and misdated records
    and raises events; otherwise the restore and batching tests below would prove little."""
    state = one_go("seasonal")
    assert state["errors"] == {}
    for signal in PHASED:
        described = state["described"][signal]
        assert described["late_records"] > 0, described
        assert described["misdated_records"] > 0, described
        assert described["uncompared_records"] > 0, described
        assert "compared_with" in described, described
    assert state["snapshot"]["events"].get("output_tokens"), state["snapshot"]["events"]


# --- snapshot and restore -------------------------------------------------------------
@pytest.mark.parametrize("at", [
    60.0,  # learning the baselines
    600.0,  # the first period: summarised, not compared
    1800.0 + 30.0,  # just into the second period: rebased on the first one's phase
    1800.0 + 900.0 + 200.0,  # the second period's other phase, a few minutes in
    3600.0 + 900.0 + 100.0,  # the third period, after the change
], ids=["learning", "first-period", "second-period-start", "second-period-night",
        "after-the-change"])
@pytest.mark.parametrize("how", ["plain", "stored"])
def test_a_restored_stream_goes_on_exactly_as_the_original(at: float, how: str) -> None:
    """Snapshot at `at`, restore into fresh detectors (directly, or through the store's
    encoding), then feed both the rest: the same events, scores, observations, phase
    table, current summary and description at every step."""
    made = factory()
    original = StreamDetectors.create(made)
    cut = index_at(at)
    feed(original, 0, cut)
    saved = original.snapshot() if how == "plain" else stored(original)
    back = restored_from(saved, made)
    assert state_of(back) == state_of(original)
    end = len(stream()[0])
    for low in range(cut, end, 97):  # the same batches for both
        feed(original, low, min(end, low + 97))
        feed(back, low, min(end, low + 97))
        assert state_of(back) == state_of(original), low
    for signal in PHASED:
        ours, theirs = original.detectors[signal], back.detectors[signal]
        assert ours.seasons is not None and theirs.seasons is not None
        assert len(theirs.seasons.table) == 2
        for mine, other in zip(ours.seasons.table, theirs.seasons.table, strict=True):
            assert mine.dtype == other.dtype == np.float32
            assert np.array_equal(mine, other)
        assert theirs.event_log == ours.event_log and theirs.score == ours.score
    assert state_of(back)["snapshot"]["events"] == one_go("seasonal")["snapshot"]["events"]


def test_a_snapshot_of_the_other_mode_restores_without_failing() -> None:
    """A snapshot saved with a seasonal baseline restored by a fixed-baseline factory (or
    the reverse) must not fail: a detector without seasons ignores them, one with seasons
    starts its table anew (not ready until a period has passed). The store never gets
    here (a change of settings re-learns, see the settings tests); a caller of
    `StreamDetectors.restore` might."""
    seasonal = StreamDetectors.create(factory())
    feed(seasonal, 0, index_at(1800.0 + 60.0))
    fixed = factory({"mode": "fixed"})
    back = restored_from(seasonal.snapshot(), fixed)
    assert all(d.seasons is None for d in back.detectors.values())
    assert back.detectors["output_tokens"].baseline_ready
    plain_fixed = StreamDetectors.create(fixed)
    feed(plain_fixed, 0, 40)
    into_seasonal = restored_from(plain_fixed.snapshot(), factory())
    detector = into_seasonal.detectors["output_tokens"]
    assert detector.seasons is not None
    assert all(row is EMPTY for row in detector.seasons.table)
    assert detector.baseline_ready and not detector.reference_ready


# --- through the SQLite store, as the service saves --------------------------------------
def test_seasonal_state_through_the_store_is_incremental_and_restores_exactly(
        tmp_path: Path) -> None:
    """The service's path: checkpoints of a pipeline into the SQLite store. A checkpoint
    within a phase writes no row of the phase table, only what the current phase's values
    grew by; one across a phase boundary writes exactly the row of the phase that closed,
    and the current phase's values anew. Restored from the file by a fresh store, the
    stream is the same and goes on the same, through a change and its events."""
    pipeline = store_pipeline()
    store = StateStore(tmp_path)
    ingest(pipeline, 0, 350)  # two periods' phases 0, 1, 0, half of 1 (records 300-349)
    whole = store.checkpoint(pipeline, {"in": 1})
    assert whole.replace_all
    assert set(seasons_parts(whole)) >= {f"{s}.seasons.table" for s in PHASED}
    assert "output_tokens.seasons.values" in seasons_parts(whole)
    assert store.commit(whole)
    check_tables(tmp_path, pipeline)

    ingest(pipeline, 350, 380)  # the same phase
    within = seasons_parts(_commit(store, pipeline, 2))
    assert not any(part.endswith(".table") for part in within), sorted(within)
    grown = within["output_tokens.seasons.values"]
    assert grown.length == 2 and not grown.shrunk  # 80 values: two blocks of 64
    assert set(grown.slots) == {0, 1}  # the partial block again, and the new one
    check_tables(tmp_path, pipeline)

    ingest(pipeline, 380, 450)  # into the next phase (boundary at record 400)
    across = seasons_parts(_commit(store, pipeline, 3))
    for signal in PHASED:  # phase 1 (records 300-399) closed: its row, and only it
        table = across[f"{signal}.seasons.table"]
        assert table.length == 2 and set(table.slots) == {1}, (signal, table)
    values = across["output_tokens.seasons.values"]
    assert values.length == 1 and values.shrunk and set(values.slots) == {0}  # a new phase
    check_tables(tmp_path, pipeline)
    store.close()

    reader = StateStore(tmp_path)
    back = store_pipeline()
    positions, entries = reader.open(back)
    assert positions == {"in": 3}
    assert reader.restore(back, entries) == 1 and reader.load_failures == 0
    assert keyed(snapshots(back)) == keyed(snapshots(pipeline))
    ingest(pipeline, 450, 800, change_from=600)
    ingest(back, 450, 800, change_from=600)
    assert keyed(snapshots(back)) == keyed(snapshots(pipeline))
    ours = next(iter(pipeline.streams)).detectors
    theirs = next(iter(back.streams)).detectors
    assert ours is not None and theirs is not None
    assert state_of(theirs) == state_of(ours)
    assert ours.events.get("output_tokens"), "the change must raise an event to compare"
    reader.close()


def _commit(store: StateStore, pipeline: Pipeline, positions: int) -> Any:
    """Make and commit a checkpoint; the checkpoint."""
    changes = store.checkpoint(pipeline, {"in": positions})
    assert not changes.replace_all
    assert store.commit(changes)
    return changes


# --- any batching, any restore points ----------------------------------------------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(["seasonal", "rolling"]),
       steps=st.lists(st.tuples(st.integers(1, 160), st.sampled_from(["-", "plain", "stored"])),
                      max_size=10))
def test_any_batching_and_restores_give_the_state_of_one_go(
        mode: str, steps: list[tuple[int, str]]) -> None:
    """However the records are cut into `update_many` batches (a phase boundary or a late
    record anywhere in or at the edge of a batch), and wherever the stream is saved and
    restored (plainly or through the store's encoding), the end state is the one of
    feeding the whole stream at once."""
    made = factory(SEASONAL if mode == "seasonal" else ROLLING)
    detectors = StreamDetectors.create(made)
    end, at = len(stream()[0]), 0
    for size, restore in steps:
        feed(detectors, at, min(end, at + size))
        at = min(end, at + size)
        if restore == "plain":
            detectors = restored_from(detectors.snapshot(), made)
        elif restore == "stored":
            detectors = restored_from(stored(detectors), made)
    feed(detectors, at, end)
    assert state_of(detectors) == one_go(mode)


# --- reset ------------------------------------------------------------------------------
def test_a_reset_forgets_the_phase_table_and_says_why_it_is_not_ready() -> None:
    """`reset_baseline` (the API's baseline reset) on a seasonal stream forgets every
    phase's reference with the fixed baseline: it is not ready and says it is learning;
    once the baseline is learned again, the rest of that period and the next period's
    phases not seen since the reset are still not compared (their references are gone,
    with a reason), and a phase seen since compares again."""
    made = DetectorFactory.from_config({**section(SEASONAL), "refusal": {"min_events": 0}})
    made.cache = CACHE  # (refusal baselines of 20 records, as the others')
    detectors = StreamDetectors.create(made)
    state = StreamState(labels=("s",), detectors=detectors)

    def views() -> dict[str, dict[str, Any]]:
        out = {}
        for signal in PHASED:
            view = signal_view(state, signal, with_evidence=False)
            assert view is not None
            out[signal] = view
        return out

    marks = [index_at(seconds) for seconds in (2700.0 - 30.0, 3600.0 - 30.0, 4500.0 - 30.0,
                                               4500.0 + 120.0)]
    feed(detectors, 0, marks[0])  # the second period's first phase: comparing
    assert all(view["baseline_ready"] for view in views().values()), views()

    assert sorted(state.reset_baselines()) == sorted(detectors.detectors)
    for signal, view in views().items():
        seasons = detectors.detectors[signal].seasons
        assert seasons is not None
        assert all(row is EMPTY for row in seasons.table) and list(seasons.taken) == [-1, -1]
        assert seasons.bin is None and seasons.summary is None
        assert view["baseline_ready"] is False
        assert view["baseline"]["reason"] == "learning the baseline's features and threshold"
        assert "compared_with" not in view["baseline"]

    feed(detectors, marks[0], marks[1])  # learned again; the rest of the period
    for signal, view in views().items():
        assert detectors.detectors[signal].baseline_ready
        assert view["baseline_ready"] is False, view
        assert view["baseline"]["reason"].startswith("no reference yet for 00:45-01:00 UTC")
    feed(detectors, marks[1], marks[2])  # a phase last seen before the reset
    for view in views().values():
        assert view["baseline_ready"] is False, view
        assert view["baseline"]["reason"].startswith("no reference yet for 01:00-01:15 UTC")
    feed(detectors, marks[2], marks[3])  # a phase seen since the reset
    for view in views().values():
        assert view["baseline_ready"] is True, view
        assert view["baseline"]["compared_with"].startswith("00:45-01:00 UTC on 1970-01-01")


# --- a checkpoint taken while a rebase's threshold is simulated ----------------------------
class Gate:
    """A one-thread calibration executor held shut until `open` (as test_state_store's)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, "gated-rebase")
        self.event = threading.Event()
        self.executor.submit(self.event.wait)

    def open(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.event.set()
        self.executor.shutdown(wait=True)


def test_a_checkpoint_during_a_rebase_restores_the_phase_reference() -> None:
    """The service simulates thresholds on a thread: entering a phase, a detector holds
    its records until the rebase's threshold is in. A checkpoint taken then and restored
    must give the detector rebased on that phase's reference, as the original ends up."""
    made = factory()
    learned = StreamDetectors.create(made)
    cut = index_at(1800.0 + 900.0 - 10.0)  # the second period, just before its night phase
    feed(learned, 0, cut)
    gate = Gate()
    try:
        gated = factory()
        gated.executor = gate.executor
        live = restored_from(learned.snapshot(), gated)
        feed(live, cut, cut + 30)  # into the night phase: rebased, its threshold pending
        assert live.calibrating() >= 2  # output_tokens and refusal wait for theirs
        saved = stored(live)  # (encoded at once, as a checkpoint is: live goes on below)
        gate.open()
        live.settle(wait=True)
        for detector in live.detectors.values():
            detector.executor = None
        back = restored_from(saved, made)
        back.settle(wait=True)
        assert state_of(back) == state_of(live)
    finally:
        gate.close()
