"""Cost of each per-record signal, side by side in one run.

Microseconds per record for: output tokens from provider usage, output tokens
from the tokenizer, refusal, format validity (JSON rule), the built-in
embedding, and all of them together through SignalMeasurer.measure().
Records are realistic chat answers of about 50, 500 and 2,000 tokens.

    python benchmarks/bench_signals.py [--records 300]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.records import normalize
from exporter.records.record import Record
from exporter.signals.format import build_rules, check
from exporter.signals.measure import SignalMeasurer
from exporter.signals.registry import SignalSettings

WORDS = (
    "the deployment rolled out gradually and latency stayed within budget if retry count "
    "exceeds three request is sent to fallback region note configuration key renamed in "
    "version old one ignored median response time was ms across requests customer segment"
).split()


def answer(rng: random.Random, tokens: int) -> str:
    words = [rng.choice(WORDS) for _ in range(int(tokens * 0.75))]
    return " ".join(words).capitalize() + "."


def records(rng: random.Random, tokens: int, count: int, usage: bool) -> list[Record]:
    out = []
    for _ in range(count):
        text = answer(rng, tokens)
        body = {
            "route": "/chat",
            "request": {"model": "gpt-4o"},
            "response": {
                "object": "chat.completion",
                "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
            },
        }
        if usage:
            body["response"]["usage"] = {"prompt_tokens": 100, "completion_tokens": tokens}
        out.extend(normalize(body))
    return out


def per_record_us(work: Callable[[Record], object], batch: list[Record]) -> float:
    for record in batch[:20]:
        work(record)  # warm caches and lazy loads
    started = time.perf_counter()
    for record in batch:
        work(record)
    return (time.perf_counter() - started) / len(batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    args = parser.parse_args()
    measurer = SignalMeasurer(SignalSettings())
    json_rule = build_rules([{"expect": "json"}])[0]
    names = ("model", "route")
    print("| signal | ~50 tokens | ~500 tokens | ~2000 tokens |")
    print("| --- | ---: | ---: | ---: |")
    rows: dict[str, list[float]] = {}
    for size in (50, 500, 2000):
        rng = random.Random(size)
        with_usage = records(rng, size, args.records, usage=True)
        without = records(rng, size, args.records, usage=False)
        work = {
            "output_tokens (usage)": (measurer._output_tokens, with_usage),
            "output_tokens (tokenizer)": (measurer._output_tokens, without),
            "refusal": (measurer.refusals.classify, with_usage),
            "format_validity (json)": (lambda r: check(json_rule, r), with_usage),
            "embedding (built-in)": (lambda r: measurer.embedder.embed(r.output_text), with_usage),
            "all signals, usage present": (
                lambda r: measurer.measure(r, ("gpt-4o", "/chat"), names), with_usage),
            "all signals, tokenizer": (
                lambda r: measurer.measure(r, ("gpt-4o", "/chat"), names), without),
        }
        for name, (fn, batch) in work.items():
            rows.setdefault(name, []).append(per_record_us(fn, batch))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:,.1f} µs" for v in values) + " |")


if __name__ == "__main__":
    main()
