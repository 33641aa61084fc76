"""What a detector compares its window with: the `baseline` setting, decoded.

- `fixed`: the stream's first `baseline_size` observations, kept until a reset.
- `rolling`: the previous `period` (a single phase): the reference moves on by itself, lagged
  by a full period so that a slow change is still seen.
- `seasonal`: the same phase of earlier periods (`phase` wide, `period` long: with `24h`
  and `1h`, 09:00-10:00 is compared with 09:00-10:00 of earlier days; with `7d`, of the
  same weekday).

Read by the config checks and the registry, so it imports nothing heavy; the references
themselves are kept by `seasonal.Seasons`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

MODES = ("fixed", "rolling", "seasonal")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_PHASES = 168  # a week of hourly phases: the per-phase memory bound is stated for it
# Earlier periods count half as much as the next one in a seasonal reference: the reference
# of a phase holds about two periods of records, and an intended change is the reference
# after two or three periods (a reset makes it sooner).
SEASONAL_KEEP = 0.5
DEFAULT_MIN_RECORDS = 64
# A rate needs about twice the records of a length or a topic mix to be as sure of (2% of
# an hour's 400 records is 8 events): seasonal rates default to two-hour phases
# (benchmarks/bench_seasonal.py: refusals 2% -> 6% found within 1,057 records instead of
# 1,543 at worst, and no more false events).
RATE_PHASE = 7200.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: Any) -> float:
    """Seconds in `30m`, `24h`, `7d` (units s, m, h, d, w), or a number of seconds."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if match is None:
            raise ValueError(f"not a duration: {text!r} (write e.g. 30m, 24h or 7d)")
        seconds = float(match.group(1)) * UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return seconds


def spell(seconds: float) -> str:
    """A duration as the config would write it (`24h`, `90m`)."""
    for unit in ("w", "d", "h", "m"):
        if unit == "d" and seconds < 2 * UNITS["d"] and seconds % UNITS["h"] == 0:
            continue  # 24h, not 1d
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class BaselineMode:
    mode: str = "fixed"
    period: float = 86400.0  # seconds
    phase: float = 3600.0  # seconds; a rolling baseline has one phase of `period`
    min_records: int = DEFAULT_MIN_RECORDS  # a phase with fewer is not compared

    @property
    def fixed(self) -> bool:
        return self.mode == "fixed"

    @property
    def width(self) -> float:
        """Seconds of one phase."""
        return self.period if self.mode == "rolling" else self.phase

    @property
    def phases(self) -> int:
        return 1 if self.mode == "rolling" else round(self.period / self.phase)

    @property
    def keep(self) -> float:
        """Weight of the older periods in a phase's reference (rolling: none)."""
        return 0.0 if self.mode == "rolling" else SEASONAL_KEEP

    def for_rates(self) -> BaselineMode:
        """The default for a rate signal when no phase is set: RATE_PHASE, where the
        period holds at least two of them."""
        if self.mode != "seasonal" or self.period % RATE_PHASE or self.period < 2 * RATE_PHASE:
            return self
        return BaselineMode(self.mode, self.period, RATE_PHASE, self.min_records)

    def described(self) -> dict[str, Any]:
        """As saved with the state and shown by the API (durations spelled)."""
        if self.fixed:
            return {"mode": "fixed"}
        out: dict[str, Any] = {"mode": self.mode, "period": spell(self.period)}
        if self.mode == "seasonal":
            out["phase"] = spell(self.phase)
        out["min_records"] = self.min_records
        return out

    @classmethod
    def from_section(cls, section: dict[str, Any] | None,
                     inherited: BaselineMode | None = None) -> BaselineMode:
        """From a `baseline` mapping (keys missing: those of `inherited`, the section-wide
        setting a signal's own overrides). Raises ValueError with the reason."""
        base = inherited or cls()
        section = section or {}
        if not isinstance(section, dict):
            raise ValueError(f"must be a mapping such as {{mode: seasonal, period: 24h}}, "
                             f"got {section!r}")
        unknown = set(section) - {"mode", "period", "phase", "min_records"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
        mode = section.get("mode", base.mode)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {' | '.join(MODES)}, got {mode!r}")
        period = parse_duration(section["period"]) if "period" in section else base.period
        phase = parse_duration(section["phase"]) if "phase" in section else base.phase
        min_records = section.get("min_records", base.min_records)
        if isinstance(min_records, bool) or not isinstance(min_records, int) or min_records < 1:
            raise ValueError(f"min_records must be an integer >= 1, got {min_records!r}")
        if mode == "rolling" and "phase" in section:
            raise ValueError("phase is for mode seasonal; a rolling baseline compares with "
                             "the whole previous period")
        made = cls(mode, period, phase, min_records)
        if min(period, phase) < 60:
            raise ValueError("period and phase must be at least 1m")
        if mode == "seasonal":
            count = period / phase
            if abs(count - round(count)) > 1e-9 or round(count) < 2:
                raise ValueError(f"period ({spell(period)}) must be a multiple, at least "
                                 f"twice, of phase ({spell(phase)})")
            if round(count) > MAX_PHASES:
                raise ValueError(f"period / phase is {round(count)} phases; at most "
                                 f"{MAX_PHASES} (e.g. 7d of 1h): use a wider phase")
        return made
