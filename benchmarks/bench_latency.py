"""File-to-/metrics latency, maximum throughput, CPU per record and scrape delays, end to end.

Runs the real exporter (`python -m exporter run --config ...`, as a user
does) on loopback, tailing one temporary JSON-lines file (poll_interval
10 ms), and talks to it only through the file and HTTP:

0. warm-up: `--warm-up` records (mixed shapes, the 4 streams of
   bench_throughput.py's `record()`) so every stream's baselines are learned
   and calibrated; /metrics is scraped throughout (calibration runs here);
1. drain: `--records` more records appended in one write; the time until
   `llm_exporter_input_records_total` accounts them all gives the maximum
   throughput, and the exporter's CPU time (utime+stime from /proc, its
   child processes included) over the drain the CPU seconds per 1,000
   records; /metrics is scraped every `--scrape-gap` s meanwhile and each
   response time recorded (how much ingestion delays a scrape);
2. latency: for `--duration` s, records are appended at `--load` (default
   80%) of that throughput in batches every `--batch-interval` s, and a probe
   record on its own stream (route `/probe`) every `--probe-interval` s
   (jittered); /metrics is polled every `--poll-gap` s and a probe's latency
   is the time from the end of its write() to the end of the first
   response that counts it (an upper bound; resolution: one poll gap plus
   one scrape).

At the end every record written must be accounted and none rejected.

    python benchmarks/bench_latency.py [--records 20000] [--duration 60]
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_throughput import record  # noqa: E402

from tests.process import ExporterProcess  # noqa: E402

INPUT = "bench"
TICKS = os.sysconf("SC_CLK_TCK")


# --- the exporter process, seen from outside ----------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime+stime of `pid`, its live descendants, and its reaped children."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    reaped = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(entry.name)
        parents[child] = int(fields[1])
        times[child] = (int(fields[11]) + int(fields[12])) / TICKS
        if child == pid:
            reaped = (int(fields[13]) + int(fields[14])) / TICKS

    def descends(p: int) -> bool:
        while p > 1:
            if p == pid:
                return True
            p = parents.get(p, 0)
        return False

    return reaped + sum(t for p, t in times.items() if descends(p))


def status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def counter(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


class Scraper:
    """One keep-alive connection; `get()` returns (seconds, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str = "/metrics") -> tuple[float, str]:
        started = time.perf_counter()
        try:
            self.connection.request("GET", path)
            response = self.connection.getresponse()
            body = response.read()
        except (http.client.HTTPException, OSError):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.connection.request("GET", path)
            response = self.connection.getresponse()
            body = response.read()
        return time.perf_counter() - started, body.decode()


@dataclass
class ScrapeLog:
    """Scrape response times and what each response said, filled by a background thread."""

    # (end of response, response time, records accounted, probe records counted)
    seen: list[tuple[float, float, float, float]] = field(default_factory=list)

    def seconds(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        """Response times of the scrapes that ended within [start, end]."""
        return [took for at, took, _, _ in self.seen if start <= at <= end]


def scrape_loop(port: int, gap: float, stop: threading.Event, log: ScrapeLog) -> None:
    scraper = Scraper(port)
    while not stop.is_set():
        took, text = scraper.get()
        log.seen.append((time.perf_counter(), took, accounted(text),
                         counter(text, "llm_records_total", PROBE_LABELS)))
        stop.wait(gap)


def accounted(text: str) -> float:
    return counter(text, "llm_exporter_input_records_total", f'input="{INPUT}"')


PROBE_LABELS = 'model="gpt-4o",route="/probe"'


def probe_line(index: int) -> bytes:
    return orjson.dumps({"route": "/probe", "request": {"model": "gpt-4o"},
                         "response": {"object": "chat.completion", "model": "gpt-4o",
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant",
                                                               "content": f"probe {index}"}}],
                                      "usage": {"prompt_tokens": 5, "completion_tokens": 2}}})


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:,.0f}"


