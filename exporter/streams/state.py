"""The state of a running exporter under `state_dir`: input positions and detector state,
saved together, incrementally, every `checkpoint_interval` (1 s by default).

Each checkpoint is one transaction (`exporter.streams.store`) holding the input positions
and what changed in the streams since the previous one (`exporter.streams.checkpoint`), so
positions and detector state always describe the same moment: after a SIGKILL the exporter
resumes from the last checkpoint and reads again at most what arrived since (at-least-once
delivery, about a second of records), and the detectors never count a record twice or miss
one the positions say was read. SIGTERM saves everything before exiting.

Faults are reported, never fatal. A store that cannot be read is set aside
(`state.db.corrupt-<time>`, logged, counted) and the exporter starts fresh; a store that
cannot be written (a read-only `state_dir`, a full disk) is counted on every attempt, shown
by `llm_exporter_state_writable`, and ingestion goes on; the next commit that succeeds
saves everything again. A store made with other detector settings is not restored (its
thresholds were calibrated for another expected run time or baseline size) and is replaced
by the first checkpoint. A `detectors.json` from before this store is imported once and
kept as `detectors.json.imported`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from exporter.detectors.registry import SignalDetectorConfig
from exporter.signals.embedding import FEATURES_VERSION
from exporter.streams.checkpoint import Checkpointer, saved_streams
from exporter.streams.pipeline import Pipeline
from exporter.streams.store import Changes, Saved, SqliteBackend, StoreError
from exporter.streams.table import OVERFLOW_VALUE

log = logging.getLogger(__name__)
LEGACY_FILE = "detectors.json"  # the one-document checkpoint of versions before the store
LEGACY_VERSION = 1
# The write-ahead log is copied into the database once this much was committed since the last
# copy (not from the WAL file's size: after a burst it keeps up to journal_size_limit).
WAL_FLUSH_BYTES = 4 << 20
MAKE_SLICE = 0.010  # seconds of making a checkpoint between two turns of the event loop


def _method_settings(config: SignalDetectorConfig) -> dict[str, Any]:
    """A signal's detector config as saved: a rolling or seasonal baseline with its
    period, a fixed one as before it could be anything else (older states restore)."""
    saved = {"method": config.method, "params": config.params, "enabled": config.enabled}
    if not config.baseline.fixed:
        saved["baseline"] = config.baseline.described()
    return saved


def settings_of(pipeline: Pipeline) -> dict[str, Any]:
    factory = pipeline.detector_factory
    settings = {
        # embedding settings shape the MMD detector's input (dimension, source), and so
        # does the built-in embedding's own version (its features and text sample)
        "embedding": pipeline.config.signals.embedding_section,
        "builtin_embedding": FEATURES_VERSION,
        "detector_settings": dataclasses.asdict(factory.settings),
        "methods": {s: _method_settings(c) for s, c in factory.signals.items()},
        "label_names": list(pipeline.streams.label_names),
    }
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(settings))  # as it reads back
    return loaded


class StateStore:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(state_dir)
        self.backend = SqliteBackend(self.directory)
        self.checkpointer = Checkpointer()
        self.saves = 0
        self.save_failures = 0
        self.load_failures = 0
        self.writable = True  # the last commit (or the opening) succeeded
        self.size_bytes = 0  # the store on disk, after the last commit
        self.last_save = 0.0  # unix time of the last commit that succeeded
        self.last_cost = 0.0  # CPU seconds the last checkpoint took: made, then committed
        self.last_pause = 0.0  # the longest the event loop waited while it was made (s)
        self._lock = threading.Lock()  # one commit at a time, in the order they were made
        self._imported: Path | None = None  # a legacy file, renamed once its state is saved
        self._positions: dict[str, bytes] | None = None  # as last committed
        # After a failed commit the store may lack anything since: until a whole checkpoint
        # is committed, partial ones are not (`_broken`, the saver's), and the next one made
        # is whole (`_forget`: the saver asks, the thread that makes checkpoints does it).
        self._broken = False
        self._forget = False
        # the store could not be read at start-up (held by another process, out of reach):
        # it is not written over either, see `_reach`
        self._unread = False
        self._unflushed = 0  # bytes committed since the WAL was last copied (`flush`)

    @property
    def path(self) -> Path:
        return self.backend.path

    # --- start-up -----------------------------------------------------------------
    def open(self, pipeline: Pipeline) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The saved input positions (kept even when detector settings changed, so reading
        resumes where it stopped either way) and the saved streams' `{"labels",
        "detectors"}` entries, if they were saved with `pipeline`'s settings (see `restore`)."""
        saved = self._load()
        legacy = self.directory / LEGACY_FILE
        if saved is None and legacy.exists():
            return self._import(legacy, pipeline)
        if saved is None:
            return {}, []
        positions = {k: orjson.loads(v) for k, v in saved.positions.items()}
        if saved.settings is not None and orjson.loads(saved.settings) != settings_of(pipeline):
            log.warning("detector settings or stream labels changed since %s was saved; "
                        "baselines re-learn", self.path)
            return positions, []
        entries, failures = saved_streams(saved)
        self._count_unusable(failures)
        return positions, _admission_order(entries, pipeline)

    def _load(self) -> Saved | None:
        """What the store holds; None for a new, empty, unusable or unreachable one."""
        try:
            self.backend.open()
            if self.backend.is_new():
                return None
            return self.backend.load()
        except StoreError as exc:
            if not exc.corrupt:
                self.writable, self._unread, self._broken = False, True, True
                log.error("state store unavailable, starting without saved state: %s", exc)
                return None
            self.load_failures += 1
            aside = self.backend.set_aside()
            log.error("%s; moved to %s, baselines re-learn", exc, aside)
            return None

    def _import(self, legacy: Path, pipeline: Pipeline
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            document = orjson.loads(legacy.read_bytes())
            if not isinstance(document, dict) or document.get("version") != LEGACY_VERSION:
                raise ValueError("unknown format version")
        except (OSError, ValueError) as exc:
            self.load_failures += 1
            log.error("cannot import %s (%s); baselines re-learn", legacy, exc)
            return {}, []
        self._imported = legacy
        positions = document.get("positions")
        positions = positions if isinstance(positions, dict) else {}
        settings = settings_of(pipeline)
        if {k: document.get(k) for k in settings} != settings:
            log.warning("detector settings or stream labels changed since %s was saved; "
                        "baselines re-learn", legacy)
            return positions, []
        entries = document.get("streams")
        log.info("importing %s; it is kept as %s.imported once saved here", legacy, legacy.name)
        return positions, _admission_order(entries if isinstance(entries, list) else [], pipeline)

    def restore(self, pipeline: Pipeline, entries: list[Any]) -> int:
        """Restore `open`'s entries into `pipeline`; the number restored."""
        restored, failures = restore_streams(pipeline, entries)
        self._count_unusable(failures)
        if entries:
            log.info("restored detector state of %d stream(s) from %s", restored, self.path)
        return restored

    def _count_unusable(self, failures: int) -> None:
        if failures:
            self.load_failures += failures
            log.error("%d saved stream(s) unusable; they re-learn", failures)

    # --- checkpoints --------------------------------------------------------------
    def checkpoint(self, pipeline: Pipeline, positions: dict[str, Any]) -> Changes:
        """What changed since the last checkpoint, with `positions`: taken between two
        batches (on the thread that ingests), so they describe the same moment."""
        started, wall = time.thread_time(), time.perf_counter()
        changes = self.checkpointer.changes(list(pipeline.streams), positions,
                                            self._settings(pipeline))
        self.last_cost = time.thread_time() - started
        self.last_pause = time.perf_counter() - wall
        return changes

    async def checkpoint_in_slices(self, pipeline: Pipeline,
                                   positions: Callable[[], dict[str, Any]]) -> Changes:
        """`checkpoint`, made MAKE_SLICE seconds at a time with the event loop free in
        between, so a scrape waits for a slice, never for every stream. Records ingested
        meanwhile change streams already made: those are made again at the end, in one go
        with `positions()`, so the checkpoint still describes one moment."""
        started, wall = time.thread_time(), time.perf_counter()
        changes = self.checkpointer.begin(self._settings(pipeline))
        streams, at, cost, pause = list(pipeline.streams), 0, 0.0, 0.0
        while at < len(streams):
            at = self.checkpointer.add(changes, streams, at, wall + MAKE_SLICE)
            cost += time.thread_time() - started
            pause = max(pause, time.perf_counter() - wall)
            try:
                await asyncio.sleep(0)  # scrapes, views, other inputs
            except BaseException:  # cancelled (a shutdown): the streams made so far count
                self.checkpointer.forget()  # as saved; they are not: the next is whole
                raise
            started, wall = time.thread_time(), time.perf_counter()
        streams = list(pipeline.streams)
        self.checkpointer.add(changes, streams)  # those changed meanwhile, and new ones
        self.checkpointer.end(changes, streams, positions())
        self.last_cost = cost + time.thread_time() - started
        self.last_pause = max(pause, time.perf_counter() - wall)
        return changes

    def _settings(self, pipeline: Pipeline) -> dict[str, Any]:
        """A checkpoint's settings (it carries them only when it is whole: not worked out
        for every one); a checkpoint asked for after a failed commit is whole."""
        if self._forget:
            self._forget = False
            self.checkpointer.forget()
        return settings_of(pipeline) if self.checkpointer.whole else {}

    def failed_to_make(self) -> None:
        """Making a checkpoint raised (a bug): counted, and the next one is whole."""
        self.save_failures += 1
        self.checkpointer.forget()

    def unchanged(self, changes: Changes) -> bool:
        """Nothing to commit: no stream changed and no input moved since the last commit."""
        return (not (changes.streams or changes.parts or changes.deleted or changes.replace_all)
                and changes.positions == self._positions)

    def commit(self, changes: Changes) -> bool:
        """Write a checkpoint (any thread; commits are serialised in call order)."""
        with self._lock:
            started, cpu = time.monotonic(), time.thread_time()
            if self._broken and not changes.replace_all:
                self.save_failures += 1  # made before the failure was known: not complete
                return False
            try:
                self._reach()
                self.backend.commit(changes)
            except StoreError as exc:
                self.save_failures += 1
                if self.writable:  # once per outage in the log; every attempt is counted
                    log.error("cannot save state: %s", exc)
                if exc.corrupt:  # damaged while running: moved aside, the next saves afresh
                    self.load_failures += 1
                    log.error("state store moved to %s", self.backend.set_aside())
                self.writable, self._broken, self._forget = False, True, True
                return False
            self._broken = False
            if not self.writable:
                log.info("state saved again to %s", self.path)
            self.writable, self.saves, self.last_save = True, self.saves + 1, time.time()
            self._positions = changes.positions
            self._unflushed += changes.size
            self.size_bytes = self.backend.size()
            self.last_cost += time.thread_time() - cpu
            if self._imported is not None:
                self._keep_imported(self._imported)
            log.debug("checkpoint: %d stream(s), %d part(s) in %.1f ms", len(changes.streams),
                      len(changes.parts), 1000 * (time.monotonic() - started))
            return True

    def _reach(self) -> None:
        """A store this process could not read at start-up is now within reach: what it
        holds was never restored, so it is kept aside rather than overwritten."""
        if not self._unread:
            return
        self.backend.open()
        self._unread = False
        if not self.backend.is_new():
            aside = self.backend.set_aside("unread")
            log.warning("the state store could not be read at start-up; what it held is "
                        "kept as %s and this process's state is saved from now on", aside)

    def commit_and_flush(self, changes: Changes) -> bool:
        """`commit`, then `flush` once due (the saver thread's job for a large one)."""
        saved = self.commit(changes)
        if self.wal_due():
            self.flush()
        return saved

    def wal_due(self) -> bool:
        """WAL_FLUSH_BYTES were committed since the WAL was last copied (`flush`)."""
        return self._unflushed >= WAL_FLUSH_BYTES

    def flush(self) -> None:
        """`SqliteBackend.flush` (a thread of its own: see Exporter.checkpoint_async)."""
        self._unflushed = 0
        try:
            self.backend.flush()
        except StoreError as exc:
            log.error("cannot flush the state store: %s", exc)

    def save(self, pipeline: Pipeline, positions: dict[str, Any] | None = None) -> bool:
        return self.commit(self.checkpoint(pipeline, positions or {}))

    def _keep_imported(self, legacy: Path) -> None:
        self._imported = None
        try:
            os.replace(legacy, legacy.with_name(legacy.name + ".imported"))
        except OSError as exc:
            log.error("cannot rename %s after importing it: %s", legacy, exc)

    def close(self) -> None:
        with self._lock:
            if self.writable:
                self.flush()  # a clean stop leaves the database whole, its WAL empty
            self.backend.close()


def _admission_order(entries: list[Any], pipeline: Pipeline) -> list[Any]:
    """Streams are re-admitted as they were first admitted: real ones, then `__other__`
    (which the cap would otherwise give a real stream's place)."""
    overflow = [OVERFLOW_VALUE] * len(pipeline.streams.label_names)
    return sorted(entries, key=lambda e: isinstance(e, dict)
                  and list(e.get("labels", ())) == overflow)


def restore_streams(pipeline: Pipeline, entries: list[Any]) -> tuple[int, int]:
    """Restore saved streams into `pipeline`: (restored, unusable entries)."""
    restored = failures = 0
    for entry in entries:
        try:
            labels = tuple(entry["labels"])
            stream = pipeline.streams.get(labels)
            if stream.labels != labels:  # beyond a lowered max_streams: no stream for it now
                log.warning("not restoring stream %s: over max_streams", labels)
                continue
            if stream.detectors is not None:
                stream.detectors.restore(entry["detectors"], pipeline.detector_factory)
                if entry.get("counters") is not None:
                    stream.restore_counters(entry["counters"])
                if stream.evidence is not None:
                    stream.evidence.baseline_complete()
                stream.settle(wait=False)  # a calibration saved in progress, resumed at once
                restored += 1
        except (KeyError, TypeError, ValueError) as exc:
            failures += 1
            labels = entry.get("labels") if isinstance(entry, dict) else None
            log.error("skipping unusable state of stream %s: %s", labels, exc)
    return restored, failures
