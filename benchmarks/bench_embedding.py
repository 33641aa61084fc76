"""Micro-benchmark for exporter.signals.embedding.

Reports microseconds per record for `TextEmbedder.embed` (one record at a time, as the live
path calls it) and `embed_many` (batches) on model outputs of about 200, 2,000 and 8,000
characters, next to the cost of counting the same text's tokens with tiktoken (the per-record
floor the design compares against). Also: per-feature cost of the stable hashes one could use
instead (zlib.crc32, blake2b, FNV-1a, each called from Python) against the vectorised numpy
hash the module uses, and one-off startup costs.

    python benchmarks/bench_embedding.py [--repeat 7] [--min-time 0.2]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

start = time.perf_counter()
from exporter.signals import embedding  # noqa: E402
from exporter.signals.embedding import TextEmbedder  # noqa: E402

IMPORT_MS = (time.perf_counter() - start) * 1000

from exporter.signals.tokens import TokenCounter  # noqa: E402

SIZES = (200, 2000, 8000)
# Building blocks for output that looks like a chat model's: prose, lists, code, JSON, numbers,
# some German and Chinese.
_PARTS = [
    "Sure, here is a summary of the main points you asked about. ",
    "The deployment rolled out gradually, and latency stayed within the agreed budget. ",
    "If the retry count exceeds three, the request is sent to the fallback region. ",
    "In short, the second approach is simpler but costs roughly 12% more per month. ",
    "The median response time was 183 ms (p95: 412 ms) across 1,204,551 requests. ",
    "Let me know if you would like a more detailed breakdown by customer segment. ",
    "\n- **Cost:** lower upfront\n- **Risk:** moderate\n1. Check the logs first.\n",
    "```python\ndef retry(fn, attempts=3):\n    for i in range(attempts):\n"
    "        return fn()\n```\n",
    '```json\n{"status": "ok", "items": [1, 2, 3], "next": null}\n```\n',
    "Die Ergebnisse bleiben von Woche zu Woche stabil, außer am Montag. ",
    "部署过程很顺利，延迟保持在预算之内。",  # noqa: RUF001 (a real Chinese comma)
]


def make_output(rng: random.Random, chars: int) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < chars:
        parts.append(rng.choice(_PARTS))
    return "".join(parts)[:chars]


def seconds_per_item(fn: Callable[[], object], items: int, min_time: float) -> float:
    """Seconds per item of `fn` (which handles `items` items), over enough calls for `min_time`."""
    loops = 1
    while True:
        begin = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - begin
        if elapsed >= min_time:
            return elapsed / (loops * items)
        loops *= 2


def median_us(fn: Callable[[], object], items: int, args: argparse.Namespace) -> float:
    return statistics.median(
        seconds_per_item(fn, items, args.min_time) * 1e6 for _ in range(args.repeat)
    )


def fnv1a(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def feature_strings(text: str) -> list[str]:
    """The embedding's features as strings (words, bigrams, marked char 3-5-grams): what a
    per-feature hash would have to hash."""
    words = text.lower().split()
    grams = [f"<{w}>"[i : i + n] for w in words for n in (3, 4, 5) for i in range(len(w) + 3 - n)]
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)] + grams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timing rounds (median reported)")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per round")
    parser.add_argument("--records", type=int, default=32, help="distinct texts per size")
    args = parser.parse_args()

    begin = time.perf_counter()
    embedder = TextEmbedder()
    init_ms = (time.perf_counter() - begin) * 1000
    counter = TokenCounter()
    counter.count("warm up", "gpt-4o-mini")
    print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}")
    print(f"import (character tables): {IMPORT_MS:.1f} ms; TextEmbedder(): {init_ms:.2f} ms")
    print()
    header = f"{'chars':>6} {'embed':>9} {'embed_many':>11} {'tiktoken':>9} {'embed/tiktoken':>15}"
    print(header + "   (us/record, median)")
    rng = random.Random(1234)
    for size in SIZES:
        texts = [make_output(rng, size) for _ in range(args.records)]
        one = median_us(lambda t=texts: [embedder.embed(x) for x in t], len(texts), args)
        many = median_us(lambda t=texts: embedder.embed_many(t), len(texts), args)
        tok = median_us(
            lambda t=texts: [counter.count(x, "gpt-4o-mini") for x in t], len(texts), args
        )
        print(f"{size:>6} {one:>9.1f} {many:>11.1f} {tok:>9.1f} {one / tok:>15.2f}")

    text = make_output(random.Random(7), 2000)
    features = [f.encode() for f in feature_strings(text)]
    print()
    print(f"hashing the {len(features)} features of a 2,000-char text (us/record):")
    options: dict[str, Callable[[], object]] = {
        "zlib.crc32 per feature": lambda: [zlib.crc32(f) for f in features],
        "blake2b(digest_size=8) per feature": lambda: [
            hashlib.blake2b(f, digest_size=8).digest() for f in features
        ],
        "FNV-1a (pure Python) per feature": lambda: [fnv1a(f) for f in features],
        "whole embed() (numpy, all features)": lambda: embedder.embed(text),
    }
    for name, fn in options.items():
        print(f"  {name:<38} {median_us(fn, 1, args):>9.1f}")
    print(f"(embed() is the whole pipeline; MAX_CHARS={embedding.MAX_CHARS})")


if __name__ == "__main__":
    main()
