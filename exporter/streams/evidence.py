"""Example outputs kept per stream, so a drift alert shows the records that carry the change.

A random sample of recent outputs shows the change only as often as the change touches a
record: a format drift from 1% to 12% invalid replies leaves nine valid replies in ten. So
besides a reservoir sample of the outputs seen while the baselines were learned (`baseline`)
and the latest outputs (`window`), each signal keeps a ring of the latest records that carry a
change of it, collected whether or not the signal is in drift, so the records that raised an
alarm are there when it fires:

- format_validity: invalid replies, with the reason the format rule gave;
- refusal: replies found to be refusals, with how (structured, phrase, custom);
- output_tokens: replies above the baseline's p95 and below its p5 (two rings; the detector's
  direction picks which one a drift shows);
- embedding: no vectors are kept (a built-in one of 256 float32 weighs as much as four texts,
  a supplied one of 1,536 as much as twenty; the witness wants many candidates). At read time
  the window's texts are embedded again and ranked by the detector's MMD witness function:
  the replies it finds most like the live window and least like the baseline. That costs about
  a millisecond per drifted stream and view, nothing per record; supplied vectors cannot be
  recomputed from text, so their drift shows the latest outputs.

Each ring holds `examples` records, so the carriers cost a few kilobytes per stream. When an
event fires, its window examples are noted with it (the latest `EVENT_EXAMPLES` events per
signal) for the replay report. Texts are clipped to `max_chars`. In memory only and switchable
off (`evidence.enabled: false`) because outputs may hold personal data.
"""

from __future__ import annotations

import functools
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from exporter.config import EvidenceConfig
from exporter.detectors.base import Detector
from exporter.records.record import Record
from exporter.signals.embedding import TextEmbedder, top_features
from exporter.signals.measure import Measurements

EVENT_EXAMPLES = 10  # events per signal whose window examples are kept (the latest)
LATEST = "latest"  # what a window shows when no ring carries the change (see `examples`)


@dataclass(slots=True)
class Example:
    """One kept output and what makes it an example of its signal's change."""

    text: str
    record: int | None = None  # a carrier's index in the stream, as events are logged
    reason: str | None = None  # format: invalid reason; refusal: structured | phrase | custom
    output_tokens: int | None = None
    witness: float | None = None  # embedding: MMD witness at read time

    def as_dict(self) -> dict[str, Any]:
        return {f.name: value for f in fields(self)
                if (value := getattr(self, f.name)) is not None}


@dataclass(slots=True)
class EventExamples:
    """The examples an event fired with (the replay report shows them with the event)."""

    shows: str
    baseline: tuple[str, ...]
    window: tuple[Example, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"shows": self.shows, "baseline": [{"text": t} for t in self.baseline],
                "window": [e.as_dict() for e in self.window]}


@functools.lru_cache(maxsize=4)
def _embedder(dimension: int) -> TextEmbedder:
    """The built-in embedding as SignalMeasurer builds it (default seed): the witness must
    see vectors from the space the detector learned."""
    return TextEmbedder(dimension)


def text_of(record: Record) -> str:
    """What a person should read of a reply: its text, its refusal, or its tool calls
    (an invalid `tool_arguments` reply may have no text at all)."""
    if record.output_text or record.refusal_text:
        return record.output_text or record.refusal_text or ""
    return " ".join(f"{c.name}({c.arguments or ''})" for c in record.tool_calls)


# the rings of carriers each signal's examples are drawn from
RINGS = {"format_validity": ("format_validity",), "refusal": ("refusal",),
         "output_tokens": ("long", "short"), "embedding": ()}


