"""Stream state as tests compare it: plain data, and the round trip a checkpoint makes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from exporter.detectors.parts import Growing, Rows
from exporter.streams.checkpoint import Checkpointer, saved_streams
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore
from exporter.streams.store import Saved, SqliteBackend


def plain(value: Any) -> Any:
    """A snapshot as lists and numbers (large parts included), comparable with ==."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, Rows):
        return [plain(row) for row in value.rows]
    if isinstance(value, Growing):
        return list(value.values)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def as_saved_before(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A detector snapshot as versions before the state store wrote it to JSON: learned
    arrays as flat lists (not rows), no calibration in progress."""
    snapshot = plain(snapshot)
    state = dict(snapshot["state"])
    for flat in ("sorted", "baseline_mean"):
        if state.get(flat) is not None:
            state[flat] = state[flat][0] if state[flat] else None
    return {**{k: v for k, v in snapshot.items() if k != "calibrating"}, "state": state}


def snapshots(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Every stream's saved form, in plain data."""
    return [{"labels": list(s.labels), "detectors": plain(s.detectors.snapshot())}
            for s in pipeline.streams if s.detectors is not None]


def round_trip(pipeline: Pipeline) -> list[dict[str, Any]]:
    """The entries a store would give back after one whole checkpoint of `pipeline`, made by
    the real encoding (running state as JSON, large parts as slots), without a disk."""
    changes = Checkpointer().changes(list(pipeline.streams), {}, {})
    saved = Saved(streams=changes.streams)
    for part in changes.parts:
        saved.parts[(part.stream, part.part)] = [part.slots[i] for i in range(part.length)]
    entries, failures = saved_streams(saved)
    assert failures == 0
    return entries


def load_into(state_dir: str | Path, pipeline: Pipeline) -> int:
    """Open the store under `state_dir` as `run` does and restore it into `pipeline`."""
    store = StateStore(state_dir)
    _, entries = store.open(pipeline)
    restored = store.restore(pipeline, entries)
    store.close()
    return restored


def saved_entries(state_dir: str | Path) -> list[dict[str, Any]]:
    """The streams a store under `state_dir` holds, read as `run` reads them."""
    backend = SqliteBackend(Path(state_dir), read_only=True)
    try:
        entries, failures = saved_streams(backend.load())
    finally:
        backend.close()
    assert failures == 0
    return entries
