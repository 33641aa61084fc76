"""Config validation and the file tailer stay light: they read the detectors' and signals'
registries, not the implementations (numpy, scipy, river load only to build detectors)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from exporter.detectors import factory, river_adapter
from exporter.detectors.registry import (
    METHODS,
    METHODS_BY_SIGNAL,
    RIVER_BINARY,
    RIVER_UNIVARIATE,
    DetectorsConfig,
)

HEAVY = ("numpy", "scipy", "river")


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_config_and_tailer_import_no_numerics():
    loaded = _run(f"""
        import sys
        import exporter.config
        import exporter.inputs.file
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    assert loaded == "[]"


def test_check_config_validates_detector_parameters_without_loading_them():
    out = _run(f"""
        import sys
        from exporter.config import ConfigError, parse_config
        parse_config({{"detectors": {{"output_tokens": {{"allowance": 0.5}},
                                      "refusal": {{"ratio": 2.0, "min_events": 3}}}}}})
        try:
            parse_config({{"detectors": {{"output_tokens": {{"allowance": 3}},
                                          "embedding": {{"treshold": 1}}}}}})
        except ConfigError as exc:
            print(exc.errors)
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    errors, loaded = out.splitlines()
    assert errors == str([
        "detectors.output_tokens: invalid parameters: allowance must be a number in [0, 2), got 3",
        "detectors.embedding: invalid parameters: Detector.__init__() got an unexpected "
        "keyword argument 'treshold'",
    ])
    assert loaded == "[]"


def test_river_parameters_are_checked_by_river():
    out = _run("""
        from exporter.config import ConfigError, parse_config
        try:
            parse_config({"detectors": {"output_tokens": {"method": "kswin", "alpha": 2}}})
        except ConfigError as exc:
            print(exc.errors)
    """)
    message = "detectors.output_tokens: invalid parameters: Alpha must be between 0 and 1."
    assert out == str([message])


def test_registry_names_the_river_adapters_methods():
    assert set(RIVER_UNIVARIATE) == set(river_adapter.UNIVARIATE)
    assert set(RIVER_BINARY) == set(river_adapter.BINARY)
    assert {m for methods in METHODS_BY_SIGNAL.values() for m in methods} == set(METHODS)
    for method in METHODS.values():
        assert method.load().__module__ == method.implementation.split(":")[0]


@pytest.mark.parametrize("signal", ["output_tokens", "refusal", "embedding"])
@pytest.mark.parametrize("params", [
    {}, {"allowance": 0.0}, {"allowance": 2}, {"allowance": True}, {"allowance": [1]},
    {"ratio": 1}, {"ratio": 1000}, {"ratio": "3"}, {"min_events": -1}, {"min_events": 1.5},
    {"ratio": 0, "min_events": -1}, {"cache": 1}, {"self": 1}, {"settings": 1}, {"typo": 1},
    {1: 2}, {"window_size": -1},
])
@pytest.mark.parametrize("window_size", [200, -1, 1.5, None])
def test_declared_parameters_are_judged_as_the_detector_judges_them(signal, params, window_size):
    """The registry's check and building the detector raise the same error, or none."""
    section = {"window_size": window_size, signal: params}
    config = DetectorsConfig.from_section(section)

    def outcome(call):
        try:
            call()
        except (TypeError, ValueError) as exc:
            return type(exc), str(exc)
        return None

    built = outcome(lambda: factory.DetectorFactory.from_config(section).make(signal))
    assert outcome(lambda: factory.check(config, signal)) == built
