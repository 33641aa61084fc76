"""Which detector watches which signal, from the `detectors` config section.

Defaults (chosen by the detection benchmark, benchmarks/bench_detection.py):
rank CUSUM for output tokens, Bernoulli CUSUM for refusal and format-validity
rates, online MMD for embeddings. river's detectors can be chosen per signal.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from exporter.detectors.base import Detector, DetectorSettings
from exporter.detectors.bernoulli_cusum import BernoulliCusum
from exporter.detectors.calibration import CalibrationCache
from exporter.detectors.embedding_mmd import EmbeddingMmd
from exporter.detectors.rank_cusum import RankCusum
from exporter.detectors.river_adapter import BINARY, RIVER_METHODS, UNIVARIATE, RiverDetector

SIGNALS = ("output_tokens", "refusal", "format_validity", "embedding")
BINARY_SIGNALS = ("refusal", "format_validity")
DEFAULT_METHODS = {
    "output_tokens": "rank_cusum",
    "refusal": "bernoulli_cusum",
    "format_validity": "bernoulli_cusum",
    "embedding": "mmd",
}
METHODS_BY_SIGNAL = {
    "output_tokens": ("rank_cusum", *UNIVARIATE),
    "refusal": ("bernoulli_cusum", *BINARY, *UNIVARIATE),
    "format_validity": ("bernoulli_cusum", *BINARY, *UNIVARIATE),
    "embedding": ("mmd",),
}


@dataclass(frozen=True)
class SignalDetectorConfig:
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass
class DetectorFactory:
    settings: DetectorSettings
    signals: dict[str, SignalDetectorConfig]
    cache: CalibrationCache = field(default_factory=CalibrationCache)
    # threshold simulations run here when set (a running exporter), else inline
    executor: Executor | None = None

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> DetectorFactory:
        settings = DetectorSettings(
            expected_run_time=section.get("expected_run_time", 100_000),
            baseline_size=section.get("baseline_size", 1000),
            window_size=section.get("window_size", 200),
        )
        signals = {}
        for signal in SIGNALS:
            spec = dict(section.get(signal) or {})
            signals[signal] = SignalDetectorConfig(
                method=spec.pop("method", DEFAULT_METHODS[signal]),
                enabled=spec.pop("enabled", True),
                params=spec,
            )
        return cls(settings=settings, signals=signals)

    def make(self, signal: str) -> Detector | None:
        detector = self._make(signal)
        if detector is not None:
            detector.executor = self.executor
        return detector

    def _make(self, signal: str) -> Detector | None:
        spec = self.signals[signal]
        if not spec.enabled:
            return None
        if spec.method == "rank_cusum":
            return RankCusum(self.settings, self.cache, **spec.params)
        if spec.method == "bernoulli_cusum":
            return BernoulliCusum(self.settings, self.cache, **spec.params)
        if spec.method == "mmd":
            return EmbeddingMmd(self.settings, **spec.params)  # takes none: typos are errors
        if spec.method in RIVER_METHODS:
            return RiverDetector(self.settings, spec.method, spec.params)
        raise ValueError(f"unknown detector method {spec.method!r} for {signal}")
