"""End to end with real instrumented clients: the official `openai` and `anthropic` clients,
instrumented by OpenTelemetry's openai-v2, OpenLLMetry's openai and anthropic, OpenInference's
openai (and the anthropic SDK's own tracing), call the OpenAI/Anthropic-compatible stub of
tests/otlp_capture.py while the OpenTelemetry SDK's OTLP/HTTP exporters send their spans and
log records to the real exporter process, as an app pointed at it would; one more run exports
through the SDK's OTLP/gRPC exporter to the exporter's gRPC address.

Each instrumentation runs in its own subprocess (an instrumentor patches the client for the whole
interpreter), with an environment cleared of the caller's OTEL_* and client settings, and gives
its own `service.name`. Per service: N calls give exactly N records (not one dropped, not one
doubled, also after the span join's wait), with the output tokens the stub served and the
refusals each instrumentation records (the expectations of tests/test_otlp_decode.py, which reads
the same runs' captured bodies)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import otlp_capture
from tests.process import ExporterProcess, free_port, summed_by, wait_for
from tests.test_otlp_decode import REFUSALS, RUNS, stub_output_tokens

pytestmark = pytest.mark.e2e

JOIN_WAIT = 0.5
# the runs of tests/otlp_capture.py made here: all over OTLP/HTTP but grpc-openai-v2
LIVE_RUNS = (
    "openai-v2",
    "openai-v2-content-true-gzip",  # gzip bodies; a span whose text never comes
    "openllmetry-openai",
    "openinference-openai",
    "openllmetry-anthropic",
    "anthropic-sdk-native",
    "grpc-openai-v2",  # one call
)
NOT_HERE = {
    "openai-v2-legacy": "needs opentelemetry-util-genai 0.4b0, not the 1.1b0 of the test extras "
    "(its captured bodies go through tests/test_otlp_receiver.py)",
}
# what the OpenTelemetry SDK logs when an export is not taken (or taken only after a retry)
EXPORT_TROUBLE = re.compile(r"Failed to export|Transient error|Exporter already shutdown")


@dataclass
class Child:
    run: str
    returncode: int | None
    stdout: str
    stderr: str

    def report(self) -> str:
        return (f"child {self.run} exited {self.returncode}\n--- stderr ---\n"
                f"{self.stderr[-6000:]}\n--- stdout ---\n{self.stdout[-2000:]}")


@dataclass
class Live:
    exporter: ExporterProcess
    children: dict[str, Child]
    served: int  # requests the stub answered
    samples: dict  # /metrics once the records stopped coming

    def exporter_log(self) -> str:
        return self.exporter.log_path.read_text(errors="replace")[-4000:]


class Stub(otlp_capture.LLMStubHandler):
    counter = otlp_capture._Counter()  # this module's own count of the requests served


def by_service(samples: dict, name: str) -> dict[str, float]:
    return summed_by(samples, name, "service")


def run_children(llm: str, endpoints: dict[str, str], timeout: float = 120.0
                 ) -> dict[str, Child]:
    """Every live run at once, each in its clean environment, to its end; `endpoints` by
    transport (http, grpc)."""
    procs = {
        run: subprocess.Popen(
            otlp_capture.child_command(run, llm, endpoints[otlp_capture.RUNS[run][1]],
                                       metrics_too=False),
            env=otlp_capture.child_env(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for run in LIVE_RUNS
    }
    deadline = time.monotonic() + timeout
    children = {}
    try:
        for run, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                err += f"\n[test] killed after {timeout:.0f} s"
            children[run] = Child(run, proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return children


def service(run: str) -> str:
    return f"otlp-fixture-{run}"  # the child's resource service.name


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("otlp-live")
    config = work / "config.yaml"
    grpc = f"127.0.0.1:{free_port()}"
    config.write_text(
        "inputs:\n"
        "  - type: otlp\n"
        f"    join_wait: {JOIN_WAIT}\n"
        f'    grpc_address: "{grpc}"\n'
        "stream_labels:\n"
        "  model: request.model|response.model\n"
        "  service: resource.attributes.service.name\n"
    )
    stub, port = otlp_capture.start_http(Stub)
    exporter = ExporterProcess(["run", "--config", str(config)], work / "exporter.log")
    try:
        exporter.wait_ready()
        endpoints = {"http": f"http://{exporter.address}", "grpc": f"http://{grpc}"}
        children = run_children(f"http://127.0.0.1:{port}", endpoints)
        # every child has flushed and shut its SDK down: what is missing now is only what the
        # exporter still holds for the join (join_wait at most)
        expected = {service(run): RUNS[run][1] for run in LIVE_RUNS}
        wait_for(lambda: by_service(exporter.samples(), "llm_records_total") == expected, 15)
        time.sleep(3 * JOIN_WAIT)  # long enough for a late second record of a call to show
        yield Live(exporter, children, Stub.counter.n, exporter.samples())
    finally:
        exporter.stop()
        stub.shutdown()
        stub.server_close()


CASES = [pytest.param(run, id=run) for run in LIVE_RUNS] + [
    pytest.param(run, id=run, marks=pytest.mark.skip(reason=why)) for run, why in NOT_HERE.items()
]


@pytest.mark.parametrize("run", CASES)
def test_each_call_is_one_record_with_the_usage_served(live: Live, run: str) -> None:
    child = live.children[run]
    assert child.returncode == 0, child.report()
    assert not EXPORT_TROUBLE.search(child.stderr), child.report()
    (requested, _), calls, _, excess = RUNS[run]
    samples, name = live.samples, service(run)
    records = by_service(samples, "llm_records_total").get(name)
    assert records == calls, (
        f"{run}: {records} records of {calls} calls\n{child.report()}\n"
        f"--- exporter log ---\n{live.exporter_log()}"
    )
    assert by_service(samples, "llm_output_tokens_sum")[name] == stub_output_tokens(calls) + excess
    assert by_service(samples, "llm_refusals_total").get(name, 0.0) == REFUSALS[run]
    models = {dict(labels)["model"] for (sample, labels), _ in samples.items()
              if sample == "llm_records_total" and dict(labels).get("service") == name}
    assert models == {requested}


def test_nothing_else_was_recorded_or_rejected(live: Live) -> None:
    samples = live.samples
    # the stub answered each chat call and each embeddings call of every run once
    served, calls = live.served, sum(RUNS[run][1] + RUNS[run][2] for run in LIVE_RUNS)
    assert served == calls, {run: child.returncode for run, child in live.children.items()}
    assert set(by_service(samples, "llm_records_total")) == {service(run) for run in LIVE_RUNS}
    rejected = sum(v for (n, _), v in samples.items() if n == "llm_records_rejected_total")
    assert rejected == 0, live.exporter_log()
    items = {dict(labels)["kind"] + "." + dict(labels)["signal"]: value
             for (name, labels), value in samples.items()
             if name == "llm_exporter_otlp_items_total"}
    assert items["other.traces"] == 2 * len(LIVE_RUNS)  # each run's two plain app spans
    assert items["embeddings.traces"] == sum(RUNS[run][2] for run in LIVE_RUNS)
    joins = {dict(labels)["outcome"]: value for (name, labels), value in samples.items()
             if name == "llm_exporter_otlp_join_total"}
    assert joins["expired"] == 1  # the gzip run's span, its text never captured
    assert joins["duplicates"] == RUNS["openllmetry-anthropic"][1]  # the anthropic SDK's twins


def test_children_exported_nowhere_but_to_the_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The children's environment keeps none of the caller's OTel, client or proxy settings."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED",
                 "TRACELOOP_TRACE_CONTENT", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY",
                 "HTTP_PROXY", "https_proxy"):
        monkeypatch.setenv(name, "leaked")
    for run in LIVE_RUNS:
        env = otlp_capture.child_env(run)
        assert "leaked" not in env.values(), run
        assert env["OTEL_SERVICE_NAME"] == service(run)
    command = otlp_capture.child_command("openai-v2", "http://a", "http://b", metrics_too=False)
    assert Path(command[1]).name == "otlp_capture.py" and command[-1] == "--no-metrics"
