"""End-to-end throughput against the floor, measured side by side in one run.

Floor: what any exporter must do per record: parse the JSON line (orjson) and
tokenize the output text (tiktoken, o200k_base). End to end: the same lines
through `replay`'s pipeline (normalize, four signals, detectors, stream state).
Records are mixed shapes (OpenAI Chat, Responses, Anthropic, OTel GenAI) with
outputs of 50 to 2,000 tokens on 8 streams: a mixed set (half with provider
usage) and a set where every record has usage (no tokenizing needed; its floor
still tokenizes). Baselines are learned during a warm-up, so the figures are
steady state on one core; the best of `--repeat` runs each.

    python benchmarks/bench_throughput.py [--records 4000]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.pipeline import Pipeline
from exporter.signals.tokens import TokenCounter

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs each")
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


if __name__ == "__main__":
    main()
