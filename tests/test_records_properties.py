"""Properties of normalize and Record on any input.

normalize reads its input without changing it and gives the same answer every time, for any
JSON value in any format and for valid records with hostile extras. Record is a plain (not
frozen) slots dataclass, for cheaper construction; it still compares, hashes, copies and
pickles by value.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.records import FORMATS, Record, RejectedRecord, normalize
from tests.record_samples import SAMPLES, json_values

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(value: Any, fmt: str) -> tuple[str, Any]:
    try:
        return "records", normalize(value, fmt)
    except RejectedRecord as rejected:
        return "rejected", (rejected.reason, rejected.message)


def _with_nested_values(sample: dict[str, Any], value: Any, key: str) -> dict[str, Any]:
    """`sample` with `value` placed at the top and inside its response, when it has one."""
    obj = copy.deepcopy(sample)
    obj[key] = value
    if isinstance(obj.get("response"), dict):
        obj["response"][key] = value
    return obj


@PROPERTY
@given(json_values, st.sampled_from(FORMATS))
def test_normalize_leaves_its_input_unchanged_and_is_repeatable(value: Any, fmt: str) -> None:
    before = copy.deepcopy(value)
    first = _outcome(value, fmt)
    assert [value] == [before]  # in a list, a NaN equals itself (deepcopy keeps the object)
    assert _outcome(value, fmt) == first


@PROPERTY
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.sampled_from(["timestamp", "created", "created_at", "body", "usage", "choices", "time"]),
    json_values,
)
def test_valid_records_with_hostile_extras_are_unchanged_and_repeatable(
    name: str, key: str, value: Any
) -> None:
    obj = _with_nested_values(SAMPLES[name][0], value, key)
    before = copy.deepcopy(obj)
    first = _outcome(obj, "auto")
    assert obj == before
    assert _outcome(obj, "auto") == first


def test_records_compare_hash_copy_and_pickle_by_value() -> None:
    for obj, _ in SAMPLES.values():
        for record in normalize(copy.deepcopy(obj)):
            twin = dataclasses.replace(record)
            assert twin == record and hash(twin) == hash(record)
            assert {record: 1}[twin] == 1
            assert copy.deepcopy(record) == record
            assert pickle.loads(pickle.dumps(record, pickle.HIGHEST_PROTOCOL)) == record
            assert all(hash(call) == hash(copy.copy(call)) for call in record.tool_calls)
    assert Record(shape="s", output_text="a") != Record(shape="s", output_text="b")
