"""Rolling and seasonal baselines from the user's side: the `baseline` config (durations,
validation through the real loader, per-signal overrides) and what the JSON API, the landing
page and /metrics say while a seasonal stream waits for its first period and once it compares.

The config must refuse what would otherwise fail at run time (a river method cannot be
rebased on a phase's reference) and say why in words a user can act on; the API must not
call a stream "ready" while its current phase has nothing to be compared with."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter.config import ConfigError, load_config, parse_config
from exporter.detectors.baseline_modes import MAX_PHASES, BaselineMode, parse_duration, spell
from exporter.detectors.registry import SIGNALS, DetectorsConfig
from exporter.inputs.stats import InputStats
from exporter.service import Exporter
from exporter.web.server import make_app
from tests import samples


def errors_of(detectors: dict[str, Any]) -> list[str]:
    """The loader's errors for a config whose `detectors` section is `detectors`."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"detectors": detectors})
    return caught.value.errors


def baselines(detectors: dict[str, Any]) -> dict[str, BaselineMode]:
    """Each signal's baseline mode as the loader builds it."""
    config = parse_config({"detectors": detectors})
    return {signal: config.detectors.signals[signal].baseline for signal in SIGNALS}


# --- durations -------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800.0), ("24h", 86400.0), ("7d", 604800.0), ("1w", 604800.0), ("45s", 45.0),
    ("1.5h", 5400.0), (" 2h ", 7200.0), ("10 m", 600.0),
    (90, 90.0), (0.5, 0.5), (86400.0, 86400.0),
])
def test_durations_are_read_in_the_units_a_config_writes(text: Any, seconds: float) -> None:
    """Unit suffixes s/m/h/d/w, or plain seconds: `24h` must be a day, not 24 seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "24", "24hours", "24 hours", "h", "", "-1h", "1h30m", "1,5h", "forever", None, [1],
    {"h": 1},
])
def test_text_that_is_not_a_duration_is_refused_with_an_example(text: Any) -> None:
    """A bare `24` in a string is ambiguous (hours? seconds?) and refused, as is anything
    with a unit the parser does not know; the message shows how to write one."""
    with pytest.raises(ValueError, match=r"not a duration: .*\(write e\.g\. 30m, 24h or 7d\)"):
        parse_duration(text)


@pytest.mark.parametrize("value", [0, 0.0, -5, -0.5, "0h", "0s", "0.0m", math.inf, -math.inf,
                                   math.nan])
def test_zero_negative_and_non_finite_durations_are_refused(value: Any) -> None:
    """A period of zero or less (or infinite) would divide by zero or never end a phase."""
    with pytest.raises(ValueError, match="positive"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_durations(value: bool) -> None:
    """YAML `yes` is True, an int to Python: it must not become a one-second period."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)


@pytest.mark.parametrize(("seconds", "text"), [
    (86400.0, "24h"), (3600.0, "1h"), (1800.0, "30m"), (5400.0, "90m"), (604800.0, "1w"),
    (172800.0, "2d"), (90000.0, "25h"), (1209600.0, "2w"), (45.0, "45s"), (0.5, "0.5s"),
])
def test_durations_are_spelled_as_a_config_would_write_them(seconds: float, text: str) -> None:
    """What the API and the saved settings show: a day as `24h` (as users write it), and
    every spelling reads back as the same number of seconds."""
    assert spell(seconds) == text
    assert parse_duration(text) == seconds


# --- validation through the loader -----------------------------------------------------
def test_seasonal_and_rolling_configs_load_from_yaml(tmp_path: Path) -> None:
    """The YAML a user writes (durations as strings and as seconds, a per-signal override)
    is loaded by the real loader into the modes the detectors are built with."""
    path = tmp_path / "config.yaml"
    path.write_text("""
detectors:
  baseline: {mode: seasonal, period: 7d, phase: 1h, min_records: 100}
  refusal:
    baseline: {mode: rolling, period: 21600}
  format_validity:
    method: adwin
    baseline: {mode: fixed}
""")
    config = load_config(path)
    signals = config.detectors.signals
    weekly = BaselineMode("seasonal", 604800.0, 3600.0, 100)
    assert signals["output_tokens"].baseline == weekly and weekly.phases == MAX_PHASES
    assert signals["embedding"].baseline == weekly
    # the override keeps min_records from the section; a rolling baseline has one phase
    assert signals["refusal"].baseline == BaselineMode("rolling", 21600.0, 3600.0, 100)
    assert signals["refusal"].baseline.phases == 1
    assert signals["refusal"].baseline.width == 21600.0
    assert signals["format_validity"].baseline.fixed
    assert signals["format_validity"].method == "adwin"
    assert "baseline" not in signals["refusal"].params  # not passed to the detector


