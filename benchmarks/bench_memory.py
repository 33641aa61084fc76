"""Memory against the number of streams: fixed base, cost per stream, per stream x signal.

Each measurement runs in a fresh Python process (so peaks never mix), which
builds an in-process `Pipeline` and feeds it records round-robin over N
streams (every stream advances together, like a start-up where all streams
learn at once). Records are OpenAI Chat responses of 300-600 characters with
provider usage (so evidence texts are clipped like real outputs); a format
rule (`regex`) applies to every stream so all four signals (output_tokens,
refusal, format_validity, embedding) have a live detector.

Two instruments, each in its own process (tracemalloc's own bookkeeping
would inflate the RSS):

- traced: tracemalloc, i.e. Python and numpy allocations; "current" after a
  gc.collect() at a checkpoint, "peak" over the whole feed;
- rss: the process's VmRSS at a checkpoint and VmHWM (peak RSS) at the end,
  interpreter, numpy, scipy and tiktoken included.

Checkpoints: after `--learn-records` records per stream (baselines still
learning) and, for the full runs, after baseline_size + window_size records
per stream (every baseline complete and every window full: steady state).
The learning peak (every stream holding a full baseline sample, just before
calibration) is the traced peak of a full run.

Full runs use the default detector settings (baseline 1,000, window 200)
except `expected_run_time`, lowered to 128: it only changes the simulated
thresholds (three floats per detector), not what a stream stores, and cuts
the embedding calibration (one simulation per stream) from ~0.7 s to ~0.06 s.
`--check-ert` repeats one small N at the default ERT to show it. Streams
beyond `--full-max` are measured at the learning checkpoint only; their
steady-state and learning-peak figures are extrapolated from the per-stream
slope of the full runs and printed as such.

    python benchmarks/bench_memory.py [--streams 1 10 100 1000 10000] [--full-max 100]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# one way, shared with bench_latency, to say which code was measured
from bench_latency import git_state

SIGNALS = 4
BASELINE = 1000
WINDOW = 200
MEMORY_ERT = 128
WORDS = (
    "the deployment rolled out gradually and latency stayed within budget if retry count "
    "exceeds three request is sent to fallback region configuration key renamed version "
    "median response time across requests customer segment invoice refund parcel status"
).split()


def responses(count: int = 64) -> list[dict]:
    """Chat Completions bodies with 300-600 character outputs and provider usage."""
    bodies = []
    for i in range(count):
        words, length = [], 300 + (i * 37) % 300
        k = i
        while sum(len(w) + 1 for w in words) < length:
            words.append(WORDS[(k * 7 + 3) % len(WORDS)])
            k += 1
        text = " ".join(words)
        bodies.append({"object": "chat.completion", "model": "gpt-4o-2024-08-06",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 100, "completion_tokens": len(words)}})
    return bodies


def config(streams: int, expected_run_time: int) -> dict:
    return {"inputs": [{"type": "http"}],
            "max_streams": streams + 10,
            "detectors": {"baseline_size": BASELINE, "window_size": WINDOW,
                          "expected_run_time": expected_run_time},
            "signals": {"format_validity": [{"expect": "regex", "pattern": "[a-z ]+"}]}}


def proc_status(field: str) -> int:
    """A VmRSS / VmHWM line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(streams: int, rounds: list[int], traced: bool, expected_run_time: int) -> dict:
    """Child process: feed `max(rounds)` records per stream, sampling at each round in `rounds`."""
    if traced:
        tracemalloc.start()
    from exporter.config import parse_config
    from exporter.inputs.stats import InputStats
    from exporter.streams.pipeline import Pipeline

    pipeline = Pipeline(parse_config(config(streams, expected_run_time)))
    pipeline.measurer.tokens.preload()
    stats = InputStats("bench", "bench")
    bodies = responses()
    routes = [f"/r{s}" for s in range(streams)]

    def sample() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0] if traced else proc_status("VmRSS")

    out: dict = {"streams": streams, "traced": traced, "samples": {}, "base": sample()}
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(max(rounds)):
        body = bodies[i % len(bodies)]
        result = pipeline.ingest_values(
            [{"route": r, "request": {"model": "gpt-4o"}, "response": body} for r in routes], stats)
        assert result.rejected == 0, result
        if i + 1 in rounds:
            out["samples"][i + 1] = sample()
    out["seconds"] = time.perf_counter() - started
    if traced:
        out["by_line"] = by_line()
    out["cpu_seconds"] = time.process_time() - cpu
    out["peak"] = tracemalloc.get_traced_memory()[1] if traced else proc_status("VmHWM")
    ready = [d.baseline_ready for s in pipeline.streams for d in s.detectors.detectors.values()]
    out["detectors"] = len(ready)
    out["ready"] = sum(ready)
    out["format_invalid"] = sum(sum(s.signals.format_invalid.values()) for s in pipeline.streams)
    return out


