"""river's drift detectors behind our Detector interface, for users who know them.

river's detectors flag single observations (edge-triggered) and are not
calibrated to an expected run time: their false-alarm rate depends on the
stream's scale and distribution (see the detection benchmark). The adapter
maps a river detection to score 1.0 and otherwise 0.0, so the level state
and hysteresis of the base class apply unchanged. They learn online from the
first observation; `baseline_ready` turns true after `baseline_size` of them
only so that every method reports readiness the same way.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Sequence
from typing import Any

from river.drift import ADWIN, KSWIN, PageHinkley
from river.drift.binary import DDM, EDDM, FHDDM, HDDMA, HDDMW

from exporter.detectors.base import Detector, DetectorSettings

UNIVARIATE = {"adwin": ADWIN, "kswin": KSWIN, "page_hinkley": PageHinkley}
BINARY = {"ddm": DDM, "eddm": EDDM, "fhddm": FHDDM, "hddm_a": HDDMA, "hddm_w": HDDMW}
RIVER_METHODS = {**UNIVARIATE, **BINARY}


class RiverDetector(Detector):
    kind = "river"

    def __init__(self, settings: DetectorSettings, method: str,
                 params: dict[str, Any] | None = None) -> None:
        if method not in RIVER_METHODS:
            raise ValueError(f"unknown river method {method!r}")
        self.method = method
        self.params = dict(params or {})
        super().__init__(settings)

    def _reset(self) -> None:
        super()._reset()
        self._river = RIVER_METHODS[self.method](**self.params)
        self._seen = 0
        self._last = 0.0

    @property
    def baseline_ready(self) -> bool:
        return self._seen >= self.settings.baseline_size

    def _feed(self, x: Any) -> bool:
        value = bool(x) if self.method in BINARY else float(x)
        self._river.update(value)
        self._seen += 1
        self._last = float(value)
        return bool(self._river.drift_detected)

    def _learn(self, x: Any) -> None:
        self._feed(x)

    def _observe_run(self, xs: Sequence[Any], start: int) -> int:
        return self._observe_each(xs, start, lambda x: 1.0 if self._feed(x) else 0.0)

    def _rearm(self) -> None:
        """river resets itself after each detection; nothing to do."""

    def summary(self) -> dict[str, dict[str, float]]:
        return {"window": {"last": self._last}}

    def _snapshot_state(self) -> dict[str, Any]:
        blob = base64.b64encode(pickle.dumps(self._river)).decode()
        return {"method": self.method, "seen": self._seen, "river": blob}

    def _restore_state(self, state: dict[str, Any]) -> None:
        if state["method"] != self.method:
            raise ValueError(f"snapshot of river {state['method']}, configured {self.method}")
        self._river = pickle.loads(base64.b64decode(state["river"]))
        self._seen = int(state["seen"])
