"""What saving the exporter's state (`state_dir`) costs, measured side by side in one run.

Issue 13's bar: saving at full ingestion speed with 1,000 active streams costs under 5% of
one core and never delays a scrape by more than 50 ms; the store's size stays proportional
to the number of streams; streams that expired or were reset leave no garbage behind.

In process (always; `state_phases.py`, `state_feed.py`): a `Pipeline` with the default
detectors and all four signals (a format rule on every stream, the built-in embedding) and
`--streams` streams of calibration_streams.py's shapes, fed `--batch` lines at a time through
`ingest_lines` as the file input does, round-robin so every stream changes between two
checkpoints. A checkpoint is taken every second of ingestion wall time, as the exporter does
at 1,000 streams (`checkpoint_interval` 1 s: its 2%-share schedule asks for longer gaps at
this cost), and timed in its parts: `StateStore.checkpoint` (made on the event loop: how long
it holds the loop is how long it can delay a scrape), `StateStore.commit` (on the loop or on
a thread, depending on the build: the tables say which) and, in builds that have it,
`StateStore.flush` when `wal_due()` (the WAL copied into the database, on a thread). Saving's
share = their CPU / (that and ingestion's CPU over the same second).

1. learning: a new store, every stream learning its baselines (`--learn-seconds`, at most
   up to 80% of `baseline_size` records a stream);
2. on to steady state with saving paused (each stream fed until its baselines are complete,
   Bernoulli ones may need 3x `baseline_size` records; thresholds simulated on a thread as
   in the exporter), then the catch-up checkpoint, then `--steady-seconds` of steady state;
   the store kept incrementally is compared with the same state written whole into a new
   store (rows, bytes, a digest);
3. restart: a new pipeline opens the store (quick_check, load, decode) and restores it, then
   its first checkpoint (a whole one);
4. sizes: stores of 100, 1,000, 3,000 steady streams (copies of the saved ones beyond
   `--streams`), written whole: bytes per stream;
5. garbage: half the streams reset 3 times (3 s of ingestion after each), 10% expired (the
   product has no expiry yet: dropped from the stream table, as one would), then
   (`--relearn`, always with `--quick`) every reset stream relearned; after each step the
   kept store against a whole copy of the same state.

`--process` (state_process.py): the real exporter, `state_dir` on and off in turn, tailing a
file of 1,000 learning streams at full speed while /metrics is scraped: response times and CPU.
`--latency` (state_latency.py): bench_latency.py on this commit and on `--base` (a worktree).

    python benchmarks/bench_state.py [--quick] [--process] [--latency] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_latency import git_state  # noqa: E402
from state_feed import Checkpoint, StoreInfo, kib, machine, mib, ms, percentile  # noqa: E402
from state_phases import Results, Settings, learn_and_steady, resets, restart, sizes  # noqa: E402

SHARE_BAR, PAUSE_BAR = 0.05, 0.050


def _commit_on_loop() -> bool:
    """Does this build's exporter commit on the event loop (no `saver` thread)?"""
    from exporter.service import Exporter

    return "self.saver" not in inspect.getsource(Exporter)


COMMIT_ON_LOOP = _commit_on_loop()
COMMIT_WHERE = ("the exporter commits on the loop too, as a callback of its own"
                if COMMIT_ON_LOOP else "the exporter commits on a thread (`saver`)")


