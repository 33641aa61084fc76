"""Arbitrary bytes and arbitrary JSON never crash the exporter, and every rejection is counted."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzz
from tests.process import ExporterProcess, wait_for


@pytest.mark.slow
def test_in_process_fuzz_counts_every_rejection():
    summary = fuzz.run(10_000, seed=3)
    assert summary["rejected"] > 0 and summary["records"] > 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                       max_size=4),
    max_leaves=20,
)
payloads = st.one_of(
    st.binary(max_size=300),
    # the stdlib encoder also writes what orjson refuses: big integers, lone surrogates
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([orjson.dumps(s) for s in fuzz.SEEDS]),
)


@pytest.fixture(scope="module")
def exporter(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz")
    logs = workdir / "logs"
    logs.mkdir()
    config = workdir / "c.yaml"
    config.write_text(f'inputs: [{{type: file, paths: ["{logs}/*.jsonl"], start_at: beginning, '
                      "poll_interval: 0.02}, {type: http}]\n")
    process = ExporterProcess(["run", "--config", str(config)], workdir / "log")
    process.wait_ready()
    yield process, logs / "fuzz.jsonl", {"http_rejected": 0, "lines": 0}
    assert process.stop() == 0


def post(exporter: ExporterProcess, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(exporter.url("/v1/records"), data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read() or b"{}")


@pytest.mark.e2e
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(payloads, min_size=1, max_size=5), via_file=st.booleans())
def test_real_process_survives_and_counts(exporter, batch, via_file):
    process, log, expected = exporter
    if via_file:
        data = b"".join(item + b"\n" for item in batch)
        with open(log, "ab") as handle:
            handle.write(data)
        expected["lines"] += sum(1 for line in data.split(b"\n") if line.strip())
    else:
        status, answer = post(process, b"\n".join(batch))
        assert status in (200, 400)
        expected["http_rejected"] += answer.get("rejected", 0)

    def settled():
        metrics = process.samples()
        file_total = sum(metrics.get((name, (("input", "file"),)), 0)
                         for name in ("llm_exporter_input_records_total",
                                      "llm_exporter_input_records_rejected_total"))
        http = metrics.get(("llm_exporter_input_records_rejected_total", (("input", "http"),)), 0)
        return file_total >= expected["lines"] and http == expected["http_rejected"]

    assert wait_for(settled, timeout=10), (process.samples(), expected)
    assert process.process.poll() is None
