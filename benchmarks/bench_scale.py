"""Memory per stream and `/metrics` collection time against the number of streams.

Memory: tracemalloc over the pipeline after every stream has completed its
baselines (steady state), for a growing number of streams; the slope is the
cost of one more stream. Scrape: time to render the exposition of the
exporter's registry (what a `/metrics` request does) with N streams.

    python benchmarks/bench_scale.py [--streams 1 10 50] [--scrape-streams 1000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import generate_latest

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.service import Exporter

WORDS = "invoice refund parcel status login plan card delivery order account".split()


def record(route: str, i: int) -> dict:
    text = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(20 + i % 30))
    return {"route": route, "request": {"model": "gpt-4o"},
            "response": {"object": "chat.completion", "model": "gpt-4o-2024-08-06",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 20 + i % 30}}}


def exporter_with(streams: int, per_stream: int, baseline: int) -> Exporter:
    config = parse_config({"inputs": [{"type": "http"}],
                           "max_streams": max(1000, streams + 1),
                           "detectors": {"baseline_size": baseline}})
    exporter = Exporter(config)
    exporter.pipeline.measurer.tokens.preload()
    stats = InputStats("bench", "bench")
    for i in range(per_stream):
        exporter.pipeline.ingest_values([record(f"/r{s}", i) for s in range(streams)], stats)
    return exporter


def memory_per_stream(counts: list[int], baseline: int) -> list[tuple[int, float]]:
    rows = []
    for count in counts:
        gc.collect()
        tracemalloc.start()
        exporter = exporter_with(count, baseline + 50, baseline)
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ready = all(d.baseline_ready for s in exporter.pipeline.streams
                    for name, d in s.detectors.detectors.items() if name != "format_validity")
        assert ready
        rows.append((count, current / 1024))
        del exporter
    return rows


def scrape_ms(streams: int) -> float:
    exporter = exporter_with(streams, 5, 1000)
    generate_latest(exporter.registry)
    started = time.perf_counter()
    for _ in range(5):
        body = generate_latest(exporter.registry)
    elapsed = (time.perf_counter() - started) / 5 * 1000
    print(f"  exposition with {streams} streams: {len(body) / 1e6:.1f} MB")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 40])
    parser.add_argument("--baseline", type=int, default=1000)
    parser.add_argument("--scrape-streams", type=int, default=1000)
    args = parser.parse_args()
    rows = memory_per_stream(args.streams, args.baseline)
    print(f"memory in steady state (baseline_size {args.baseline}, all baselines learned):")
    print("| streams | traced KiB | KiB per stream (slope from the first row) |")
    print("| ---: | ---: | ---: |")
    first_count, first_kib = rows[0]
    for count, kib in rows:
        slope = (kib - first_kib) / (count - first_count) if count != first_count else 0.0
        print(f"| {count} | {kib:,.0f} | {slope:,.1f} |")
    print(f"/metrics render time with {args.scrape_streams} streams: "
          f"{scrape_ms(args.scrape_streams):.1f} ms")


if __name__ == "__main__":
    main()