class Out:
    """Printed as it goes; kept for the markdown file."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)


def checkpoint_tables(r: Results, s: Settings, out: Out) -> None:
    out(f"### Saving while ingesting at full speed ({s.streams:,} streams, a checkpoint every "
        f"1 s of ingestion, {s.batch} records a batch)\n")
    out("CPU per checkpoint (ms) and saving's share of the CPU of ingesting and saving over "
        "its second:\n")
    out("| phase | checkpoints | records/s (one core) | streams / checkpoint p50 | make CPU "
        "p50 / max | commit CPU p50 / max | WAL flushes: n, CPU max | share p50 | share max "
        "| share overall |")
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, points in (("learning", r.learning), ("steady", r.steady)):
        if not points:
            continue
        cpu, _, n = r.ingest[name]
        shares = [c.share for c in points]
        cost = sum(c.cost for c in points)
        ingest = sum(c.ingest_cpu for c in points)
        out(f"| {name} | {len(points)} | {n / cpu:,.0f} | "
            f"{percentile([c.streams for c in points], 50):,.0f} | "
            f"{ms(percentile([c.make_cpu for c in points], 50))} / "
            f"{ms(max(c.make_cpu for c in points))} | "
            f"{ms(percentile([c.commit_cpu for c in points], 50))} / "
            f"{ms(max(c.commit_cpu for c in points))} | "
            f"{sum(c.flush_wall > 0.0005 for c in points)}, "
            f"{ms(max(c.flush_cpu for c in points))} | {percentile(shares, 50):.1%} | "
            f"{max(shares):.1%} | {cost / (cost + ingest):.1%} |")
    out(f"\nWall time of each part (ms): making a checkpoint holds the event loop (a scrape "
        f"arriving meanwhile waits for it); {COMMIT_WHERE}; the WAL flush runs on a thread of "
        "its own. Bytes per checkpoint: payload = states and slots handed to the store, "
        "written = what the process passed to write() (WAL pages, WAL copied back):\n")
    out("| phase | make p50 | make p99 | make max | commit p50 / max | flush max | payload MiB "
        "p50 / max | written MiB p50 / max |")
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, points in (("learning", r.learning), ("steady", r.steady)):
        if not points:
            continue
        pauses = [c.make_wall for c in points]
        out(f"| {name} | {ms(percentile(pauses, 50))} | {ms(percentile(pauses, 99))} | "
            f"{ms(max(pauses))} | {ms(percentile([c.commit_wall for c in points], 50))} / "
            f"{ms(max(c.commit_wall for c in points))} | {ms(max(c.flush_wall for c in points))} | "
            f"{mib(percentile([c.payload for c in points], 50))} / "
            f"{mib(max(c.payload for c in points))} | "
            f"{mib(percentile([c.written for c in points], 50))} / "
            f"{mib(max(c.written for c in points))} |")
    out("\nSingle checkpoints:\n")
    out("| checkpoint | streams | slots | make CPU ms | make wall ms | commit CPU ms | commit "
        "wall ms | payload MiB | written MiB |")
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    singles: list[tuple[str, Checkpoint | None]] = [
        ("first of a new store (all streams learning, whole)", r.first),
        (f"catch-up after {r.pretrain.get('seconds', 0):.0f} s unsaved (baselines completed)",
         r.catch_up),
        ("first after a restart (whole)", r.restart_first),
    ] + [(f"whole store of {row['streams']:,} steady streams", row["checkpoint"])
         for row in r.sizes]
    for name, c in singles:
        if c is not None:
            out(f"| {name} | {c.streams:,} | {c.slots:,} | {ms(c.make_cpu)} | {ms(c.make_wall)} "
                f"| {ms(c.commit_cpu)} | {ms(c.commit_wall)} | {mib(c.payload)} | "
                f"{mib(c.written)} |")


def store_row(name: str, streams: int, kept: StoreInfo, whole: StoreInfo) -> str:
    same = "yes" if kept.digest == whole.digest else (
        f"**no** ({kept.streams - whole.streams:+,} states, {kept.parts - whole.parts:+,} slots)")
    return (f"| {name} | {streams:,} | {mib(kept.on_disk)} ({mib(kept.wal)}) | {mib(kept.live)} "
            f"| {mib(kept.free)} | {kept.parts:,} | {mib(kept.data)} | {mib(whole.on_disk)} | "
            f"{whole.parts:,} | {same} |")


def store_tables(r: Results, s: Settings, out: Out) -> None:
    out("\n### The store on disk\n")
    out("MiB. Kept: the store kept incrementally since it was made; whole: the same state "
        "written whole into a new store at the same moment (what it holds with no garbage). "
        "Live = pages in use; free = pages on SQLite's free list (the file does not shrink). "
        "Same rows: every state and slot row identical (a digest).\n")
    out("| step | streams | kept: file+WAL (WAL) | kept: live | kept: free | kept: slot rows "
        "| kept: data | whole: file+WAL | whole: slot rows | same rows |")
    out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    if r.learning_store is not None:
        i = r.learning_store
        out(f"| end of the learning phase (no copy) | {s.streams:,} | {mib(i.on_disk)} "
            f"({mib(i.wal)}) | {mib(i.live)} | {mib(i.free)} | {i.parts:,} | {mib(i.data)} "
            f"| | | |")
    for name, (kept, whole) in r.stores.items():
        out(store_row(name, s.streams, kept, whole))
    for row in r.resets:
        out(store_row(row["step"], row["streams"], row["kept"], row["whole"]))
    out("\nSize against the number of steady streams (written whole; beyond "
        f"{s.streams:,}, copies of the saved streams under another model label):\n")
    out("| streams | restore s | data KiB / stream | live KiB / stream | file+WAL KiB / stream "
        "| file+WAL MiB | slot rows / stream |")
    out("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in r.sizes:
        n, info = row["streams"], row["info"]
        out(f"| {n:,} | {row['restore']:.2f} | {kib(info.data / n)} | {kib(info.live / n)} | "
            f"{kib(info.on_disk / n)} | {mib(info.on_disk)} | {info.parts / n:,.1f} |")
    if r.restart:
        x = r.restart
        out(f"\nRestart with {x['entries']:,} saved streams: open (quick_check, load, decode) "
            f"{x['open']:.2f} s ({x['open_cpu']:.2f} s CPU), restore {x['restore']:.2f} s "
            f"({x['restore_cpu']:.2f} s CPU), {x['streams']:,} streams restored. The sizes' "
            "restores reuse its threshold cache (Bernoulli thresholds are simulated again on "
            "restore, not saved).")
    p = r.pretrain
    if p:
        out(f"\nOn to steady state: {p['records']:,.0f} records fed ({p['per_stream']:,.0f} a "
            f"stream) in {p['seconds']:.0f} s wall, {p['cpu']:.0f} s CPU.")


def verdicts(r: Results, out: Out) -> None:
    out("\n### Against the bar\n")
    points = r.learning + r.steady
    if points:
        worst = max(c.share for c in points)
        pause = max(max(c.make_wall, c.commit_wall if COMMIT_ON_LOOP else 0.0) for c in points)
        out(f"- saving's share of the CPU, worst second: {worst:.1%} "
            f"({'PASS' if worst < SHARE_BAR else 'FAIL'} against < 5%)")
        out(f"- longest loop-side pause of a periodic checkpoint (making it"
            f"{', or committing it' if COMMIT_ON_LOOP else ''}): {ms(pause)} ms "
            f"({'PASS' if pause < PAUSE_BAR else 'FAIL'} against <= 50 ms)")
    firsts = [c for c in (r.first, r.restart_first) if c is not None]
    if firsts:
        pause = max(max(c.make_wall, c.commit_wall if COMMIT_ON_LOOP else 0.0) for c in firsts)
        out(f"- longest loop-side pause of a whole checkpoint (new store, restart): "
            f"{ms(pause)} ms")
    rows = list(r.stores.values()) + [(x["kept"], x["whole"]) for x in r.resets]
    if rows:
        same = sum(kept.digest == whole.digest for kept, whole in rows)
        out(f"- kept store holds exactly the live state (rows): {same} of {len(rows)} steps")
        ratio = max(kept.on_disk / whole.on_disk for kept, whole in rows)
        out(f"- kept store's file+WAL against a whole copy's, worst step: {ratio:.1f}x")
    if r.sizes:
        per = [row["info"].live / row["streams"] for row in r.sizes]
        out(f"- live bytes per stream across {', '.join(str(x['streams']) for x in r.sizes)} "
            f"streams: {' / '.join(kib(v) for v in per)} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="100 streams, baseline_size 200, shorter phases (~1 min)")
    parser.add_argument("--streams", type=int)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--learn-seconds", type=float)
    parser.add_argument("--steady-seconds", type=float)
    parser.add_argument("--relearn", action="store_true", help="after the resets, relearn "
                        "every reset stream to steady state (on with --quick)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile one checkpoint of each phase")
    parser.add_argument("--process", action="store_true", help="the real exporter too")
    parser.add_argument("--process-rounds", type=int, default=2)
    parser.add_argument("--process-records", type=int, help="records per run (default 200 a "
                        "stream)")
    parser.add_argument("--latency", action="store_true",
                        help="bench_latency.py here and on --base")
    parser.add_argument("--base", default="36dab12")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--markdown", help="write the tables to this file")
    args = parser.parse_args()
    quick = args.quick
    streams = args.streams or (100 if quick else 1000)
    out, began = Out(), time.perf_counter()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    out(f"`{' '.join(['python benchmarks/bench_state.py', *sys.argv[1:]])}` at {stamp} on "
        f"{git_state()}; {machine()}.\n")
    workdir = Path(tempfile.mkdtemp(prefix="bench-state-"))
    try:
        if not args.skip_in_process:
            s = Settings(
                streams=streams, batch=args.batch, baseline_size=200 if quick else None,
                learn_seconds=args.learn_seconds or (4.0 if quick else 30.0),
                steady_seconds=args.steady_seconds or (4.0 if quick else 15.0),
                sizes=[max(1, streams // 10), streams, 3 * streams],
                reset_cycles=2 if quick else 3, reset_seconds=2.0 if quick else 3.0,
                expire_share=0.1, relearn=quick or args.relearn, profile=args.profile,
                workdir=workdir, calibration=ThreadPoolExecutor(1, "calibration"))
            if quick:
                out(f"**--quick: {streams} streams and `baseline_size: 200` (the default is "
                    "1,000).**\n")
            r = Results()
            run, live = learn_and_steady(s, r, lambda m: print(f"  {m}", flush=True))
            run = restart(s, run, live, r, lambda m: print(f"  {m}", flush=True))
            sizes(s, r, run.pipeline.detector_factory.cache, lambda m: print(f"  {m}", flush=True))
            resets(s, run, r, lambda m: print(f"  {m}", flush=True))
            checkpoint_tables(r, s, out)
            store_tables(r, s, out)
            verdicts(r, out)
            for name, text in r.profiles.items():
                out(f"\n### Profile of one checkpoint, {name}\n\n```\n{text}\n```")
            s.calibration.shutdown(wait=False, cancel_futures=True)
        if args.process:
            from state_process import process_section

            process_section(out, streams, args.process_rounds, args.process_records,
                            workdir / "process", quick)
        if args.latency:
            from state_latency import latency_section

            latency_section(out, args.base, quick)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out(f"\ntotal time {time.perf_counter() - began:.0f} s")
    if args.markdown:
        Path(args.markdown).write_text("\n".join(out.lines) + "\n")


if __name__ == "__main__":
    main()