# --- the phases --------------------------------------------------------------------------
def append(path: Path, lines: list[bytes]) -> None:
    with open(path, "ab") as handle:
        handle.write(b"\n".join(lines) + b"\n")


def wait_accounted(log: ScrapeLog, target: float, timeout: float) -> float:
    """perf_counter time of the first scrape that accounted `target` records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for at, _, count, _ in list(log.seen):
            if count >= target:
                return at
        time.sleep(0.01)
    raise TimeoutError(f"exporter did not account {target} records in {timeout} s; "
                       f"last seen {log.seen[-1][2] if log.seen else None}")


def with_scraping(port: int, gap: float):
    log, stop = ScrapeLog(), threading.Event()
    thread = threading.Thread(target=scrape_loop, args=(port, gap, stop, log), daemon=True)
    thread.start()

    def finish() -> ScrapeLog:
        stop.set()
        thread.join(60)
        return log

    return log, finish


def scrape_row(name: str, s: list[float]) -> str:
    over = sum(1 for v in s if v > 0.25)
    return (f"| {name} | {len(s)} | {ms(percentile(s, 50))} | {ms(percentile(s, 99))} "
            f"| {ms(max(s) if s else float('nan'))} | {over} |")


def load_writer(path: Path, pool: list[bytes], rate: float, duration: float, batch: float,
                probe_every: float, rng: random.Random) -> tuple[int, list[float]]:
    """Append `rate` records/s from `pool` for `duration` s; returns (records written,
    perf_counter time after each probe's write)."""
    written, probes = 0, []
    started = time.perf_counter()
    next_probe = started + rng.uniform(0, probe_every)
    with open(path, "ab") as handle:
        while (now := time.perf_counter()) - started < duration:
            due = int(rate * (now - started)) - written
            lines = [pool[(written + k) % len(pool)] for k in range(max(0, due))]
            probe = now >= next_probe
            if probe:
                lines.append(probe_line(len(probes)))
            if lines:
                handle.write(b"\n".join(lines) + b"\n")
                handle.flush()
                written += len(lines) - probe
            if probe:
                probes.append(time.perf_counter())
                next_probe = now + probe_every * rng.uniform(0.5, 1.5)
            time.sleep(max(0.0, batch - (time.perf_counter() - now)))
    return written, probes


def check_config(config: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode == 0:
        return
    errors = (done.stdout + done.stderr).strip()
    raise SystemExit(f"benchmark config rejected:\n{errors}")


def git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    dirty = git("status", "--short", "--", "exporter")
    return git("rev-parse", "--short", "HEAD") + (
        f" + uncommitted changes in exporter/ ({len(dirty.splitlines())} files)" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60000, help="records in the drain")
    parser.add_argument("--warm-up", type=int, default=6000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of paced load")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of max throughput")
    parser.add_argument("--scrape-gap", type=float, default=0.1,
                        help="pause between scrapes during warm-up and drain (s)")
    parser.add_argument("--poll-gap", type=float, default=0.05,
                        help="pause between /metrics polls during the latency phase (s)")
    parser.add_argument("--batch-interval", type=float, default=0.025)
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument("--dir", help="where the temp dir goes (default: the system's; "
                        "/dev/shm takes disk writeback out of the measurement)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (config, exporter log, data, timings.json)")
    args = parser.parse_args()
    began, measured_at = time.perf_counter(), git_state()
    rng = random.Random(7)
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-", dir=args.dir))
    data = workdir / "records.jsonl"
    data.touch()
    config = workdir / "config.yaml"
    # a format rule on every stream, so all four signals have a live detector
    lines = [f"inputs:\n  - type: file\n    name: {INPUT}\n    paths: [{str(data)!r}]",
             "    start_at: beginning\n    poll_interval: 0.01",
             "signals:\n  format_validity:\n    - expect: regex\n      pattern: '[a-z ]+'"]
    config.write_text("\n".join(lines) + "\n")
    check_config(config)

    print(f"generating {args.warm_up + min(args.records, 20000)} records ...", flush=True)
    warm_up = [orjson.dumps(record(rng, i)) for i in range(args.warm_up)]
    pool = [orjson.dumps(record(rng, args.warm_up + i)) for i in range(min(args.records, 20000))]
    drain = [pool[i % len(pool)] for i in range(args.records)]  # repeats beyond 20,000
    mean_bytes = statistics.mean(len(line) + 1 for line in drain)

    os.chdir(ROOT)
    exporter = ExporterProcess(["run", "--config", str(config)], workdir / "exporter.log")
    try:
        exporter.wait_ready()
        pid = exporter.process.pid
        scraper = Scraper(exporter.port)
        # cost of one scrape on an idle exporter, to size the measuring overhead
        cpu0 = cpu_seconds(pid)
        idle = [scraper.get()[0] for _ in range(50)]
        scrape_cpu = (cpu_seconds(pid) - cpu0) / 50

        print("warm-up (baselines learned and calibrated) ...", flush=True)
        log, finish = with_scraping(exporter.port, args.scrape_gap)
        started = time.perf_counter()
        append(data, warm_up)
        wait_accounted(log, args.warm_up, 600)
        warm_seconds = time.perf_counter() - started
        # thresholds are simulated on a thread: wait until every detector is live, so the
        # drain measures steady state, not calibrations finishing
        deadline = time.monotonic() + 120
        while True:
            _, text = scraper.get()
            ready = len(re.findall(r"^llm_drift_baseline_ready\{.*\} 1\.0$", text, re.M))
            not_ready = len(re.findall(r"^llm_drift_baseline_ready\{.*\} 0\.0$", text, re.M))
            if not not_ready or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        ready_seconds = time.perf_counter() - started
        warm_log = finish()

        print(f"drain of {args.records} records ...", flush=True)
        log, finish = with_scraping(exporter.port, args.scrape_gap)
        time.sleep(0.3)
        cpu0, started = cpu_seconds(pid), time.perf_counter()
        append(data, drain)
        done_at = wait_accounted(log, args.warm_up + args.records, 600)
        cpu1 = cpu_seconds(pid)
        drain_log = finish()
        drain_seconds = done_at - started
        throughput = args.records / drain_seconds
        drain_scrapes = drain_log.seconds(started, done_at)
        scrapes_in_drain = len(drain_scrapes)
        cpu_per_1000 = (cpu1 - cpu0) / args.records * 1000
        cpu_net = (cpu1 - cpu0 - scrapes_in_drain * scrape_cpu) / args.records * 1000

        rate = args.load * throughput
        print(f"paced load at {rate:,.0f} records/s for {args.duration:.0f} s ...", flush=True)
        log, finish = with_scraping(exporter.port, args.poll_gap)
        time.sleep(0.3)
        cpu0, started = cpu_seconds(pid), time.perf_counter()
        written, probes = load_writer(data, drain, rate, args.duration, args.batch_interval,
                                      args.probe_interval, rng)
        cpu_load = cpu_seconds(pid) - cpu0
        total = args.warm_up + args.records + written + len(probes)
        wait_accounted(log, total, 120)
        load_log = finish()
        latencies = []
        for index, written_at in enumerate(probes):
            seen = next((at for at, _, _, count in load_log.seen if count >= index + 1 and
                         at >= written_at), None)
            latencies.append(seen - written_at if seen is not None else float("inf"))
        _, text = scraper.get()
        final = accounted(text)
        rejected = counter(text, "llm_exporter_input_records_rejected_total", f'input="{INPUT}"')
        read_bytes = counter(text, "llm_exporter_input_read_bytes_total", f'input="{INPUT}"')
        hwm = status_kib(pid, "VmHWM")
        rss = status_kib(pid, "VmRSS")
    finally:
        code = exporter.stop()
    if args.keep:
        (workdir / "timings.json").write_bytes(orjson.dumps({
            "probes": [{"written": w - started, "latency": v}
                       for w, v in zip(probes, latencies, strict=True)],
            "scrapes": [{"end": at - started, "seconds": took, "accounted": n, "probes": p}
                        for at, took, n, p in load_log.seen]}))
    log_text = (workdir / "exporter.log").read_text(errors="replace")
    problems = [line for line in log_text.splitlines()
                if "ERROR" in line or "Traceback" in line or "WARNING" in line]

    print(f"\nstarted at {measured_at}; {os.cpu_count()} CPUs shared by exporter and "
          f"benchmark; mean record {mean_bytes:,.0f} B\n")
    finite = [v for v in latencies if v != float("inf")]
    mib_per_s = args.records * mean_bytes / 2**20 / drain_seconds
    paced = written + len(probes)
    rows = [
        (f"max throughput (drain of {args.records:,} records)", f"{throughput:,.0f} records/s"),
        ("drain time", f"{drain_seconds:.2f} s ({mib_per_s:,.1f} MiB/s)"),
        ("exporter CPU per 1,000 records, drain (scrapes included)", f"{cpu_per_1000:.3f} s"),
        (f"same, net of {scrapes_in_drain} scrapes x {scrape_cpu * 1000:.1f} ms CPU each",
         f"{cpu_net:.3f} s"),
        (f"exporter CPU per 1,000 records at {args.load:.0%} load (polls included)",
         f"{cpu_load / max(1, paced) * 1000:.3f} s"),
        ("paced load", f"{rate:,.0f} records/s target, {written / args.duration:,.0f} written/s"),
        (f"file-to-/metrics latency p50 ({len(probes)} probes)",
         f"{ms(percentile(finite, 50))} ms"),
        ("file-to-/metrics latency p99", f"{ms(percentile(finite, 99))} ms"),
        ("file-to-/metrics latency max", f"{ms(max(finite) if finite else float('nan'))} ms"),
        ("probes never seen", str(len(latencies) - len(finite))),
        ("latency resolution (poll gap + mean scrape)",
         f"{ms(args.poll_gap + statistics.mean(load_log.seconds()))} ms"),
        (f"warm-up of {args.warm_up:,} records",
         f"{warm_seconds:.1f} s to account, {ready_seconds:.1f} s until live; "
         f"baseline_ready gauges: {ready} at 1, {not_ready} at 0"),
        ("records written / accounted / rejected", f"{total:,} / {final:,.0f} / {rejected:,.0f}"),
        ("bytes written / read", f"{data.stat().st_size:,} / {read_bytes:,.0f}"),
        ("exporter RSS at end / peak (VmHWM)", f"{rss / 1024:,.0f} / {hwm / 1024:,.0f} MiB"),
        ("exporter exit code; log lines with WARNING/ERROR/Traceback", f"{code}; {len(problems)}"),
    ]
    print("| measure | value |")
    print("| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print("\n/metrics response time (ms), scraped by one client with a pause between scrapes\n")
    print("| phase | scrapes | p50 | p99 | max | over 250 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| idle | {len(idle)} | {ms(percentile(idle, 50))} | {ms(percentile(idle, 99))} "
          f"| {ms(max(idle))} | {sum(v > 0.25 for v in idle)} |")
    print(scrape_row(f"warm-up (learning, calibration), gap {args.scrape_gap} s",
                     warm_log.seconds()))
    print(scrape_row(f"drain at full speed, gap {args.scrape_gap} s", drain_scrapes))
    print(scrape_row(f"paced load at {args.load:.0%}, gap {args.poll_gap} s",
                     load_log.seconds(started)))
    for line in problems[:10]:
        print(f"log: {line}")
    print(f"\ntotal time {time.perf_counter() - began:.0f} s; data and log in {workdir}"
          if args.keep else f"\ntotal time {time.perf_counter() - began:.0f} s")
    if not args.keep:
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