def test_the_default_is_a_fixed_baseline() -> None:
    """No `baseline` key: every signal keeps the fixed baseline it always had."""
    assert all(mode.fixed for mode in baselines({}).values())
    assert baselines({})["output_tokens"] == BaselineMode()


@pytest.mark.parametrize(("section", "message"), [
    ({"mode": "weekly"}, "detectors.baseline: mode must be one of fixed | rolling | seasonal, "
                         "got 'weekly'"),
    ({"mode": "seasonal", "period": "24h", "phase": "7h"},
     "detectors.baseline: period (24h) must be a multiple, at least twice, of phase (7h)"),
    ({"mode": "seasonal", "period": "90m", "phase": "1h"},
     "detectors.baseline: period (90m) must be a multiple, at least twice, of phase (1h)"),
    ({"mode": "seasonal", "period": "7d", "phase": "30m"},
     "detectors.baseline: period / phase is 336 phases; at most 168"),
    ({"mode": "seasonal", "period": "169h", "phase": "1h"},
     "detectors.baseline: period / phase is 169 phases; at most 168"),
    ({"mode": "seasonal", "period": "1h", "phase": "1h"},
     "detectors.baseline: period (1h) must be a multiple, at least twice, of phase (1h)"),
    ({"mode": "seasonal", "period": "1h", "phase": "2h"},
     "detectors.baseline: period (1h) must be a multiple, at least twice, of phase (2h)"),
    ({"mode": "seasonal", "min_records": 0},
     "detectors.baseline: min_records must be an integer >= 1, got 0"),
    ({"mode": "seasonal", "min_records": -3},
     "detectors.baseline: min_records must be an integer >= 1, got -3"),
    ({"mode": "seasonal", "min_records": "64"},
     "detectors.baseline: min_records must be an integer >= 1, got '64'"),
    ({"mode": "seasonal", "min_records": 64.0},
     "detectors.baseline: min_records must be an integer >= 1, got 64.0"),
    ({"mode": "seasonal", "min_records": True},
     "detectors.baseline: min_records must be an integer >= 1, got True"),
    ({"mode": "seasonal", "window": "1h"}, "detectors.baseline: unknown key(s) window"),
    ({"mode": "rolling", "period": "a day"}, "detectors.baseline: not a duration: 'a day'"),
    ({"mode": "rolling", "period": 0}, "detectors.baseline: a duration must be positive"),
    ({"mode": "rolling", "period": float("inf")},
     "detectors.baseline: a duration must be positive"),
], ids=["unknown-mode", "not-a-multiple", "not-a-multiple-90m", "336-phases", "169-phases",
        "phase-equals-period", "phase-beyond-period", "min-records-0", "min-records-negative",
        "min-records-string", "min-records-float", "min-records-bool", "unknown-key",
        "bad-period", "zero-period", "infinite-period"])
def test_a_bad_baseline_is_a_config_error_that_says_why(section: dict[str, Any],
                                                        message: str) -> None:
    """Each mistake is named with its path and the rule it breaks (what `check-config`
    prints), never a traceback at the first record."""
    errors = errors_of({"baseline": section})
    assert any(error.startswith(message) for error in errors), errors


def test_a_bad_baseline_in_a_yaml_file_is_reported_by_load_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("detectors:\n  baseline: {mode: seasonal, period: 24h, phase: 5h}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert ("detectors.baseline: period (24h) must be a multiple, at least twice, of phase (5h)"
            in caught.value.errors)


@pytest.mark.parametrize("signal_method", [
    ("output_tokens", "adwin"), ("output_tokens", "page_hinkley"), ("refusal", "ddm"),
    ("format_validity", "hddm_a"),
])
@pytest.mark.parametrize("where", ["section", "signal"])
def test_a_river_method_with_a_seasonal_baseline_is_a_config_error(
        signal_method: tuple[str, str], where: str) -> None:
    """A river detector keeps a fixed baseline: it has no per-phase reference to be rebased
    on. Asked for a seasonal one (section-wide or for the signal itself), the loader says
    so; otherwise every phase change would fail in the detector at run time."""
    signal, method = signal_method
    seasonal = {"mode": "seasonal", "period": "24h", "phase": "1h"}
    section: dict[str, Any] = {signal: {"method": method}}
    if where == "section":
        section["baseline"] = seasonal
    else:
        section[signal]["baseline"] = seasonal
    errors = errors_of(section)
    assert errors == [f"detectors.{signal}: invalid parameters: a seasonal baseline needs one "
                      f"of rank_cusum, bernoulli_cusum, mmd; {method} keeps a fixed one"]


def test_a_river_method_with_a_rolling_baseline_is_a_config_error() -> None:
    errors = errors_of({"refusal": {"method": "adwin", "baseline": {"mode": "rolling"}}})
    assert errors == ["detectors.refusal: invalid parameters: a rolling baseline needs one of "
                      "rank_cusum, bernoulli_cusum, mmd; adwin keeps a fixed one"]


