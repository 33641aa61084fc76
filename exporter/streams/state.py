"""Checkpoints under `state_dir`: file positions and detector state, in one document.

One document, written atomically, so positions and detector state always
describe the same moment: after a crash the exporter resumes from the last
checkpoint and re-reads at most what arrived since (at-least-once; the
duplicates are bounded by `checkpoint_interval`), and the detectors never
count a record that the positions say is still unread.

Written atomically (temp file, fsync, rename, fsync of the directory) so a
crash leaves either the old or the new file, never half of one. A file that
cannot be read is reported and set aside (renamed `*.corrupt-<time>`), never
fatal: the exporter re-learns instead of refusing to start. A file written
with other detector settings is ignored for the same reason: its thresholds
were calibrated for another expected run time or baseline size.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from exporter.signals.embedding import FEATURES_VERSION
from exporter.streams.pipeline import Pipeline
from exporter.streams.table import OVERFLOW_VALUE

log = logging.getLogger(__name__)
DETECTORS_FILE = "detectors.json"
FORMAT_VERSION = 1


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def settings_of(pipeline: Pipeline) -> dict[str, Any]:
    factory = pipeline.detector_factory
    return {
        # embedding settings shape the MMD detector's input (dimension, source), and so
        # does the built-in embedding's own version (its features and text sample)
        "embedding": pipeline.config.signals.embedding_section,
        "builtin_embedding": FEATURES_VERSION,
        "detector_settings": dataclasses.asdict(factory.settings),
        "methods": {s: dataclasses.asdict(c) for s, c in factory.signals.items()},
        "label_names": list(pipeline.streams.label_names),
    }


class StateStore:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(state_dir)
        self.saves = 0
        self.save_failures = 0
        self.load_failures = 0
        self._document: dict[str, Any] | None = None

    @property
    def detectors_path(self) -> Path:
        return self.directory / DETECTORS_FILE

    def save(self, pipeline: Pipeline, positions: dict[str, Any] | None = None) -> bool:
        return self.save_entries(settings_of(pipeline), snapshot_streams(pipeline), positions)

    def save_entries(
        self,
        settings: dict[str, Any],
        streams: list[dict[str, Any]],
        positions: dict[str, Any] | None = None,
    ) -> bool:
        """Write one checkpoint from its parts (with worker processes, each worker's
        `snapshot_streams` are collected into one document, whatever the worker count)."""
        document = {
            "version": FORMAT_VERSION,
            "saved_at": time.time(),
            "positions": positions or {},
            **settings,
            "streams": streams,
        }
        try:
            data = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
            write_atomically(self.detectors_path, data)
        except (OSError, TypeError) as exc:
            self.save_failures += 1
            log.error("cannot save detector state to %s: %s", self.detectors_path, exc)
            return False
        self.saves += 1
        self._document = None
        return True

    def _set_aside(self, path: Path, why: str) -> None:
        self.load_failures += 1
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("detector state %s is unusable (%s); moved to %s, baselines re-learn",
                  path, why, aside)
        try:
            os.replace(path, aside)
        except OSError as exc:
            log.error("cannot move %s aside: %s", path, exc)

    def _read(self) -> dict[str, Any] | None:
        if self._document is not None:
            return self._document
        path = self.detectors_path
        try:
            document = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            self._set_aside(path, str(exc))
            return None
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            self._set_aside(path, "unknown format version")
            return None
        self._document = document
        return document

    def load_positions(self) -> dict[str, Any]:
        document = self._read()
        positions = document.get("positions") if document else None
        return positions if isinstance(positions, dict) else {}

    def load(self, pipeline: Pipeline) -> int:
        """Restore detector state; returns the number of streams restored.

        File positions are read by `load_positions` (they stay valid when detector
        settings change, so reading resumes where it stopped either way).
        """
        entries = self.load_entries(pipeline)
        restored, failures = restore_streams(pipeline, entries)
        self.load_failures += failures
        if entries:
            log.info("restored detector state of %d stream(s) from %s",
                     restored, self.detectors_path)
        return restored

    def load_entries(self, pipeline: Pipeline) -> list[dict[str, Any]]:
        """The saved streams' entries, if they were saved with `pipeline`'s settings."""
        path = self.detectors_path
        leftover = path.with_name(f".{path.name}.tmp")
        if leftover.exists():
            log.warning("removing %s left by an interrupted save", leftover)
            leftover.unlink(missing_ok=True)
        document = self._read()
        if document is None:
            return []
        settings = settings_of(pipeline)
        if {k: document.get(k) for k in settings} != settings:
            log.warning("detector settings or stream labels changed since %s was saved; "
                        "baselines re-learn", path)
            return []
        entries = document.get("streams", [])
        if not isinstance(entries, list):
            return []
        # re-admitted as they were first admitted: real streams, then `__other__` (a
        # supervisor's workers may have saved theirs in any order)
        overflow = [OVERFLOW_VALUE] * len(pipeline.streams.label_names)
        return sorted(entries, key=lambda e: isinstance(e, dict)
                      and e.get("labels") in (overflow, tuple(overflow)))


def snapshot_streams(pipeline: Pipeline) -> list[dict[str, Any]]:
    entries = []
    for stream in pipeline.streams:
        if stream.detectors is not None:
            # a calibration still running holds observations the positions saved with this
            # snapshot already cover: wait for it (checkpoints avoid such moments, see
            # Exporter._checkpoint_loop)
            stream.settle(wait=True)
            entries.append({"labels": list(stream.labels),
                            "detectors": stream.detectors.snapshot()})
    return entries


def restore_streams(pipeline: Pipeline, entries: list[Any]) -> tuple[int, int]:
    """Restore saved streams into `pipeline`: (restored, unusable entries)."""
    restored = failures = 0
    for entry in entries:
        try:
            stream = pipeline.streams.get(tuple(entry["labels"]))
            if stream.detectors is not None:
                stream.detectors.restore(entry["detectors"], pipeline.detector_factory)
                if stream.evidence is not None:
                    stream.evidence.baseline_complete()
                restored += 1
        except (KeyError, TypeError, ValueError) as exc:
            failures += 1
            labels = entry.get("labels") if isinstance(entry, dict) else None
            log.error("skipping unusable state of stream %s: %s", labels, exc)
    return restored, failures
