"""The averages section of the detection benchmark (see bench_detection.py's docstring): runs the
tasks of bench_detection_runs.py in worker processes and writes its tables.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import detection_streams as streams
from bench_detection_common import Runner, chunks, fmt_delay, nearest_rank, poisson_interval
from bench_detection_runs import (
    CALIBRATION_ERT,
    CALIBRATION_STREAMS,
    DEFAULT_ERT,
    MAIN_STREAMS,
    MATCHED,
    MEDIUM,
    OUR_LABELS,
    RIVER_LABELS,
    SLOW,
    Config,
    measure_cost,
    our_method,
    river_methods,
    task_ours_change,
    task_ours_unchanged,
    task_river_change,
    task_river_search,
    task_river_unchanged,
    tokenizer_reference_us,
)


@dataclass
class Row:
    key: str
    detector: str
    setting: str
    events: int = 0
    records: int = 0
    streams: int = 0
    armed: int | None = None  # our detectors: records not in drift on the unchanged streams
    runs: list[tuple[int | None, int]] = field(default_factory=list)
    note: str = ""

    def rate(self) -> float:
        return self.events / self.records * 1e5 if self.records else math.nan

    def delays(self) -> list[float]:
        return [math.inf if d is None else float(d) for d, _ in self.runs]



def fmt_rate(row: Row) -> str:
    if not row.records:
        return "n/a"
    low, high = poisson_interval(row.events)
    scale = 1e5 / row.records
    return f"{row.rate():.3g} ({low * scale:.2g}-{high * scale:.2g})"


@dataclass
class Results:
    cfg: Config
    rows: list[Row]
    calibration: list[dict[str, Any]]
    costs: dict[str, dict[str, float]]
    tokenizer_us: float | None
    seconds: float
    workers: int


# rough µs per record, only to submit the longest tasks first
_US = {"rank_cusum": 4.0, "bernoulli_cusum": 1.5, "mmd": 12.0, "kswin": 250.0, "hddm_a": 6.0}
_CALIBRATION_S = {"mmd": 0.7}


@dataclass
class _Job:
    cost: float
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    row: Row | None
    what: str  # "null" | "change" | "calibration"


def run_benchmark(cfg: Config, workers: int = 1, keys: Iterable[str] = MAIN_STREAMS,
                  calibration_keys: Iterable[str] = CALIBRATION_STREAMS,
                  progress: Callable[[str], None] | None = None,
                  tokenizer: bool = True) -> Results:
    """Everything the tables need; `tokenizer=False` skips the tokenizer reference."""
    started = time.perf_counter()
    say = progress or (lambda _message: None)
    keys, calibration_keys = tuple(keys), tuple(calibration_keys)
    if "embedding" in keys or "embedding" in calibration_keys:
        say(f"embedding {cfg.pool_size:,} texts per topic")
        streams.embedding_pool(cfg.pool_size)  # before the workers fork, so they share it

    costs = {}  # first, alone on the machine
    for key in keys:
        method = our_method(key)
        if method not in costs:
            costs[method] = measure_cost(key, cfg)
            say(f"cost {OUR_LABELS[method]}: {costs[method]}")
    tokenizer_us = tokenizer_reference_us(repeats=cfg.repeats) if tokenizer else None

    parts = 4 * workers  # tasks per experiment: small enough to balance the workers
    null_seeds = cfg.seed_list(cfg.seeds)
    change_seeds = cfg.seed_list(cfg.change_runs)
    change_length = cfg.change_at + cfg.horizon // 2  # a guess, for ordering only
    rows: list[Row] = []
    jobs: list[_Job] = []
    matched: list[tuple[Row, str]] = []

    def add_runs(row: Row, method: str, seeds: list[int], length: int, null: Callable[..., Any],
                 change: Callable[..., Any], change_runs: list[int], *head: Any) -> None:
        us, calibration = _US.get(method, 0.5), _CALIBRATION_S.get(method, 0.0)
        for part in chunks(seeds, math.ceil(len(seeds) / parts)):
            cost = len(part) * ((cfg.baseline_size + length) * us * 1e-6 + calibration)
            jobs.append(_Job(cost, null, (*head, part, cfg, *_tail(null, length)), row, "null"))
        for part in chunks(change_runs, math.ceil(len(change_runs) / parts)):
            cost = len(part) * (change_length * us * 1e-6 + calibration)
            jobs.append(_Job(cost, change, (*head, part, cfg), row, "change"))

    for key in keys:
        method = our_method(key)
        row = Row(key, OUR_LABELS[method], f"expected_run_time={DEFAULT_ERT:,}")
        rows.append(row)
        add_runs(row, method, null_seeds, cfg.null_length, task_ours_unchanged,
                 task_ours_change, change_seeds, key)
        for method in river_methods(key):
            seeds, length, runs, note = _river_counts(cfg, method)
            if not seeds:
                continue
            row = Row(key, RIVER_LABELS[method], "defaults", note=note)
            rows.append(row)
            add_runs(row, method, seeds, length, task_river_unchanged, task_river_change, runs,
                     key, method, {})
        for method in MATCHED:
            row = Row(key, RIVER_LABELS[method], "matched")
            rows.append(row)
            matched.append((row, method))
    for key in calibration_keys:
        method = our_method(key)
        length = (cfg.calibration_length_embedding if streams.SPECS[key].kind == "embedding"
                  else cfg.calibration_length)
        us, calibration = _US.get(method, 0.5), _CALIBRATION_S.get(method, 0.0) / 2
        for part in chunks(null_seeds, math.ceil(len(null_seeds) / parts)):
            cost = len(part) * ((cfg.baseline_size + length) * us * 1e-6 + calibration)
            jobs.append(_Job(cost, task_ours_unchanged,
                             (key, part, cfg, CALIBRATION_ERT, length, "calibration"), None,
                             "calibration"))

    runner = Runner(workers)
    # searches first: their change runs can only start when they are done
    searches = {runner.submit(task_river_search, row.key, method, null_seeds, cfg,
                              cfg.null_length): (row, method) for row, method in matched}
    submitted = [(runner.submit(job.fn, *job.args), job)
                 for job in sorted(jobs, key=lambda job: -job.cost)]
    for future in cf.as_completed(searches):
        row, method = searches[future]
        found = future.result()
        value = next(iter(found["params"].values()))
        row.setting = f"{next(iter(found['params']))}={value:.2g}"
        row.setting += " (matched)" if found["found"] else " (none met the budget)"
        row.events, row.records, row.streams = found["events"], found["records"], found["streams"]
        row.note = f"searched on half of these streams; {found['evaluations']} settings tried"
        say(f"matched {row.key} {row.detector}: {row.setting}, {row.events} events")
        for part in chunks(change_seeds, math.ceil(len(change_seeds) / parts)):
            job = _Job(0.0, task_river_change, (row.key, method, found["params"], part, cfg),
                       row, "change")
            submitted.append((runner.submit(job.fn, *job.args), job))
    calibration: dict[str, dict[str, Any]] = {}
    for future, job in submitted:
        result = future.result()
        if job.what == "calibration":
            key = job.args[0]
            total = calibration.setdefault(
                key, {"key": key, "events": 0, "armed": 0, "records": 0, "streams": 0})
            for name in ("events", "armed", "records", "streams"):
                total[name] += result[name]
        elif job.what == "null":
            assert job.row is not None
            job.row.events += result["events"]
            job.row.records += result["records"]
            job.row.streams += result["streams"]
            if "armed" in result:
                job.row.armed = (job.row.armed or 0) + result["armed"]
        else:
            assert job.row is not None
            job.row.runs.extend(result)
    runner.close()
    say("done")
    return Results(cfg, rows, [calibration[k] for k in calibration_keys], costs, tokenizer_us,
                   time.perf_counter() - started, workers)


def _river_counts(cfg: Config, method: str) -> tuple[list[int], int, list[int], str]:
    """(unchanged-stream seeds, their length, change-run seeds, note) for a river method."""
    if method in SLOW:
        return (cfg.seed_list(cfg.slow_seeds), cfg.slow_null_length,
                cfg.seed_list(cfg.slow_change_runs), "fewer records (slow)")
    if method in MEDIUM:
        return (cfg.seed_list(max(1, cfg.seeds // 4)), cfg.null_length,
                cfg.seed_list(max(1, cfg.change_runs // 2)), "fewer records (slow)")
    return cfg.seed_list(cfg.seeds), cfg.null_length, cfg.seed_list(cfg.change_runs), ""


def _tail(null: Callable[..., Any], length: int) -> tuple[Any, ...]:
    """The arguments after (..., seeds, cfg) of an unchanged-stream task."""
    return (DEFAULT_ERT, length) if null is task_ours_unchanged else (length,)


# --- report ----------------------------------------------------------------------------------
def markdown(results: Results) -> str:
    cfg = results.cfg
    slow = (f"KSWIN: {cfg.slow_seeds} x {cfg.slow_null_length:,} and {cfg.slow_change_runs} "
            "change runs" if cfg.slow_seeds else "KSWIN left out")
    slow += f"; HDDM_A: {max(1, cfg.seeds // 4)} x {cfg.null_length:,} and "
    slow += f"{max(1, cfg.change_runs // 2)} change runs"
    lines = [
        "## Detection benchmark",
        "",
        f"`python benchmarks/bench_detection.py` — {cfg.seeds} seeds (from seed "
        f"{cfg.seed_base:,}); unchanged streams "
        f"{cfg.seeds} x {cfg.null_length:,} records after a {cfg.baseline_size:,}-record "
        f"baseline per signal ({slow}); {cfg.change_runs} change runs per signal, change at "
        f"record {cfg.change_at:,}, horizon {cfg.horizon:,}; machine: {os.cpu_count()} CPUs "
        f"(nproc), {results.workers} worker processes, {platform.python_implementation()} "
        f"{platform.python_version()}; total runtime {results.seconds:.0f} s.",
        "",
        f"### False events and delay at expected_run_time={DEFAULT_ERT:,}",
        "",
        "False events per 100k: on unchanged streams, with the 95% Poisson interval. Delay: "
        "changed records seen up to the first detection (median, p90; undetected runs count as "
        f"> {cfg.horizon:,}). Pre-change: runs with a false alarm between the baseline and the "
        "change. Note on our detectors: mean records in drift per false event (until re-armed).",
        "",
        "| signal (change) | detector | setting | unchanged records | false events "
        "| per 100k (95% CI) | median delay | p90 delay "
        f"| detected <= {cfg.horizon:,} | pre-change alarms | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results.rows:
        spec = streams.SPECS[row.key]
        delays = row.delays()
        if delays:
            median = fmt_delay(nearest_rank(delays, 0.5), cfg.horizon)
            p90 = fmt_delay(nearest_rank(delays, 0.9), cfg.horizon)
            within = sum(d <= cfg.horizon for d in delays) / len(delays)
            detected = f"{within:.0%}"
            pre = f"{sum(p > 0 for _, p in row.runs)}/{len(row.runs)}"
        else:
            median = p90 = detected = pre = "n/a"
        note = row.note
        if row.armed is not None and row.events:
            note = f"false events last {(row.records - row.armed) / row.events:,.0f} records"
        lines.append(
            f"| {spec.label} ({spec.change}) | {row.detector} | {row.setting} "
            f"| {row.records:,} | {row.events:,} | {fmt_rate(row)} | {median} | {p90} "
            f"| {detected} | {pre} | {note} |"
        )
    lines += [
        "",
        f"### Calibration at expected_run_time={CALIBRATION_ERT:,}",
        "",
        "Each seed learns its own baseline (a new detector per seed). Mean run length = "
        "records armed (not in drift) / events; target: at least 1,000 with >= 30 events "
        "(the threshold guarantees the target on 9 streams in 10, so the mean over streams is "
        "above it; the practical floors remove more). "
        "Drift episode: mean records from a false event until the detector re-armed.",
        "",
        "| stream | detector | seeds | records | armed | events | mean run length | ratio "
        "| target met | drift episode |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for c in results.calibration:
        spec = streams.SPECS[c["key"]]
        run_length = c["armed"] / c["events"] if c["events"] else math.inf
        ratio = run_length / CALIBRATION_ERT
        met = c["events"] >= 30 and ratio >= 1.0
        verdict = "yes" if met else ("too few events" if c["events"] < 30 else "no")
        episode = (f"{(c['records'] - c['armed']) / c['events']:,.0f}" if c["events"]
                   else "n/a")
        lines.append(
            f"| {spec.label} | {OUR_LABELS[our_method(c['key'])]} | {c['streams']} "
            f"| {c['records']:,} | {c['armed']:,} | {c['events']:,} | {run_length:,.0f} "
            f"| {ratio:.2f} | {verdict} | {episode} |"
        )
    lines += [
        "",
        "### Cost",
        "",
        f"update() after calibration, one process; calibration at "
        f"expected_run_time={DEFAULT_ERT:,} with an empty cache (rank and Bernoulli "
        "thresholds are then cached and shared by every stream with the same baseline size "
        "and count; MMD calibrates each stream).",
        "",
        "| detector | µs per record | calibration (s) |",
        "|---|---:|---:|",
    ]
    for method, cost in results.costs.items():
        lines.append(f"| {OUR_LABELS[method]} | {cost['us_per_record']:.1f} "
                     f"| {cost['calibration_s']:.2f} |")
    if results.tokenizer_us is not None:
        lines += ["", f"For scale: counting the tokens of a ~200-token reply with the "
                      f"exporter's TokenCounter takes {results.tokenizer_us:.1f} µs."]
    return "\n".join(lines) + "\n"

