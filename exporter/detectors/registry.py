"""The detector methods, the signals each may watch, and their parameters: declared, not imported.

The config schema (config_schema.py) and config validation (config.py) read this
module, so checking a config or starting the file tailer does not load numpy,
scipy or river; the factory imports a method's module only to build a detector.
Adding a method: one `Method` here (with its parameters), its module, and its
name in `METHODS_BY_SIGNAL`.

A parameter error reads as the detector's own constructor words it (config.py
prefixes `detectors.<signal>: invalid parameters:`), so a config is judged the
same whether it is checked here or a detector is built from it.
"""

from __future__ import annotations

import importlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from exporter.detectors.base import DetectorSettings
from exporter.detectors.baseline_modes import BaselineMode
from exporter.params import Param


@dataclass(frozen=True)
class Method:
    """A detection method; `implementation` ("module:Class") is imported only to build one."""

    name: str
    implementation: str
    # None: a river detector, whose keyword arguments are river's and checked by river
    params: tuple[Param, ...] | None = ()
    calibrated: bool = True  # takes the shared CalibrationCache after the settings
    windowed: bool = False  # keeps a window of `window_size` observations
    init: str = ""  # the constructor as Python names it in an argument error

    def param(self, name: str) -> Param:
        """The declared parameter `name`: its implementation reads default and check here."""
        assert self.params is not None
        return next(param for param in self.params if param.name == name)

    def load(self) -> type:
        module, name = self.implementation.split(":")
        cls: type = getattr(importlib.import_module(module), name)
        return cls

    def check(self, params: dict[Any, Any], settings: DetectorSettings) -> None:
        """Raise the TypeError or ValueError building the detector would raise, without
        importing it (a method with declared parameters only)."""
        assert self.params is not None
        if not all(isinstance(key, str) for key in params):
            raise TypeError("keywords must be strings")
        bound = ("self", "settings", "cache") if self.calibrated else ("self", "settings")
        declared = {param.name: param for param in self.params}
        for key in params:
            if key in bound:
                raise TypeError(f"{self.init}() got multiple values for argument {key!r}")
            if key not in declared:
                raise TypeError(f"{self.init}() got an unexpected keyword argument {key!r}")
        for name, param in declared.items():
            if name in params:
                param.check(params[name])
        if self.windowed:  # the detector's window: an unusable size fails as it would there
            deque(maxlen=settings.window_size)


_RIVER = "exporter.detectors.river_adapter:RiverDetector"
RIVER_UNIVARIATE = ("adwin", "kswin", "page_hinkley")
RIVER_BINARY = ("ddm", "eddm", "fhddm", "hddm_a", "hddm_w")

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("rank_cusum", "exporter.detectors.rank_cusum:RankCusum",
               # CUSUM reference value k, in standard-normal units (see docs)
               (Param("allowance", float, 0.2, minimum=0.0, maximum=2.0,
                      exclusive_maximum=True),
                # practical-significance floor: an event needs the window's mean or p95
                # to differ from the baseline's by this fraction (0.1 = 10%); 0 = none
                Param("min_effect", float, 0.1, minimum=0.0, maximum=10.0)),
               windowed=True, init="RankCusum.__init__"),
        Method("bernoulli_cusum", "exporter.detectors.bernoulli_cusum:BernoulliCusum",
               (Param("ratio", float, 3.0, minimum=1.0, maximum=1000.0, exclusive_minimum=True),
                Param("min_events", int, 10, minimum=0),
                # practical-significance floor, in percentage points of the rate: an event
                # needs the window's rate to differ from the baseline's by this much; 0 = none
                Param("min_effect", float, 0.5, minimum=0.0, maximum=100.0)),
               windowed=True, init="BernoulliCusum.__init__"),
        # takes no parameters: a typo is an error, not a silently ignored key
        Method("mmd", "exporter.detectors.embedding_mmd:EmbeddingMmd", (), calibrated=False,
               init="Detector.__init__"),
        *(Method(name, _RIVER, None) for name in (*RIVER_UNIVARIATE, *RIVER_BINARY)),
    )
}

SIGNALS = ("output_tokens", "refusal", "format_validity", "embedding")
RATE_SIGNALS = ("refusal", "format_validity")
# the first is the default, chosen by the detection benchmark (benchmarks/bench_detection.py)
METHODS_BY_SIGNAL = {
    "output_tokens": ("rank_cusum", *RIVER_UNIVARIATE),
    "refusal": ("bernoulli_cusum", *RIVER_BINARY, *RIVER_UNIVARIATE),
    "format_validity": ("bernoulli_cusum", *RIVER_BINARY, *RIVER_UNIVARIATE),
    "embedding": ("mmd",),
}
DEFAULT_METHODS = {signal: methods[0] for signal, methods in METHODS_BY_SIGNAL.items()}

# the `detectors` section's settings shared by every method
SETTINGS = (
    Param("expected_run_time", int, DetectorSettings.expected_run_time, minimum=10),
    Param("baseline_size", int, DetectorSettings.baseline_size, minimum=20),
    Param("window_size", int, DetectorSettings.window_size, minimum=1),
)


@dataclass(frozen=True)
class SignalDetectorConfig:
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    baseline: BaselineMode = field(default_factory=BaselineMode)


# methods that can compare with a rolling or seasonal reference (see `references`)
PHASED_METHODS = ("rank_cusum", "bernoulli_cusum", "mmd")


@dataclass(frozen=True)
class DetectorsConfig:
    """The `detectors` config section, decoded (the section is validated first)."""

    settings: DetectorSettings = field(default_factory=DetectorSettings)
    signals: dict[str, SignalDetectorConfig] = field(
        default_factory=lambda: {s: SignalDetectorConfig(DEFAULT_METHODS[s]) for s in SIGNALS}
    )

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> DetectorsConfig:
        settings = DetectorSettings(
            **{p.name: section.get(p.name, p.default) for p in SETTINGS}
        )
        everywhere = BaselineMode.from_section(section.get("baseline"))
        signals = {}
        for signal in SIGNALS:
            spec = dict(section.get(signal) or {})
            own = spec.pop("baseline", None)
            baseline = BaselineMode.from_section(own, everywhere)
            if signal in RATE_SIGNALS and not any(
                    isinstance(part, dict) and "phase" in part
                    for part in (section.get("baseline"), own)):
                baseline = baseline.for_rates()  # no phase set anywhere: the rates' default
            signals[signal] = SignalDetectorConfig(
                method=spec.pop("method", DEFAULT_METHODS[signal]),
                enabled=spec.pop("enabled", True),
                baseline=baseline,
                params=spec,
            )
        return cls(settings=settings, signals=signals)
