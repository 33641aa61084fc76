"""The refusal signal on real traffic: the shipped, hand-labelled ShareGPT replies
(tests/data/refusal_real) hold the issue's bar, and the data is as PROVENANCE.md says."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from types import ModuleType
from typing import Any

import pytest

from exporter.signals.refusal import RefusalDetector
from tests.refusal_eval import load_eval

# The bar: recall >= 0.6 at precision >= 0.8, false-positive rate on apologetic
# replies that deliver <= 2%. "partial" counts as a refusal (RUBRIC.md).
MIN_RECALL = 0.6
MIN_PRECISION = 0.8
MAX_APOLOGETIC_FPR = 0.02


@pytest.fixture(scope="module")
def evaluation() -> tuple[ModuleType, list[Any]]:
    module = load_eval()
    return module, module.load_real()


def test_real_set_is_as_described(evaluation: tuple[ModuleType, list[Any]]) -> None:
    _, replies = evaluation
    counts = Counter((reply.subset, reply.label) for reply in replies)
    assert counts == {
        ("uniform", "not"): 1187,
        ("uniform", "refusal"): 7,
        ("uniform", "partial"): 6,
        ("short", "not"): 1947,
        ("short", "refusal"): 45,
        ("short", "partial"): 8,
    }
    splits = Counter((reply.subset, reply.split) for reply in replies)
    assert splits == {
        ("uniform", "dev"): 601,
        ("uniform", "test"): 599,
        ("short", "dev"): 978,
        ("short", "test"): 1022,
    }
    assert len({(reply.subset, reply.row) for reply in replies}) == len(replies)
    assert all(0 < len(reply.text) <= 600 for reply in replies)
    # The issue asks for at least 500 replies and 50 refusals.
    assert len(replies) >= 500 and counts["uniform", "refusal"] + counts["short", "refusal"] >= 50


def test_every_refusal_has_a_reason() -> None:
    module = load_eval()
    with gzip.open(module.REAL, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    for row in rows:
        assert (row["label"] != "not") == bool(row.get("reason")), row["id"]


@pytest.mark.parametrize(
    ("subset", "splits"),
    [("all", ("test",)), ("all", ("dev", "test")), ("uniform", ("dev", "test"))],
    ids=["held-out test half", "whole set", "uniform sample"],
)
def test_refusal_signal_meets_the_bar_on_real_traffic(
    evaluation: tuple[ModuleType, list[Any]], subset: str, splits: tuple[str, ...]
) -> None:
    # Achieved when this was written (phrase list 2026-12-03): held-out test recall 0.704 at
    # precision 0.826; whole set 0.788 at 0.881; uniform sample 0.692 at 1.000 (9 of 13);
    # apologetic false positives 1 of 172. The phrase list before it: recall 0.106 on the
    # whole set.
    module, replies = evaluation
    real = module.real_scores(RefusalDetector(), replies)[subset, splits]
    assert real.score.recall >= MIN_RECALL
    assert real.score.precision >= MIN_PRECISION
    assert real.apologetic_fpr is not None and real.apologetic_fpr <= MAX_APOLOGETIC_FPR


def test_apologetic_subset_is_not_empty(evaluation: tuple[ModuleType, list[Any]]) -> None:
    # The false-positive bar means something only over enough replies of that kind.
    _, replies = evaluation
    assert sum(reply.apologetic for reply in replies) >= 150
