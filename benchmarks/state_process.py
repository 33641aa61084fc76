"""bench_state.py `--process`: the real exporter with `state_dir` on and off, in turn.

Each run starts `python -m exporter run --config ...` (tests/process.py) on a new directory,
tailing one file (poll_interval 10 ms) of `streams` streams that are all learning their
baselines (state_feed.py's records, round-robin: every stream changes between two
checkpoints), appends `records` lines in one write, and scrapes /metrics every 0.1 s from
another thread until every record is accounted (bench_latency.py's scraper): the /metrics
response times while ingesting at full speed, the drain time, and the exporter's CPU
(utime+stime of the process and its children, from /proc). Runs alternate off, on, off, on,
... so the machine's noise falls on both alike. With `state_dir` the exporter saves as it
ships: every `max(20 ms, cost / 2%)` s, at most `checkpoint_interval` (1 s) apart.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import calibration_streams as cs
import yaml
from bench_latency import (
    ROOT,
    Scraper,
    append,
    cpu_seconds,
    git_state,
    wait_accounted,
    with_scraping,
)
from state_feed import INPUT, Feed, mib, ms, percentile

from tests.process import ExporterProcess

SETTLED = 3.0  # s: scrapes after this far into the drain are counted apart


def _config(directory: Path, data: Path, streams: int, state: bool, quick: bool) -> Path:
    raw: dict[str, Any] = {
        "inputs": [{"type": "file", "name": INPUT, "paths": [str(data)],
                    "start_at": "beginning", "poll_interval": 0.01}],
        "max_streams": streams + 10,
        "signals": {"format_validity": [{"expect": "regex", "pattern": cs.FORMAT_PATTERN}]},
    }
    if quick:
        raw["detectors"] = {"baseline_size": 200}
    if state:
        raw["state_dir"] = str(directory / "state")
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name}(?:{{[^\n]*}})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else float("nan")


def one_run(workdir: Path, lines: list[bytes], streams: int, state: bool,
            quick: bool) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    data = workdir / "records.jsonl"
    data.touch()
    config = _config(workdir, data, streams, state, quick)
    exporter = ExporterProcess(["run", "--config", str(config)], workdir / "exporter.log")
    try:
        exporter.wait_ready()
        pid = exporter.process.pid
        scraper = Scraper(exporter.port)
        idle = [scraper.get()[0] for _ in range(10)]
        log, finish = with_scraping(exporter.port, 0.1)
        time.sleep(0.3)
        cpu0, started = cpu_seconds(pid), time.perf_counter()
        append(data, lines)
        done = wait_accounted(log, len(lines), 900)
        cpu = cpu_seconds(pid) - cpu0
        time.sleep(1.5)  # the last checkpoint of the drain
        scraped = finish()
        scrapes = scraped.seconds(started, done)
        slow = [(at - took - started, took) for at, took, _, _ in scraped.seen
                if started <= at <= done and took > 0.25]
        later = scraped.seconds(started + SETTLED, done)
        _, text = scraper.get()
    finally:
        stopped = time.perf_counter()
        code = exporter.stop(60)
        stop_seconds = time.perf_counter() - stopped
    problems = [line for line in (workdir / "exporter.log").read_text(errors="replace")
                .splitlines() if "ERROR" in line or "Traceback" in line]
    result = {
        "state": state, "seconds": done - started, "records": len(lines), "cpu": cpu,
        "scrapes": scrapes, "idle": idle, "slow": slow, "later": later, "code": code,
        "stop": stop_seconds,
        "saves": _gauge(text, "llm_exporter_state_saves_total"),
        "failures": _gauge(text, "llm_exporter_state_save_failures_total"),
        "size": _gauge(text, "llm_exporter_state_size_bytes"), "problems": problems,
    }
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def process_section(out: Any, streams: int, rounds: int, records: int | None, workdir: Path,
                    quick: bool) -> None:
    per_stream = (records // streams) if records else (100 if quick else 200)
    feed = Feed(streams, streams)
    lines = [line for _ in range(per_stream) for line in feed.next_batch()]
    os.chdir(ROOT)
    runs = []
    for r in range(rounds):
        for state in (False, True):
            print(f"  process round {r + 1}: state_dir {'on' if state else 'off'}, "
                  f"{len(lines):,} records of {streams:,} learning streams ...", flush=True)
            runs.append(one_run(workdir / f"run-{len(runs)}", lines, streams, state, quick))
    out(f"\n### The real exporter: state_dir off and on in turn ({streams:,} learning streams, "
        f"{len(lines):,} records appended at once, /metrics scraped every 0.1 s meanwhile)\n")
    out(f"{git_state()}. Scrapes: all of the drain's, and those after its first {SETTLED:.0f} s "
        "(when the streams are created). Saves: checkpoints committed per second of drain.\n")
    out("| run | state_dir | drain s | records/s | CPU s / 1,000 records | scrapes | p50 ms | "
        f"p99 ms | max ms | over 250 ms | after {SETTLED:.0f} s: p99 / max ms | saves / s | "
        "store MiB | stop s |")
    out("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |")
    for i, x in enumerate(runs):
        s = x["scrapes"]
        saves = "" if not x["state"] else f"{x['saves'] / x['seconds']:,.1f}"
        later = x["later"]
        size = "" if not x["state"] else mib(x["size"])
        out(f"| {i + 1} | {'on' if x['state'] else 'off'} | {x['seconds']:.1f} | "
            f"{x['records'] / x['seconds']:,.0f} | {x['cpu'] / x['records'] * 1000:.3f} | "
            f"{len(s)} | {ms(percentile(s, 50))} | {ms(percentile(s, 99))} | "
            f"{ms(max(s) if s else float('nan'))} | {sum(v > 0.25 for v in s)} | "
            f"{ms(percentile(later, 99))} / {ms(max(later) if later else float('nan'))} | "
            f"{saves} | {size} | {x['stop']:.1f} |")
    on = [x for x in runs if x["state"]]
    off = [x for x in runs if not x["state"]]

    def median(rows: list[dict[str, Any]], key: Any) -> float:
        return statistics.median(key(x) for x in rows)

    cpu = median(on, lambda x: x["cpu"] / x["records"]) / median(
        off, lambda x: x["cpu"] / x["records"])
    speed = median(on, lambda x: x["records"] / x["seconds"]) / median(
        off, lambda x: x["records"] / x["seconds"])
    pooled_on = [v for x in on for v in x["scrapes"]]
    pooled_off = [v for x in off for v in x["scrapes"]]
    idle = [v for x in runs for v in x["idle"]]
    out(f"\nOn / off (medians over rounds): CPU per record {cpu:.3f}x, throughput {speed:.3f}x; "
        f"scrapes pooled: p50 {ms(percentile(pooled_on, 50))} vs "
        f"{ms(percentile(pooled_off, 50))} ms, p99 {ms(percentile(pooled_on, 99))} vs "
        f"{ms(percentile(pooled_off, 99))} ms, max {ms(max(pooled_on))} vs "
        f"{ms(max(pooled_off))} ms. Idle scrape p50 {ms(percentile(idle, 50))} ms.")
    for i, x in enumerate(runs):
        if x["slow"]:
            out(f"\nrun {i + 1}: scrapes over 250 ms sent at " + ", ".join(
                f"{sent:.1f} s ({ms(took)} ms)" for sent, took in x["slow"][:8]) + " of the drain")
    for x in runs:
        for line in x["problems"][:3]:
            out(f"\nlog ({'on' if x['state'] else 'off'}): {line}")
        if x["code"] != 0 or (x["state"] and x["failures"]):
            out(f"\nexit code {x['code']}, save failures {x['failures']}")