def test_a_disabled_river_signal_does_not_block_a_seasonal_section() -> None:
    """A signal that is switched off builds no detector, so its method cannot conflict."""
    modes = baselines({"baseline": {"mode": "seasonal"},
                       "output_tokens": {"method": "adwin", "enabled": False}})
    assert modes["refusal"].mode == "seasonal"


def test_a_signal_override_beats_the_section_wide_setting() -> None:
    """The signal's own `baseline` wins key by key; keys it leaves out come from the section
    (not from the defaults): a fixed override lets that signal keep a river method."""
    modes = baselines({
        "baseline": {"mode": "seasonal", "period": "24h", "phase": "2h", "min_records": 80},
        "output_tokens": {"method": "adwin", "baseline": {"mode": "fixed"}},
        "refusal": {"baseline": {"period": "7d"}},
        "embedding": {"baseline": {"mode": "rolling", "period": "6h"}},
    })
    assert modes["output_tokens"].fixed
    assert modes["refusal"] == BaselineMode("seasonal", 604800.0, 7200.0, 80)
    assert modes["embedding"] == BaselineMode("rolling", 21600.0, 7200.0, 80)
    assert modes["format_validity"] == BaselineMode("seasonal", 86400.0, 7200.0, 80)


def test_a_bad_override_names_its_signal_and_the_section_stays_valid() -> None:
    """An override that breaks a rule only with the inherited keys (8d of the section's 1h
    phases: 192 phases) is reported on the signal, not on the section."""
    errors = errors_of({"baseline": {"mode": "seasonal", "period": "24h", "phase": "1h"},
                        "refusal": {"baseline": {"period": "8d"}},
                        "embedding": {"baseline": {"mode": "hourly"}}})
    assert any(e.startswith("detectors.refusal.baseline: period / phase is 192 phases; at most "
                            f"{MAX_PHASES}") for e in errors), errors
    assert any(e.startswith("detectors.embedding.baseline: mode must be one of") for e in errors)
    assert not any(e.startswith("detectors.baseline:") for e in errors), errors
    assert not any("output_tokens" in e or "format_validity" in e for e in errors), errors


def test_a_bad_section_is_reported_once_not_per_signal() -> None:
    """A broken section-wide setting is one error on the section, not one per signal that
    inherits it (nor hidden by a signal whose override would be fine on its own)."""
    errors = errors_of({"baseline": {"mode": "seasonal", "period": "24h", "phase": "7h"},
                        "refusal": {"baseline": {"phase": "1h"}}})
    assert errors == ["detectors.baseline: period (24h) must be a multiple, at least twice, "
                      "of phase (7h)"]


# --- the API, the landing page and /metrics -------------------------------------------
T0 = 1735689600.0  # 2025-01-01T00:00:00Z: aligned to every period used, and in the past
# (a record stamped more than a phase ahead of the wall clock is taken as misdated)
PHASE = 1800.0  # 30m
PER_PHASE = 90  # after a 20-record baseline, the first phase still holds 70 >= 64
API_CONFIG: dict[str, Any] = {
    "inputs": [{"type": "http"}],
    "detectors": {"baseline_size": 20, "window_size": 20, "expected_run_time": 1000,
                  "baseline": {"mode": "seasonal", "period": "2h", "phase": "30m"}},
}