def by_line(top: int = 60) -> dict[str, int]:
    """Live traced bytes by allocating source line (the largest `top`)."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    out = {}
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        name = frame.filename.split("/site-packages/")[-1].split("/work/main/")[-1]
        out[f"{name}:{frame.lineno}"] = stat.size
    return out


def run_child(streams: int, rounds: list[int], traced: bool, ert: int) -> dict:
    command = [sys.executable, __file__, "--child", str(streams), "--rounds",
               *map(str, rounds), "--ert", str(ert)] + (["--traced"] if traced else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child for {streams} streams failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(value: float) -> str:
    return f"{value / 2**20:,.1f}"


def slope_kib(rows: dict[int, float], streams: list[int]) -> float:
    """Least-squares bytes per stream over the given N, in KiB."""
    xs = [n for n in streams if n in rows]
    if len(xs) < 2:
        return float("nan")
    mx = sum(xs) / len(xs)
    my = sum(rows[n] for n in xs) / len(xs)
    num = sum((n - mx) * (rows[n] - my) for n in xs)
    den = sum((n - mx) ** 2 for n in xs)
    return num / den / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 100, 1000, 10000])
    parser.add_argument("--full-max", type=int, default=100,
                        help="largest N run to steady state (default 100)")
    parser.add_argument("--learn-records", type=int, default=20,
                        help="records per stream at the learning checkpoint (default 20)")
    parser.add_argument("--check-ert", type=int, default=10,
                        help="also run this N to steady state at the default ERT (0: skip)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ert", type=int, default=MEMORY_ERT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.rounds, args.traced, args.ert)))
        return

    began, measured_at = time.perf_counter(), git_state()
    learn, last, steady = args.learn_records, BASELINE - 1, BASELINE + WINDOW
    full = [n for n in args.streams if n <= args.full_max]
    runs: dict[tuple[int, bool], dict] = {}
    for n in sorted(args.streams):
        rounds = [learn, BASELINE - 1, steady] if n in full else [learn]
        for traced in (True, False):
            runs[n, traced] = result = run_child(n, rounds, traced, MEMORY_ERT)
            kind = "traced" if traced else "rss"
            print(f"  {n:>6} streams, {kind:>6}: {result['seconds']:5.1f} s, "
                  f"{result['ready']}/{result['detectors']} baselines ready", flush=True)
            assert result["format_invalid"] == 0
            if n in full:
                assert result["ready"] == result["detectors"] == SIGNALS * n, result
    check = None
    if args.check_ert:
        check = run_child(args.check_ert, [steady], True, 100_000)

    print(f"\nstarted at {measured_at}; {SIGNALS} signals per stream; defaults baseline_size "
          f"{BASELINE}, window_size {WINDOW}; expected_run_time {MEMORY_ERT} (see docstring)\n")
    states = [("before the first record", "base"), (f"learning, {learn} records/stream", learn),
              (f"end of learning, {last} records/stream", last),
              (f"steady, {steady} records/stream", steady)]
    print("| streams | state | traced MiB | RSS MiB |")
    print("| ---: | --- | ---: | ---: |")
    for n in sorted(args.streams):
        t, r = runs[n, True], runs[n, False]
        for label, key in states:
            if key == "base":
                print(f"| {n:,} | {label} | {mib(t['base'])} | {mib(r['base'])} |")
            elif str(key) in t["samples"]:
                print(f"| {n:,} | {label} | {mib(t['samples'][str(key)])} "
                      f"| {mib(r['samples'][str(key)])} |")
        print(f"| {n:,} | peak over the feed (traced peak; VmHWM) | {mib(t['peak'])} "
              f"| {mib(r['peak'])} |")

    def column(traced: bool, key: int) -> dict[int, float]:
        return {n: runs[n, traced]["samples"][str(key)] for n in args.streams
                if str(key) in runs[n, traced]["samples"]}

    all_n = sorted(args.streams)
    print("\nper-stream cost = least-squares slope of memory over N; per stream x signal = "
          f"that / {SIGNALS} (per-stream evidence texts and counters included)\n")
    print("| state | over N | traced KiB/stream | traced KiB/stream/signal "
          "| RSS KiB/stream | RSS KiB/stream/signal |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    slopes = {}
    for label, key, over in (
        (f"learning, {learn} records/stream", learn, full),
        (f"learning, {learn} records/stream", learn, all_n),
        (f"end of learning, {last} records/stream (samples full, nothing calibrated)", last,
         full),
        (f"steady state, {steady} records/stream", steady, full),
    ):
        t, r = slope_kib(column(True, key), over), slope_kib(column(False, key), over)
        slopes.setdefault(key, (t, r))
        print(f"| {label} | {', '.join(f'{n:,}' for n in over)} | {t:,.1f} | {t / SIGNALS:,.1f} "
              f"| {r:,.1f} | {r / SIGNALS:,.1f} |")

    big = [n for n in all_n if n not in full]
    if big and len(full) >= 2:
        anchor = max(full)
        print(f"\nEXTRAPOLATED, not measured: value at {anchor:,} streams + (N - {anchor:,}) x "
              "the slope over the fully run N\n")
        print("| streams | end of learning traced MiB | end of learning RSS MiB "
              "| steady traced MiB | steady RSS MiB |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for n in big:
            cells = [mib(runs[anchor, traced]["samples"][str(key)]
                         + (n - anchor) * slopes[key][0 if traced else 1] * 1024)
                     for key in (last, steady) for traced in (True, False)]
            print(f"| {n:,} | {' | '.join(cells)} |")

    if len(full) >= 2:
        low, high = runs[min(full), True]["by_line"], runs[max(full), True]["by_line"]
        span = max(full) - min(full)
        growth = sorted(((high.get(k, 0) - low.get(k, 0)) / span, k) for k in high)[::-1]
        print(f"\nsteady state, traced bytes per stream by allocating line "
              f"({min(full)} -> {max(full)} streams), largest first\n")
        print("| allocated at | KiB/stream |")
        print("| --- | ---: |")
        for per_stream, line in growth[:8]:
            print(f"| {line} | {per_stream / 1024:,.1f} |")
    if check is not None:
        same = runs.get((args.check_ert, True))
        other = same["samples"][str(steady)] if same else float("nan")
        print(f"\nERT check, {args.check_ert} streams in steady state, traced: "
              f"{mib(check['samples'][str(steady)])} MiB at expected_run_time 100000 "
              f"({check['seconds']:.0f} s of feeding) vs {mib(other)} MiB at {MEMORY_ERT}")
    print(f"\ntotal time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
