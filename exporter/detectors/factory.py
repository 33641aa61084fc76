"""Builds the detector that watches each signal, from the `detectors` config section.

Which methods exist, which signals they fit and their parameters are declared in
registry.py; a method's module (numpy, scipy, river) is imported here only when
a detector is built, so config validation and the tailer stay light.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.detectors.base import Detector, DetectorSettings
from exporter.detectors.registry import (
    METHODS,
    PHASED_METHODS,
    SIGNALS,
    DetectorsConfig,
    Method,
    SignalDetectorConfig,
)

if TYPE_CHECKING:
    from exporter.detectors.calibration import CalibrationCache

__all__ = ["SIGNALS", "DetectorFactory", "SignalDetectorConfig", "check"]


def _calibration_cache() -> CalibrationCache:
    from exporter.detectors.calibration import CalibrationCache  # numpy: only to build detectors

    return CalibrationCache()


def check(config: DetectorsConfig, signal: str) -> None:
    """Raise the TypeError or ValueError building `signal`'s detector would raise.

    Declared parameters are checked without importing the method; a river detector is
    built (river checks its own keyword arguments), so only choosing one loads river.
    """
    spec = config.signals[signal]
    if not spec.enabled:
        return
    method = _method(signal, spec)
    if not spec.baseline.fixed and method.name not in PHASED_METHODS:
        raise ValueError(f"a {spec.baseline.mode} baseline needs one of "
                         f"{', '.join(PHASED_METHODS)}; {method.name} keeps a fixed one")
    if method.params is None:
        method.load()(config.settings, spec.method, spec.params)
    else:
        method.check(spec.params, config.settings)


def _method(signal: str, spec: SignalDetectorConfig) -> Method:
    method = METHODS.get(spec.method)
    if method is None:
        raise ValueError(f"unknown detector method {spec.method!r} for {signal}")
    return method


@dataclass
class DetectorFactory:
    settings: DetectorSettings
    signals: dict[str, SignalDetectorConfig]
    cache: CalibrationCache = field(default_factory=_calibration_cache)
    # threshold simulations run here when set (a running exporter), else inline
    executor: Executor | None = None

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> DetectorFactory:
        """From a raw `detectors` section (tests, benchmarks)."""
        config = DetectorsConfig.from_section(section)
        return cls(settings=config.settings, signals=config.signals)

    def make(self, signal: str) -> Detector | None:
        detector = self._make(signal)
        if detector is not None:
            detector.executor = self.executor
            mode = self.signals[signal].baseline
            if not mode.fixed:
                from exporter.detectors.seasonal import Seasons  # numpy: only to build one

                detector.seasons = Seasons(mode, self.settings.baseline_size)
        return detector

    def _make(self, signal: str) -> Detector | None:
        spec = self.signals[signal]
        if not spec.enabled:
            return None
        method = _method(signal, spec)
        cls = method.load()
        if method.params is None:
            return cls(self.settings, spec.method, spec.params)  # type: ignore[no-any-return]
        if method.calibrated:
            return cls(self.settings, self.cache, **spec.params)  # type: ignore[no-any-return]
        return cls(self.settings, **spec.params)  # type: ignore[no-any-return]