class Evidence:
    """One stream's example outputs: baseline sample, latest outputs, carriers per signal."""

    def __init__(self, settings: EvidenceConfig, baseline_size: int, seed: int = 0) -> None:
        self.settings = settings
        self.baseline_size = baseline_size
        self._rng = random.Random(seed)
        self.window: deque[str] = deque(maxlen=settings.texts)
        # lists, not deques: a deque takes 760 bytes however short its maxlen
        self.rings: dict[str, list[Example]] = {
            ring: [] for rings in RINGS.values() for ring in rings}
        self._events: dict[str, deque[tuple[int, EventExamples]]] = {}
        self._events_noted: dict[str, int] | None = None  # see `events_noted`
        # the built-in embedding's dimension once a built-in vector came (None: supplied ones)
        self._embedding_dimension: int | None = None
        # (the output-token detector, its baseline's (p5, p95)): see `_length_bounds`
        self._bounds: tuple[Detector | None, tuple[float, float]] | None = None
        self.reset_baseline()

    def reset_baseline(self, signals: Sequence[str] | None = None) -> None:
        """A new baseline sample; the rings of the reset signals (all when None) start
        empty, as what carries a change is measured against the new baseline. Noted event
        examples stay, as the detectors' event logs do."""
        self.baseline: list[str] = []
        self._baseline_seen = 0
        if not signals or "output_tokens" in signals:
            self._bounds = None
        for signal in signals or RINGS:
            for ring in RINGS.get(signal, ()):
                self.rings[ring].clear()

    def baseline_complete(self) -> None:
        """After a restart from saved detector state the baseline is long learned: new
        outputs belong to the window, not to a new baseline sample."""
        self._baseline_seen = self.baseline_size

    def _clip(self, text: str) -> str:
        # "...", not "…": one non-Latin-1 character makes Python store the whole string at
        # two bytes a character, and these texts are most of a stream's memory
        limit = self.settings.max_chars
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def _add_text(self, text: str) -> None:
        clipped = self._clip(text)
        if self._baseline_seen < self.baseline_size:
            self._baseline_seen += 1
            if len(self.baseline) < self.settings.texts:
                self.baseline.append(clipped)
            else:
                slot = self._rng.randrange(self._baseline_seen)
                if slot < self.settings.texts:
                    self.baseline[slot] = clipped
        else:
            self.window.append(clipped)

    def _length_bounds(self, detector: Detector | None) -> tuple[float, float]:
        """(p5, p95) of the output-token baseline; (-inf, inf), so that no reply is beyond
        them, while it is learned or for a detector that keeps no baseline (river's). Cached
        in `_bounds` while the same detector stays ready, as a rank baseline is fixed once
        learned (a reset of it comes through `reset_baseline`, which drops the cache)."""
        self._bounds = None
        quantile = getattr(detector, "baseline_quantile", None)
        low, high = (quantile(0.05), quantile(0.95)) if quantile is not None else (None, None)
        if low is None or high is None:
            return -math.inf, math.inf
        self._bounds = (detector, (low, high))
        return low, high

    def add_many(self, records: Sequence[Record], measurements: Sequence[Measurements],
                 first: int, lengths: Detector | None) -> None:
        """A batch of the stream's records in order (`first`: the stream index of the first;
        `lengths`: the stream's output-token detector). Only what can stay is clipped and
        kept: the latest `texts` outputs, the latest `examples` carriers of each ring."""
        learning = 0
        while learning < len(records) and self._baseline_seen < self.baseline_size:
            self._add_text(text_of(records[learning]))
            learning += 1
        if self.window.maxlen:
            kept = max(learning, len(records) - self.window.maxlen)
            self.window.extend(map(self._clip, map(text_of, records[kept:])))
        if self._embedding_dimension is None:  # one source per exporter: learned once
            last = measurements[-1]
            if last.embedding_source == "builtin" and last.embedding is not None:
                self._embedding_dimension = len(last.embedding)
        cached = self._bounds
        if (cached is not None and lengths is not None and cached[0] is lengths
                and lengths.baseline_ready):
            low, high = cached[1]
        else:
            low, high = self._length_bounds(lengths)
        # one test per record: carriers are rare, and only they go on to the rings
        carriers = [i for i, m in enumerate(measurements) if m.format_invalid is not None
                    or m.refusal is not None or not low <= m.output_tokens <= high]
        if not carriers:
            return
        by_ring = {
            "format_validity": [i for i in carriers if measurements[i].format_invalid is not None],
            "refusal": [i for i in carriers if measurements[i].refusal is not None],
            "long": [i for i in carriers if measurements[i].output_tokens > high],
            "short": [i for i in carriers if measurements[i].output_tokens < low],
        }
        count = self.settings.examples
        for ring, picked in by_ring.items():
            if picked:
                target = self.rings[ring]
                target.extend(self._example(ring, records[i], measurements[i], first + i)
                              for i in picked[-count:])
                del target[: max(0, len(target) - count)]

    def _example(self, ring: str, record: Record, m: Measurements, index: int) -> Example:
        text = self._clip(text_of(record))
        if ring == "format_validity":
            return Example(text, index, m.format_invalid)
        if ring == "refusal":
            return Example(text, index, m.refusal)
        return Example(text, index, output_tokens=m.output_tokens)

    # --- reads: nothing below changes what is kept -------------------------------------
    def window_examples(self, signal: str, detector: Detector) -> tuple[str, list[Example]]:
        """(what the examples show, the latest `examples` records that carry `detector`'s
        change, newest first). A change no ring holds (fewer refusals, narrower lengths,
        user-supplied vectors) shows the latest outputs instead, and says so."""
        direction = getattr(detector, "direction", "up") if detector.baseline_ready else "up"
        count = self.settings.examples
        picked: list[Example] = []
        shows = LATEST
        if signal in ("format_validity", "refusal") and direction == "up":
            picked = self.rings[signal][::-1]
            shows = "invalid" if signal == "format_validity" else "refusals"
        elif signal == "output_tokens" and direction != "narrower":
            rings = {"up": ("long",), "down": ("short",), "wider": ("long", "short")}[direction]
            merged = [e for ring in rings for e in self.rings[ring]]
            picked = sorted(merged, key=lambda e: e.record or 0, reverse=True)[:count]
            shows = {"up": "above_p95", "down": "below_p5", "wider": "beyond_p5_p95"}[direction]
        elif signal == "embedding":
            picked = self._most_unlike_baseline(detector)
            shows = "most_unlike_baseline" if picked else LATEST
        if not picked:
            return LATEST, [Example(t) for t in list(self.window)[-count:][::-1]]
        return shows, picked[:count]

    def _most_unlike_baseline(self, detector: Detector) -> list[Example]:
        witness = getattr(detector, "witness", None)
        texts = list(self.window)
        if witness is None or self._embedding_dimension is None or not texts:
            return []
        limit = self.settings.max_chars
        # a clipped text's "..." is ours, not the model's: embed what the model wrote
        vectors = _embedder(self._embedding_dimension).embed_many(
            t[:-3] if len(t) == limit and t.endswith("...") else t for t in texts)
        values = witness(vectors)
        if values is None:
            return []
        order = np.argsort(-values, kind="stable")[: self.settings.examples]
        return [Example(texts[i], witness=round(float(values[i]), 6)) for i in order]

    def examples(self, signal: str, detector: Detector) -> dict[str, Any]:
        shows, window = self.window_examples(signal, detector)
        return {"shows": shows,
                "baseline": [{"text": t} for t in self.baseline[: self.settings.examples]],
                "window": [e.as_dict() for e in window]}

    def event_examples(self, signal: str) -> dict[int, dict[str, Any]]:
        """{event record: the examples it fired with} for the signal's latest events."""
        return {record: noted.as_dict() for record, noted in self._events.get(signal, ())}

    def moved_features(self, k: int = 8) -> list[dict[str, Any]]:
        """Tokens whose share of outputs moved most (evidence for an embedding drift)."""
        if not self.baseline or not self.window:
            return []
        shifts = top_features(self.baseline, list(self.window), k=4 * k)
        # words explain a change to a person better than punctuation tokens do
        wordy = [f for f in shifts if any(c.isalnum() for c in f.feature)]
        return [
            {"feature": f.feature, "baseline_share": round(f.share_a, 3),
             "window_share": round(f.share_b, 3)}
            for f in (wordy or shifts)[:k]
        ]

    # --- ingest side ---------------------------------------------------------------
    def events_noted(self, detectors: dict[str, Detector]) -> dict[str, int]:
        """Each detector's event count as of the last `note_events` (the current counts
        before the first): events that fired between two batches, when a calibration
        finished on the settle tick, are noted with the next batch."""
        if self._events_noted is not None:
            return self._events_noted
        return {signal: detector.events for signal, detector in detectors.items()}

    def note_events(self, detectors: dict[str, Detector], noted: dict[str, int]) -> None:
        """Keep the window examples with each event logged since `noted` (`events_noted`)."""
        fired = self._events_noted is None
        for signal, detector in detectors.items():
            new = detector.events - noted[signal]
            if new > 0:  # rare: an event fired
                fired = True
                shows, window = self.window_examples(signal, detector)
                examples = EventExamples(
                    shows, tuple(self.baseline[: self.settings.examples]), tuple(window))
                kept = self._events.setdefault(signal, deque(maxlen=EVENT_EXAMPLES))
                for event in detector.event_log[-min(new, EVENT_EXAMPLES):]:
                    kept.append((int(event["record"]), examples))
        if fired:  # else the counts noted are still the counts
            self._events_noted = {signal: d.events for signal, d in detectors.items()}
