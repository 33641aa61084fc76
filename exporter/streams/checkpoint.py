"""Checkpoints as changes: which streams changed since the last one, and what of them.

A stream's state is its `StreamDetectors.snapshot()`. Its small, running values are saved as
one JSON document whenever the stream changed (`StreamState.version`); its large parts
(`Rows`, `Growing`: baseline samples, learned arrays) are replaced in that document by a
reference and saved slot by slot, only the slots that are new since they were last saved. So
a learned baseline is written once, and a baseline being learned is written as it grows.

What was saved is remembered by object identity (the row objects, the growing array and its
length) and by each stream's version. The memory is updated when a checkpoint is made;
if its commit then fails, `forget()` makes the next checkpoint a whole one.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import is_, is_not
from typing import Any

import numpy as np
import orjson

from exporter.detectors.parts import Growing, Rows
from exporter.streams.store import Changes, PartChange, Saved
from exporter.streams.table import StreamState

log = logging.getLogger(__name__)
GROWING_BLOCK = 64  # values per saved block of a growing array (512 B: its last, partial
# block is written again with each checkpoint while it grows)
# a wrapper left in place would be written as a plain object: an error instead
_NUMPY = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATACLASS


def stream_key(labels: tuple[str, ...]) -> str:
    return orjson.dumps(list(labels)).decode()


@dataclass
class _Memory:
    versions: dict[str, int] = field(default_factory=dict)  # stream -> version saved
    keys: dict[tuple[str, ...], str] = field(default_factory=dict)  # labels -> stream key
    # stream -> part -> what was saved: the row objects, or the growing array and its length
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)


class Checkpointer:
    """Makes checkpoints: `changes` at once, or `begin`, `add` a slice of streams at a time
    (the event loop free in between), `end` with the positions."""

    def __init__(self) -> None:
        self._memory = _Memory()
        self._whole = True  # the next checkpoint is the whole state (a start, a failure)
        self._part_names: dict[str, tuple[str, ...]] = {}  # detector kind -> its large parts
        # the checkpoint being made: stream -> (what was saved of its parts before it,
        # its part changes in it), so a stream that changes again meanwhile is made anew
        self._made: dict[str, tuple[dict[str, Any], list[PartChange]]] = {}

    @property
    def whole(self) -> bool:
        """The next checkpoint is the whole state (and carries the settings)."""
        return self._whole

    def forget(self) -> None:
        """A commit failed: the store may lack anything since; save everything next."""
        self._memory = _Memory()
        self._whole = True
        self._made = {}

    def release(self, streams: list[StreamState]) -> None:
        """Forget these streams without deleting them: they moved to another process,
        which saves them from now on (the next checkpoint here must not delete them)."""
        memory = self._memory
        for stream in streams:
            key = memory.keys.pop(stream.labels, None)
            if key is not None:
                memory.versions.pop(key, None)
                memory.parts.pop(key, None)
                self._made.pop(key, None)

    def adopt(self, streams: list[StreamState]) -> None:
        """These streams were just restored from what a store holds: remember them as
        saved, so the next checkpoint writes only what changes from here (not every slot of
        every stream again)."""
        made, self._made = self._made, {}
        self.add(Changes(positions={}), streams, encode=False)
        self._made = made

    def changes(self, streams: list[StreamState], positions: dict[str, Any],
                settings: dict[str, Any]) -> Changes:
        """The checkpoint of `streams` (all of a pipeline's) since the last one;
        `settings` are read only when it is whole (see `whole`)."""
        changes = self.begin(settings)
        self.add(changes, streams)
        return self.end(changes, streams, positions)

    def begin(self, settings: dict[str, Any]) -> Changes:
        self._made = {}
        whole = self._whole
        return Changes(positions={}, settings=orjson.dumps(settings) if whole else None,
                       replace_all=whole)

    def add(self, changes: Changes, streams: list[StreamState], start: int = 0,
            deadline: float = math.inf, encode: bool = True) -> int:
        """Make the streams of `streams[start:]` that changed since they were last made
        (again, if that was earlier in this checkpoint), until `time.perf_counter()` passes
        `deadline`; the index to go on from (`len(streams)`: all done)."""
        memory = self._memory
        for index in range(start, len(streams)):
            if index > start and time.perf_counter() > deadline:  # one at least
                return index
            stream = streams[index]
            if stream.detectors is None:
                continue
            key = memory.keys.get(stream.labels)
            if key is None:
                key = memory.keys[stream.labels] = stream_key(stream.labels)
            if memory.versions.get(key) == stream.version:
                continue
            memory.versions[key] = stream.version
            made = self._made.get(key)
            before = memory.parts.pop(key, {}) if made is None else made[0]
            now: dict[str, Any] = {}
            parts: list[PartChange] = []
            document = self._split(key, stream.detectors.snapshot(), (before, now), parts)
            if encode:  # (not for `adopt`: only the memory of what is saved is wanted)
                document["counters"] = stream.counters()
                changes.streams[key] = orjson.dumps(document, option=_NUMPY)
            # parts it no longer has (a calibration that finished, a sample learned)
            parts.extend(PartChange(key, p, 0, {}, shrunk=True) for p in before if p not in now)
            memory.parts[key] = now
            self._made[key] = (before, parts)
        return len(streams)

    def end(self, changes: Changes, streams: list[StreamState],
            positions: dict[str, Any]) -> Changes:
        """The checkpoint complete: `streams` are all the pipeline's now (each made since
        it last changed: see `add`), `positions` those their state includes."""
        memory = self._memory
        alive = {memory.keys.get(s.labels) for s in streams if s.detectors is not None}
        for key in [k for k in memory.versions if k not in alive]:
            changes.deleted.append(key)
            changes.streams.pop(key, None)  # (made earlier in this checkpoint, then gone)
            self._made.pop(key, None)
            del memory.versions[key]
            memory.parts.pop(key, None)
            memory.keys.pop(tuple(orjson.loads(key)), None)
        changes.parts = [change for _, parts in self._made.values() for change in parts]
        changes.positions = {k: orjson.dumps(v) for k, v in positions.items()}
        self._made = {}
        self._whole = False
        return changes

    def _split(self, key: str, snapshot: dict[str, Any],
               parts: tuple[dict[str, Any], dict[str, Any]], found: list[PartChange]) -> Any:
        """`snapshot` (a StreamDetectors one, made for this checkpoint: changed in place)
        with its large parts replaced by references, their new slots noted. Large parts
        are values of a detector's `state` (which keys, a detector kind says the first time
        it is seen: see `one_row`) and the values held by a calibration in progress."""
        for signal, detector in snapshot["detectors"].items():
            state = detector["state"]
            names = self._part_names.get(detector["kind"])
            if names is None:
                names = tuple(n for n, v in state.items() if type(v) in (Rows, Growing))
                self._part_names[detector["kind"]] = names
            for name in names:
                state[name] = _part(key, f"{signal}.{name}", state[name], parts, found)
            held = detector.get("calibrating")
            if held:
                held["values"] = _part(key, f"{signal}.held.values", held["values"], parts,
                                       found)
            seasons = detector.get("seasons")
            if seasons:  # the phases' references (a row changes once a phase), and the
                seasons["table"] = _part(key, f"{signal}.seasons.table",  # values of
                                         seasons["table"], parts, found)  # this one
                summary = seasons["summary"]
                if summary and "values" in summary:
                    summary["values"] = _part(key, f"{signal}.seasons.values",
                                              summary["values"], parts, found)
        return snapshot


def _part(key: str, where: str, item: Any, parts: tuple[dict[str, Any], dict[str, Any]],
          found: list[PartChange]) -> Any:
    """A reference to a large part in place of `item`, and its new slots noted."""
    before, now = parts
    if type(item) is Rows:
        saved = before.get(where)
        if saved is not None and _same(item.rows, saved):  # a learned part: most of them
            now[where] = saved
        else:
            rows = item.rows if type(item.rows) is list else list(item.rows)  # (a snapshot's)
            now[where] = _rows(key, where, rows, saved, found)
        return {"$rows": where, "n": len(item.rows)}
    if type(item) is Growing:
        now[where] = _growing(key, where, item.values, before.get(where), found)
        return {"$growing": where, "n": len(item.values)}
    return item


def _same(rows: Sequence[Any], saved: list[Any]) -> bool:
    """The rows saved, unchanged (the same row objects, compared in C)."""
    return len(rows) == len(saved) and all(map(is_, rows, saved))


def _buffer(row: Any) -> np.ndarray:
    """A row as its slot's data: the row itself when it is already contiguous float64
    (rows are never written to once added, see `Rows`), so its bytes are copied by the
    commit, off the event loop, not here."""
    if type(row) is np.ndarray and row.dtype == np.float64 and row.flags.c_contiguous:
        return row
    return np.ascontiguousarray(row, dtype=np.float64)


def _rows(key: str, part: str, rows: list[Any], before: list[Any] | None,
          found: list[PartChange]) -> list[Any]:
    known = before or []
    # the slots whose row is not the one saved, then those beyond: compared in C (a
    # reservoir of 256 rows is compared every second while it is learned)
    replaced = compress(range(len(rows)), map(is_not, rows, known))
    slots = {slot: _buffer(rows[slot])
             for slot in chain(replaced, range(len(known), len(rows)))}
    if slots or before is None or len(rows) < len(known):
        found.append(PartChange(key, part, len(rows), slots, shrunk=len(rows) < len(known)))
    return rows


def _growing(key: str, part: str, values: array, before: tuple[array, int] | None,
             found: list[PartChange]) -> tuple[array, int]:
    if before is not None and before[0] is values and before[1] == len(values):
        return before  # as saved (a learned baseline)
    known, length = before or (None, 0)
    first = length // GROWING_BLOCK if known is values and length <= len(values) else 0
    end = -(-len(values) // GROWING_BLOCK)
    slots = {  # slices are copies: the array grows on meanwhile
        block: values[block * GROWING_BLOCK:(block + 1) * GROWING_BLOCK]
        for block in range(first, end)
    }
    if slots or known is not values or length != len(values):
        shrunk = end < -(-length // GROWING_BLOCK)
        found.append(PartChange(key, part, end, slots, shrunk=shrunk))
    return values, len(values)


def saved_streams(saved: Saved) -> tuple[list[dict[str, Any]], int]:
    """The saved streams as `{"labels", "counters", "detectors"}` entries, their large
    parts put back; and the number of streams that could not be read (a part missing or
    cut short)."""
    entries, failures = [], 0
    for key, state in saved.streams.items():
        try:
            document = orjson.loads(state)
            counters = document.pop("counters", None)  # (not in stores made before them)
            entries.append({"labels": orjson.loads(key), "counters": counters,
                            "detectors": _joined(key, document, saved)})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            failures += 1
            log.error("skipping unusable saved state of stream %s (it re-learns): %s", key, exc)
    return entries, failures


def _joined(key: str, value: Any, saved: Saved) -> Any:
    if not isinstance(value, dict):
        return value
    # Fewer slots than the document says: a part is missing (the stream re-learns). More:
    # slots left behind by a part that shrank, whose deletion a store could not make
    # (a Kafka transaction aborted); the first ones are the part.
    if "$rows" in value:
        slots = saved.parts.get((key, value["$rows"]), [])
        if len(slots) < value["n"]:
            raise ValueError(f"part {value['$rows']}: {len(slots)} rows, not {value['n']}")
        return Rows([np.frombuffer(data, dtype=np.float64).copy()
                     for data in slots[:value["n"]]])
    if "$growing" in value:
        blocks = saved.parts.get((key, value["$growing"]), [])
        values = array("d")
        for data in blocks:
            values.frombytes(memoryview(data).cast("B"))  # bytes, or an array not saved yet
        if len(values) < value["n"]:
            raise ValueError(f"part {value['$growing']}: {len(values)} values, not {value['n']}")
        del values[value["n"]:]
        return Growing(values)
    return {name: _joined(key, item, saved) for name, item in value.items()}
