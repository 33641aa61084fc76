"""End-to-end throughput against the floor, measured side by side in one run.

Floor: what any exporter must do per record: parse the JSON line (orjson) and
tokenize the output text (tiktoken, o200k_base). End to end: the same lines
through `replay`'s pipeline (normalize, four signals, detectors, stream state).
Records are mixed shapes (OpenAI Chat, Responses, Anthropic, OTel GenAI) with
outputs of 50 to 2,000 tokens on 8 streams: a mixed set (half with provider
usage) and a set where every record has usage (no tokenizing needed; its floor
still tokenizes). Baselines are learned during a warm-up, so the figures are
steady state on one core; the best of `--repeat` runs each.

    python benchmarks/bench_throughput.py [--records 4000] [--repeat 3] [--stages]

`--stages` also prints microseconds per record of each stage of the pipeline, each stage
timed alone over all records with the pipeline's own calls.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.records import normalize
from exporter.signals.tokens import TokenCounter
from exporter.streams.pipeline import Pipeline

T = TypeVar("T")

WORDS = (
    "the deployment rolled out gradually and latency stayed within budget if retry count "
    "exceeds three request is sent to fallback region configuration key renamed version "
    "median response time across requests customer segment invoice refund parcel status"
).split()


def record(rng: random.Random, index: int, usage_share: float = 0.5) -> dict:
    tokens = int(min(2000, max(50, rng.lognormvariate(5.3, 0.8))))
    text = " ".join(rng.choice(WORDS) for _ in range(int(tokens * 0.75)))
    usage = rng.random() < usage_share
    shape = index % 4
    route = f"/r{index % 2}"
    if shape == 0:
        body = {"object": "chat.completion", "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}]}
        if usage:
            body["usage"] = {"prompt_tokens": 100, "completion_tokens": tokens}
    elif shape == 1:
        body = {"object": "response", "status": "completed", "model": "gpt-4.1-mini",
                "output": [{"type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": text}]}]}
        if usage:
            body["usage"] = {"input_tokens": 100, "output_tokens": tokens}
    elif shape == 2:
        body = {"type": "message", "model": "claude-sonnet-4-5", "stop_reason": "end_turn",
                "content": [{"type": "text", "text": text}]}
        if usage:
            body["usage"] = {"input_tokens": 100, "output_tokens": tokens}
    else:
        attributes = {"gen_ai.request.model": "gpt-4o",
                      "gen_ai.output.messages": orjson.dumps(
                          [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
                      ).decode()}
        if usage:
            attributes["gen_ai.usage.output_tokens"] = tokens
        return {"route": route, "attributes": attributes}
    return {"route": route, "request": {"model": body["model"].split("-2")[0]}, "response": body}


def output_text(value: dict) -> str:
    response = value.get("response") or {}
    if "choices" in response:
        return response["choices"][0]["message"]["content"]
    if "output" in response:
        return response["output"][0]["content"][0]["text"]
    if "content" in response:
        return response["content"][0]["text"]
    return orjson.loads(value["attributes"]["gen_ai.output.messages"])[0]["parts"][0]["content"]


def floor(lines: list[bytes], counter: TokenCounter) -> float:
    gc.collect()  # a full collection left over from building the records is not theirs
    started = time.perf_counter()
    for line in lines:
        value = orjson.loads(line)
        counter.count(output_text(value), "gpt-4o")
    return len(lines) / (time.perf_counter() - started)


def end_to_end(warm_up: list[bytes], lines: list[bytes], config: dict) -> float:
    """Steady state: encodings loaded and baselines calibrated during the warm-up, then the
    measured lines through the pipeline function `replay` and the file input call."""
    pipeline = Pipeline(parse_config(config))
    pipeline.measurer.tokens.preload()
    stats = InputStats("bench", "replay")
    pipeline.ingest_lines(warm_up, stats)
    gc.collect()
    started = time.perf_counter()
    result = pipeline.ingest_lines(lines, stats)
    elapsed = time.perf_counter() - started
    assert result.accepted == len(lines) and result.rejected == 0, result
    return len(lines) / elapsed


def stages(warm_up: list[bytes], lines: list[bytes], config: dict) -> dict[str, float]:
    """µs per record of each stage of `Pipeline.ingest_lines`, run stage by stage over all
    lines (so each is timed alone) with the pipeline's own calls, in steady state."""
    pipeline = Pipeline(parse_config(config))
    pipeline.measurer.tokens.preload()
    stats = InputStats("bench", "replay")
    pipeline.ingest_lines(warm_up, stats)
    gc.collect()
    timings: dict[str, float] = {}

    def timed(name: str, run: Callable[[], T]) -> T:
        started = time.perf_counter()
        out = run()
        timings[name] = (time.perf_counter() - started) / len(lines) * 1e6
        return out

    values = timed("JSON decode", lambda: [orjson.loads(line) for line in lines])
    records = timed("normalize", lambda: [normalize(value, "auto")[0] for value in values])
    keys = timed("stream labels", lambda: [pipeline.labeler.key(r) for r in records])
    names, measurer = pipeline.labeler.names, pipeline.measurer
    measured = timed("signals but the embedding", lambda: [
        measurer.measure(r, k, names, defer_embedding=True)
        for r, k in zip(records, keys, strict=True)])
    timed("built-in embedding", lambda: measurer.embed_pending(measured))

    def observe() -> None:
        by_stream: dict[tuple[str, ...], tuple[list, list]] = {}
        for record, key, m in zip(records, keys, measured, strict=True):
            group = by_stream.setdefault(key, ([], []))
            group[0].append(record)
            group[1].append(m)
        for key, (stream_records, batch) in by_stream.items():
            pipeline.streams.get(key).observe_many(stream_records, batch, 0.0)

    timed("stream state and detectors", observe)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs each")
    parser.add_argument("--stages", action="store_true", help="also time each stage alone")
    args = parser.parse_args()
    rng = random.Random(1)
    warm_up = [orjson.dumps(record(rng, i)) for i in range(8 * 500)]
    mixed = [orjson.dumps(record(rng, i)) for i in range(args.records)]
    with_usage = [orjson.dumps(record(rng, i, usage_share=1.0)) for i in range(args.records)]
    counter = TokenCounter()
    counter.preload()
    detectors = {"baseline_size": 500}
    no_embedding = {"detectors": {**detectors, "embedding": {"enabled": False}},
                    "signals": {"embedding": {"enabled": False}}}
    runs = {  # name: (records, run); a run's ratio is to the floor of the same records
        "floor, mixed records (JSON + tiktoken)": (mixed, lambda: floor(mixed, counter)),
        "end to end, all four signals": (mixed, lambda: end_to_end(
            warm_up, mixed, {"detectors": detectors})),
        "end to end, embedding off": (mixed, lambda: end_to_end(warm_up, mixed, no_embedding)),
        "floor, records with usage (JSON + tiktoken)": (
            with_usage, lambda: floor(with_usage, counter)),
        "end to end, usage present, embedding off": (
            with_usage, lambda: end_to_end(warm_up, with_usage, no_embedding)),
    }
    results = {name: max(run() for _ in range(args.repeat)) for name, (_, run) in runs.items()}
    floors = {id(mixed): results["floor, mixed records (JSON + tiktoken)"],
              id(with_usage): results["floor, records with usage (JSON + tiktoken)"]}
    print(f"{args.records} records each, mixed shapes, 50-2,000 output tokens; "
          "mixed = half with provider usage")
    print("| run | records/s | µs/record | ratio to its floor |")
    print("| --- | ---: | ---: | ---: |")
    for name, rate in results.items():
        base = floors[id(runs[name][0])]
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:.1f} | {rate / base:.2f} |")
    if args.stages:
        breakdowns = {
            "all four signals, mixed": stages(warm_up, mixed, {"detectors": detectors}),
            "usage present, embedding off": stages(warm_up, with_usage, no_embedding),
        }
        print("\nµs per record by stage (each timed alone over all records):")
        print("| stage | " + " | ".join(breakdowns) + " |")
        print("| --- |" + " ---: |" * len(breakdowns))
        for stage in next(iter(breakdowns.values())):
            print(f"| {stage} | " + " | ".join(
                f"{timing[stage]:.1f}" for timing in breakdowns.values()) + " |")


if __name__ == "__main__":
    main()