def timed_records(first: int, count: int) -> list[dict[str, Any]]:
    """Records `first..first+count` of a stream with PER_PHASE records a phase, stamped with
    their own time (epoch seconds), day and night phases of different lengths and texts."""
    out = []
    for i in range(first, first + count):
        stamp = T0 + i * PHASE / PER_PHASE
        night = int((stamp - T0) // PHASE) % 2
        text = f"Night note {i % 13} on tides." if night else f"Invoice {i % 11} attached."
        record = samples.chat(text=text)
        record["timestamp"] = stamp
        record["response"]["usage"]["completion_tokens"] = (40 if night else 10) + (i * 7) % 9
        out.append(record)
    return out


Client = Callable[[Exporter], Awaitable[TestClient]]


@pytest.fixture
async def client(aiohttp_client: Any) -> Client:
    """The real HTTP app of an exporter, as test_drift_api.py starts it."""

    async def factory(exporter: Exporter) -> TestClient:
        server = TestServer(make_app(exporter))
        await server.start_server(auto_decompress=False)
        return await aiohttp_client(server)

    return factory


def ingest(exporter: Exporter, records: list[dict[str, Any]]) -> None:
    assert exporter.pipeline.ingest_values(records, InputStats("t", "test")).accepted == len(
        records)
    exporter.pipeline.settle(wait=True)  # thresholds are simulated on a thread


READY = re.compile(r'^llm_drift_baseline_ready\{model="gpt-4o",route="/chat",'
                   r'signal="(\w+)"\} (\S+)$', re.MULTILINE)


async def test_a_seasonal_stream_is_not_ready_until_its_phase_has_a_reference(
        client: Client) -> None:
    """During the first period (baselines learned, every phase summarised) nothing is
    compared: the API says `baseline_ready: false` with the reason, /metrics 0, the landing
    page "learning". Once the stream enters a phase it has seen a period ago, it compares
    with it: ready, what it compares with, /metrics 1, the landing page "ok"."""
    exporter = Exporter(parse_config(API_CONFIG))
    api = await client(exporter)
    ingest(exporter, timed_records(0, 4 * PER_PHASE))  # the whole first period
    document = await (await api.get("/api/v1/streams")).json()
    signals = document["streams"][0]["signals"]
    for signal in ("output_tokens", "refusal", "embedding"):
        view = signals[signal]
        assert view["baseline_ready"] is False, (signal, view)
        assert view["baseline_ready_at"] == 20  # its fixed baseline is learned all the same
        block = view["baseline"]
        assert block["mode"] == "seasonal" and block["period"] == "2h"
        assert block["phase"] == "30m"
        assert "compared_with" not in block
        assert block["reason"] == ("no reference yet for 01:30-02:00 UTC: the same phase of "
                                   "an earlier period has not been seen"), (signal, block)
        assert block["uncompared_records"] == 4 * PER_PHASE - 20
    metrics = dict(READY.findall(await (await api.get("/metrics")).text()))
    assert metrics["output_tokens"] == metrics["refusal"] == metrics["embedding"] == "0.0"
    page = await (await api.get("/")).text()
    assert 'class="learning"' in page and 'class="ok"' not in page
    assert "waiting" in page and "no reference yet" in page  # the reason, on hover

    ingest(exporter, timed_records(4 * PER_PHASE, 10))  # the same phase, a period later
    document = await (await api.get("/api/v1/streams")).json()
    signals = document["streams"][0]["signals"]
    for signal in ("output_tokens", "refusal", "embedding"):
        view = signals[signal]
        assert view["baseline_ready"] is True, (signal, view)
        block = view["baseline"]
        assert "reason" not in block
        assert block["compared_with"] == ("00:00-00:30 UTC on 2025-01-01 and earlier periods, "
                                          "each half as much")
        assert block["reference_records"] == PER_PHASE - 20
    metrics = dict(READY.findall(await (await api.get("/metrics")).text()))
    assert metrics["output_tokens"] == metrics["refusal"] == metrics["embedding"] == "1.0"
    page = await (await api.get("/")).text()
    assert 'class="ok"' in page


async def test_a_fixed_stream_shows_no_baseline_block(client: Client) -> None:
    """The `baseline` block is for rolling and seasonal baselines; a fixed one's view is as
    it was (its readiness is the fixed baseline's)."""
    config = {**API_CONFIG, "detectors": {**API_CONFIG["detectors"], "baseline": {
        "mode": "fixed"}}}
    exporter = Exporter(parse_config(config))
    api = await client(exporter)
    ingest(exporter, timed_records(0, 30))
    document = await (await api.get("/api/v1/streams")).json()
    view = document["streams"][0]["signals"]["output_tokens"]
    assert view["baseline_ready"] is True and "baseline" not in view


@pytest.mark.parametrize(("section", "refusal", "validity", "others"), [
    ({"baseline": {"mode": "seasonal", "period": "24h"}}, 7200.0, 7200.0, 3600.0),
    ({"baseline": {"mode": "seasonal", "period": "7d"}}, 7200.0, 7200.0, 3600.0),
    ({"baseline": {"mode": "seasonal", "period": "24h", "phase": "1h"}}, 3600.0, 3600.0, 3600.0),
    ({"baseline": {"mode": "seasonal", "period": "24h"},
      "refusal": {"baseline": {"phase": "30m"}}}, 1800.0, 7200.0, 3600.0),
    ({"baseline": {"mode": "seasonal", "period": "2h", "phase": "30m"}}, 1800.0, 1800.0, 1800.0),
    ({"baseline": {"mode": "seasonal", "period": "3h"}}, 3600.0, 3600.0, 3600.0),  # no 2 of 2h
])
def test_rates_default_to_two_hour_phases_unless_a_phase_is_set(
        section: dict[str, Any], refusal: float, validity: float, others: float) -> None:
    """A rate needs about twice the records per reference: with no phase set for it,
    refusal and format validity take 2-hour phases; a phase set is kept."""
    config = DetectorsConfig.from_section(section)
    assert config.signals["refusal"].baseline.phase == refusal
    assert config.signals["format_validity"].baseline.phase == validity
    assert config.signals["output_tokens"].baseline.phase == others
    assert config.signals["embedding"].baseline.phase == others
