"""Detection benchmark: false alarms, detection delay, calibration and cost of the drift detectors,
on average over many streams and stream by stream.

    python benchmarks/bench_detection.py [--averages | --trust] [--quick] [--seed-base N]
        [--signal S ...] [--streams N] [--seeds N] [--workers W] [--markdown OUT.md]

Two sections (both by default; `--averages` or `--trust` runs one):

- **Averages** (bench_detection_averages.py, bench_detection_runs.py): pooled over 40 seeds per
  signal, false events per 100,000 records and detection delays at the default
  ``expected_run_time`` (100,000) against river's ADWIN, KSWIN, PageHinkley (binary signals:
  also DDM, EDDM, HDDM_A) at their defaults and at settings matched to <= 1 false event per
  100,000; calibration at ``expected_run_time=1000``; µs per record and calibration time.
  About 3-5 minutes on 2 CPUs; ``--quick`` (5 seeds, shorter streams, no KSWIN) ~25 s.
- **Per-stream trust** (bench_detection_trust.py, tables in bench_detection_trust_report.py):
  what one stream feels, with PASS/FAIL against the bars of issue 12: false events of each of
  12+ unchanged streams of 100,000 records per shape (heavy tails, rare refusals, near-constant
  lengths, topic mixes), flapping (events after a persistent change) and delays at the
  defaults, next to river's. The full run (60 streams per shape) takes ~7 CPU-minutes (about
  4 minutes on 2 idle CPUs, 9 measured on a shared machine); ``--trust --quick`` (12 streams
  per shape, 12 change runs) ~1.5 CPU-minutes (about 1 minute idle, up to 4 when shared): the
  tuning loop. ``--signal`` keeps one signal's rows (output_tokens, refusal, format_validity,
  embedding; repeatable).

Seeds: ``--seed-base`` shifts every stream's seed. Tune on base 0 (the default); publish runs
on a fresh base nobody tuned on: the results file is written with ``--seed-base 1000000``:

    python benchmarks/bench_detection.py --seed-base 1000000 \\
        --markdown benchmarks/results/detection.md

Streams: benchmarks/detection_streams.py. Every run prints which seeds it used.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import bench_detection_common  # noqa: F401  (first: BLAS threads, import path)
from bench_detection_averages import markdown, run_benchmark
from bench_detection_runs import FULL, QUICK
from bench_detection_trust import CHANGES, GROUP, SIGNALS, TRUST_FULL, TRUST_QUICK, run_trust
from bench_detection_trust_report import markdown_trust


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--averages", action="store_true", help="only the averages section")
    which.add_argument("--trust", action="store_true", help="only the per-stream section")
    parser.add_argument("--quick", action="store_true",
                        help="small run (averages ~25 s, trust ~1-2 min on 2 CPUs)")
    parser.add_argument("--seed-base", type=int, default=0,
                        help="first seed of every stream (0: the tuning seeds; publish with a "
                             "fresh base, e.g. 1000000)")
    parser.add_argument("--signal", action="append", choices=SIGNALS,
                        help="trust section: only this signal's rows (repeatable)")
    parser.add_argument("--streams", type=int,
                        help=f"trust section: unchanged streams per shape, a multiple of {GROUP} "
                             f"(default {TRUST_FULL.streams}, quick {TRUST_QUICK.streams})")
    parser.add_argument("--seeds", type=int,
                        help="averages section: unchanged streams (and calibration baselines) "
                             "per signal; change runs = 2.5x this (default 40, quick 5)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: all CPUs)")
    parser.add_argument("--markdown", metavar="OUT.md", help="also write the tables here")
    args = parser.parse_args(argv)
    if args.streams is not None and (args.streams < GROUP or args.streams % GROUP):
        parser.error(f"--streams must be a positive multiple of {GROUP}")
    workers = max(1, args.workers)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    texts = []
    if not args.trust:
        cfg = dataclasses.replace(QUICK if args.quick else FULL, seed_base=args.seed_base)
        if args.seeds:
            cfg = cfg.with_seeds(args.seeds)
        texts.append(markdown(run_benchmark(cfg, workers=workers, progress=progress)))
        print(texts[-1], flush=True)
    if not args.averages:
        trust = dataclasses.replace(TRUST_QUICK if args.quick else TRUST_FULL,
                                    seed_base=args.seed_base)
        if args.streams:
            trust = dataclasses.replace(trust, streams=args.streams)
        results = run_trust(trust, workers=workers, signals=args.signal, progress=progress)
        texts.append(markdown_trust(results, CHANGES))
        print(texts[-1], flush=True)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(texts), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
