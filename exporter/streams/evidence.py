"""Example outputs kept per stream, so a drift alert can show *what* changed.

A reservoir sample of the outputs seen while the baseline was learned, and
the most recent outputs, each truncated. In memory only and switchable off
(`evidence.enabled: false`) because outputs may hold personal data.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from exporter.config import EvidenceConfig
from exporter.signals.embedding import top_features


class Evidence:
    def __init__(self, settings: EvidenceConfig, baseline_size: int, seed: int = 0) -> None:
        self.settings = settings
        self.baseline_size = baseline_size
        self._rng = random.Random(seed)
        self.reset_baseline()
        self.window: deque[str] = deque(maxlen=settings.texts)

    def reset_baseline(self) -> None:
        self.baseline: list[str] = []
        self._baseline_seen = 0

    def baseline_complete(self) -> None:
        """After a restart from saved detector state the baseline is long learned: new
        outputs belong to the window, not to a new baseline sample."""
        self._baseline_seen = self.baseline_size

    def _clip(self, text: str) -> str:
        # "...", not "…": one non-Latin-1 character makes Python store the whole string at
        # two bytes a character, and these texts are most of a stream's memory
        limit = self.settings.max_chars
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def add(self, text: str) -> None:
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

    def add_many(self, texts: Sequence[str]) -> None:
        """`add` of each, in order; once the baseline sample is taken only the latest texts
        can stay in the window, so only those are clipped and kept."""
        learning = 0
        while learning < len(texts) and self._baseline_seen < self.baseline_size:
            self.add(texts[learning])
            learning += 1
        if self.window.maxlen:
            kept = max(learning, len(texts) - self.window.maxlen)
            self.window.extend(self._clip(text) for text in texts[kept:])

    def examples(self) -> dict[str, list[str]]:
        count = self.settings.examples
        return {"baseline": self.baseline[:count], "window": list(self.window)[-count:]}

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
