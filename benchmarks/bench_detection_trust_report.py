"""Tables of the per-stream section (bench_detection_trust.py), with PASS/FAIL against the bars
of issue 12 ("Done when"), so a tuning loop reads its verdict at a glance.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence

import detection_streams as streams
from bench_detection_common import fmt_delay, nearest_rank
from bench_detection_trust import (
    FLAP_BAR,
    GROUP,
    GROUP_BAR,
    WORST_BAR,
    ChangeRun,
    TrustResults,
    river_methods_for,
)

TUNING_SEED_BASE = 0
RIVER_LABELS = {"adwin": "river ADWIN", "page_hinkley": "river PageHinkley", "ddm": "river DDM",
                "eddm": "river EDDM"}
OUR_LABELS = {"tokens": "ours: rank CUSUM", "binary": "ours: Bernoulli CUSUM",
              "embedding": "ours: online MMD"}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def null_row(key: str, runs: Sequence[tuple[int, int, int]]) -> tuple[str, bool]:
    """One table row for an unchanged shape and whether it meets the bar in every group."""
    events = [e for _, e, _ in runs]
    baselines = [b for _, _, b in runs]
    groups = [events[i:i + GROUP] for i in range(0, len(events), GROUP)]
    full = [g for g in groups if len(g) == GROUP]
    worst_total = max((sum(g) for g in full), default=0)
    ok = bool(full) and all(max(g) <= WORST_BAR and sum(g) <= GROUP_BAR for g in full)
    failing = sum(not (max(g) <= WORST_BAR and sum(g) <= GROUP_BAR) for g in full)
    worst = max(events)
    worst_seed = runs[events.index(worst)][0]
    shares = " / ".join(f"{sum(e > k for e in events) / len(events):.0%}" for k in (1, 2, 3))
    spec = streams.SPECS[key]
    status = verdict(ok) if full else "n/a (< 12 streams)"
    if failing:
        status += f" ({failing}/{len(full)} groups)"
    row = (f"| {spec.signal} | {spec.label} | {len(events)} "
           f"| {statistics.median(baselines):,.0f} / {max(baselines):,} | {sum(events)} "
           f"| {sum(events) / len(events) * GROUP:.1f} | {worst_total} "
           f"| {worst} (seed {worst_seed:,}) | {shares} | {status} |")
    return row, ok


def delays(runs: Sequence[int | None]) -> list[float]:
    return [math.inf if d is None else float(d) for d in runs]


def delay_cells(values: list[float], horizon: int) -> str:
    if not values:
        return "n/a | n/a | n/a"
    median = fmt_delay(nearest_rank(values, 0.5), horizon)
    p90 = fmt_delay(nearest_rank(values, 0.9), horizon)
    detected = sum(not math.isinf(v) for v in values) / len(values)
    return f"{median} | {p90} | {detected:.0%}"


def change_row(key: str, runs: Sequence[ChangeRun], change_at: int) -> tuple[str, bool]:
    spec = streams.SPECS[key]
    after = [run.after for run in runs]
    ok = max(after) <= FLAP_BAR
    late = sum(run.baseline > change_at for run in runs)
    note = f"baseline not complete at the change in {late} runs" if late else ""
    row = (f"| {spec.signal} | {spec.label}: {spec.change} | {len(runs)} "
           f"| {statistics.median(after):g} | {max(after)} | {sum(a > FLAP_BAR for a in after)} "
           f"| {sum(run.pre > 0 for run in runs)} "
           f"| {sum(run.in_drift for run in runs)}/{len(runs)} | {verdict(ok)} | {note} |")
    return row, ok


def markdown_trust(results: TrustResults, bars: dict[str, int | None]) -> str:
    cfg, settings = results.cfg, results.settings
    seeds = ("TUNING seeds (base 0: the lead tunes on these)" if cfg.seed_base == TUNING_SEED_BASE
             else f"HELD-OUT seeds (base {cfg.seed_base:,}, not tuned on)")
    lines = [
        "## Per-stream trust (issue 12)",
        "",
        f"Seeds: {seeds}. Detectors from `DetectorFactory` at the default config "
        f"({', '.join(f'{k}={v:,}' for k, v in settings.items())}). {cfg.streams} unchanged "
        f"streams per shape x {cfg.length:,} records after each stream's own baseline; "
        f"{cfg.change_runs} change runs per change (river: {cfg.river_runs}); machine: "
        f"{os.cpu_count()} CPUs, {results.workers} worker processes, "
        f"{platform.python_implementation()} {platform.python_version()}; "
        f"runtime {results.seconds:.0f} s.",
        "",
        f"### 1. False events per stream on unchanged streams ({cfg.length:,} records each)",
        "",
        f"Bar: in every group of {GROUP} streams (consecutive seeds), the worst stream has <= "
        f"{WORST_BAR} false events and the {GROUP} together <= {GROUP_BAR}. Baseline: records "
        f"the baseline took (median / max). Per {GROUP}: total scaled to {GROUP} streams; worst "
        f"{GROUP}: the highest total of a group. Share of streams with > 1 / > 2 / > 3 events.",
        "",
        f"| signal | shape | streams | baseline | events | per {GROUP} | worst {GROUP} "
        "| worst stream | > 1 / > 2 / > 3 | bar |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    tally: dict[str, list[int]] = {}  # signal -> [passed, failed]

    def count(key: str, ok: bool) -> None:
        tally.setdefault(streams.SPECS[key].signal, [0, 0])[0 if ok else 1] += 1

    for key, runs in results.null.items():
        if runs:
            row, ok = null_row(key, runs)
            lines.append(row)
            count(key, ok)
    lines += [
        "",
        f"### 2. Flapping after a persistent change (at record {cfg.change_at:,}, "
        f"{cfg.after:,} records watched)",
        "",
        f"Events from the change on, per run (bar: <= {FLAP_BAR} in every run); runs with "
        "false events before the change; runs still in drift at the end (one episode that "
        "holds while the change holds).",
        "",
        "| signal | stream: change | runs | events median | events max "
        f"| runs > {FLAP_BAR} | runs with pre-change events | in drift at the end | bar "
        "| note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for key, changed in results.changes.items():
        if changed:
            row, ok = change_row(key, changed, cfg.change_at)
            lines.append(row)
            count(key, ok)
    lines += [
        "",
        "### 3. Detection delay at the defaults (same change runs)",
        "",
        "Changed records seen up to the first event at or after the change (1 = the first "
        f"changed record); undetected runs count as > the horizon ({cfg.after:,} for ours, "
        f"{cfg.river_horizon:,} for river, whose detectors run at their defaults on the first "
        f"{cfg.river_runs} runs' records). Pre-change: runs with an alarm before the change.",
        "",
        "| signal | stream: change | detector | runs | median | p90 | detected | pre-change "
        "| bar |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, changed in results.changes.items():
        if not changed:
            continue
        spec = streams.SPECS[key]
        values = delays([run.delay for run in changed])
        bar = bars.get(key)
        if bar is None:
            status = "-"
        else:
            ok = nearest_rank(values, 0.5) <= bar
            status = f"{verdict(ok)} (median <= {bar:,})"
            count(key, ok)
        lines.append(
            f"| {spec.signal} | {spec.label}: {spec.change} | {OUR_LABELS[spec.kind]} "
            f"| {len(changed)} | {delay_cells(values, cfg.after)} "
            f"| {sum(run.pre > 0 for run in changed)} | {status} |")
        for method in river_methods_for(key):
            runs = results.river.get((key, method), [])
            if runs:
                cells = delay_cells(delays([d for d, _ in runs]), cfg.river_horizon)
                lines.append(
                    f"| {spec.signal} | {spec.label}: {spec.change} | {RIVER_LABELS[method]} "
                    f"| {len(runs)} | {cells} | {sum(p > 0 for _, p in runs)} | - |")
    passed, failed = (sum(t[i] for t in tally.values()) for i in (0, 1))
    per_signal = "; ".join(f"{signal} {t[0]} PASS, {t[1]} FAIL" for signal, t in tally.items())
    lines += ["", f"**Trust bars: {passed} PASS, {failed} FAIL** ({per_signal}; {seeds})."]
    return "\n".join(lines) + "\n"
