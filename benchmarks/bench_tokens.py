"""Micro-benchmark for exporter.signals.tokens.

Reports microseconds per record for `TokenCounter.count` on model outputs of
about 50, 500 and 2000 tokens with each encoding, plus one-off startup costs.

    python benchmarks/bench_tokens.py [--repeat 7] [--min-time 0.2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.signals.tokens import (
    CL100K_BASE,
    O200K_BASE,
    TokenCounter,
    encoding_name_for_model,
)

SIZES = (50, 500, 2000)
MODELS = {O200K_BASE: "gpt-4o-mini", CL100K_BASE: "gpt-4-turbo"}

# Building blocks for output that looks like a chat model's: prose, a list,
# some code, numbers, a little non-English text.
_PROSE = [
    "Sure, here is a summary of the main points you asked about.",
    "The deployment rolled out gradually, and latency stayed within the agreed budget.",
    "If the retry count exceeds three, the request is sent to the fallback region.",
    "In short, the second approach is simpler but costs roughly 12% more per month.",
    "Note that the configuration key was renamed in version 2.4 and the old one is ignored.",
    "Let me know if you would like a more detailed breakdown by customer segment.",
    "Les résultats restent stables d'une semaine à l'autre, sauf le lundi.",
    "The median response time was 183 ms (p95: 412 ms) across 1,204,551 requests.",
]
_LIST = ["- **Cost:** lower upfront\n", "- **Risk:** moderate\n", "1. Check the logs first.\n"]
_CODE = [
    "```python\ndef retry(fn, attempts=3):\n    for i in range(attempts):\n"
    "        try:\n            return fn()\n        except TimeoutError:\n"
    "            time.sleep(2 ** i)\n    raise RuntimeError('gave up')\n```\n",
    '```json\n{"status": "ok", "items": [1, 2, 3], "next": null}\n```\n',
]


def make_output(rng: random.Random, counter: TokenCounter, model: str, tokens: int) -> str:
    """Text that encodes to exactly `tokens` tokens with `model`'s encoding."""
    enc = counter._encoding(encoding_name_for_model(model))
    parts: list[str] = []
    while len(enc.encode_ordinary("".join(parts))) < tokens + 20:
        roll = rng.random()
        if roll < 0.7:
            parts.append(rng.choice(_PROSE) + " ")
        elif roll < 0.9:
            parts.append("\n" + rng.choice(_LIST))
        else:
            parts.append("\n" + rng.choice(_CODE))
    text = enc.decode(enc.encode_ordinary("".join(parts))[:tokens])
    # Cutting at a token boundary can leave a merge that re-encodes differently;
    # trim until the count is exact.
    while len(enc.encode_ordinary(text)) > tokens:
        text = text[:-1]
    return text


def time_per_call(counter: TokenCounter, texts: list[str], model: str, min_time: float) -> float:
    """Seconds per `count` call, averaged over enough calls to run `min_time`."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            for text in texts:
                counter.count(text, model)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / (loops * len(texts))
        loops *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timing rounds (median reported)")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per round")
    parser.add_argument("--records", type=int, default=32, help="distinct texts per size")
    args = parser.parse_args()

    start = time.perf_counter()
    counter = TokenCounter()
    init_ms = (time.perf_counter() - start) * 1000
    load_ms = {}
    for name, model in MODELS.items():
        start = time.perf_counter()
        counter.count("warm up", model)
        load_ms[name] = (time.perf_counter() - start) * 1000

    print(f"python {sys.version.split()[0]}, tiktoken {__import__('tiktoken').__version__}")
    print(f"TokenCounter() (locate + sha256 check): {init_ms:.1f} ms")
    for name, ms in load_ms.items():
        print(f"first use of {name} (parse + build):   {ms:.0f} ms")
    print()
    print(f"{'encoding':<12} {'tokens':>6} {'chars':>6} {'us/record':>10} {'min':>8} {'Mtok/s':>7}")

    rng = random.Random(1234)
    for name, model in MODELS.items():
        for size in SIZES:
            texts = [make_output(rng, counter, model, size) for _ in range(args.records)]
            assert all(counter.count(t, model) == (size, name) for t in texts)
            rounds = [
                time_per_call(counter, texts, model, args.min_time) for _ in range(args.repeat)
            ]
            median_us = statistics.median(rounds) * 1e6
            chars = statistics.mean(len(t) for t in texts)
            print(
                f"{name:<12} {size:>6} {chars:>6.0f} {median_us:>10.1f} "
                f"{min(rounds) * 1e6:>8.1f} {size / median_us:>7.2f}"
            )


if __name__ == "__main__":
    main()
