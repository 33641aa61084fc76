"""End to end: the real exporter process receives OTLP/HTTP exports, as an instrumented app's
SDK sends them: the bodies captured from real instrumentations (tests/fixtures/otlp, made
by tests/otlp_capture.py), posted with the content type and encoding they were sent with.
Each LLM call becomes one record of its service's stream, with the usage the stub served;
the rest is counted and skipped; bad bodies get the spec's status codes."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.process import ExporterProcess, free_port, summed_by, wait_for
from tests.test_otlp_decode import REFUSALS, RUNS, stub_output_tokens

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
HTTP_RUNS = sorted(run for run in RUNS if not run.startswith("grpc"))
GRPC_PORT = free_port()
PROTOBUF = "application/x-protobuf"
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def by_service(samples: dict, name: str) -> dict[str, float]:
    return summed_by(samples, name, "service")


def post(exporter: ExporterProcess, path: str, body: bytes, headers: dict[str, str]
         ) -> tuple[int, bytes]:
    request = urllib.request.Request(exporter.url(path), data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def exports(run: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body as sent, headers as sent) of each trace and log export of `run`."""
    found = []
    for meta in sorted((FIXTURES / run).glob("*.json")):
        sent = json.loads(meta.read_text())
        if sent.get("path") not in ("/v1/traces", "/v1/logs"):
            continue
        suffix = ".pb.gz" if sent["headers"].get("Content-Encoding") == "gzip" else ".pb"
        body = (FIXTURES / run / (meta.name.removesuffix(".json") + suffix)).read_bytes()
        headers = {k: v for k, v in sent["headers"].items() if k != "User-Agent"}
        found.append((sent["path"], body, headers))
    return found


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> ExporterProcess:
    work = tmp_path_factory.mktemp("otlp")
    config = work / "config.yaml"
    config.write_text(
        "inputs:\n"
        "  - type: otlp\n"
        "    join_wait: 0.5\n"
        f"    grpc_address: '127.0.0.1:{GRPC_PORT}'\n"
        "stream_labels:\n"
        "  model: request.model|response.model\n"
        "  service: resource.attributes.service.name\n"
    )
    exporter = ExporterProcess(["run", "--config", str(config)], work / "exporter.log")
    exporter.wait_ready()
    try:
        for run in HTTP_RUNS:
            for path, body, headers in exports(run):
                status, answer = post(exporter, path, body, headers)
                assert status == 200, (run, path, answer)
        yield exporter
    finally:
        exporter.stop()


def test_one_record_per_call_with_the_usage_served(receiver: ExporterProcess) -> None:
    expected = {f"otlp-fixture-{run}": RUNS[run][1] for run in HTTP_RUNS}

    def counted() -> dict[str, float]:
        found = by_service(receiver.samples(), "llm_records_total")
        return {service: n for service, n in found.items() if service in expected}

    assert wait_for(lambda: counted() == expected, 15), counted()
    samples = receiver.samples()
    tokens = by_service(samples, "llm_output_tokens_sum")
    refusals = by_service(samples, "llm_refusals_total")
    for run in HTTP_RUNS:
        _, calls, _, excess = RUNS[run]
        service = f"otlp-fixture-{run}"
        assert tokens[service] == stub_output_tokens(calls) + excess, run
        assert refusals.get(service, 0.0) == REFUSALS[run], run
    items = {dict(labels)["kind"] + "." + dict(labels)["signal"]: value
             for (name, labels), value in samples.items()
             if name == "llm_exporter_otlp_items_total"}
    assert items["other.traces"] == 2 * len(HTTP_RUNS)  # the plain app spans, skipped
    assert items["embeddings.traces"] == sum(RUNS[run][2] for run in HTTP_RUNS)
    joins = {dict(labels)["outcome"]: value for (name, labels), value in samples.items()
             if name == "llm_exporter_otlp_join_total"}
    assert joins["joined"] == 7  # openai-v2-legacy's texts, from its gen_ai.choice log records
    assert joins["expired"] == 1  # the gzip run's span, whose text was never captured


def test_json_exports_are_taken_like_protobuf(receiver: ExporterProcess) -> None:
    path, body, _ = exports("openllmetry-openai")[0]
    message = ExportTraceServiceRequest.FromString(body)
    as_json = json.loads(json_format.MessageToJson(message))
    for resource in as_json["resourceSpans"]:  # OTLP/JSON ids are hex, not base64
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = __import__("base64").b64decode(span[key]).hex()
    before = sum(by_service(receiver.samples(), "llm_records_total").values())
    status, answer = post(receiver, path, json.dumps(as_json).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200
    assert json_format.Parse(answer, ExportTraceServiceResponse()) == ExportTraceServiceResponse()
    calls = len([s for r in message.resource_spans for sc in r.scope_spans for s in sc.spans
                 if any(a.key == "gen_ai.output.messages" for a in s.attributes)])
    assert wait_for(lambda: sum(by_service(receiver.samples(), "llm_records_total").values())
                    == before + calls, 10)


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"\x0a\xff\xff\xff", {"Content-Type": "application/x-protobuf"}, 400),  # truncated
    (b"{not json", {"Content-Type": "application/json"}, 400),
    (b"spans", {"Content-Type": "text/plain"}, 415),
    (gzip.compress(b"x")[:-4], {"Content-Type": "application/x-protobuf",
                                "Content-Encoding": "gzip"}, 400),
    (b"\0" * (11 << 20), {"Content-Type": "application/x-protobuf"}, 413),  # over 10 MiB
])
def test_bad_exports_get_the_spec_status(receiver: ExporterProcess, body: bytes,
                                         headers: dict[str, str], status: int) -> None:
    before = receiver.samples()
    got, answer = post(receiver, "/v1/traces", body, headers)
    assert got == status
    # the body is the google.rpc.Status the spec asks for, in the request's encoding
    said = Status.FromString(answer) if headers["Content-Type"] == PROTOBUF \
        else json_format.Parse(answer, Status())
    assert said.message and said.code in (3, 16)
    after = receiver.samples()
    rejected = sum(v for (n, _), v in after.items() if n == "llm_records_rejected_total") - \
        sum(v for (n, _), v in before.items() if n == "llm_records_rejected_total")
    assert rejected == 1
    assert wait_for(lambda: receiver.samples() is not None, 1)  # and it still serves


def test_grpc_exports_from_a_collector(receiver: ExporterProcess) -> None:
    """The body the SDK's gRPC exporter sent, sent again over gRPC: one call, one record."""
    body = next((FIXTURES / "grpc-openai-v2").glob("*-traces.pb")).read_bytes()
    with grpc.insecure_channel(f"127.0.0.1:{GRPC_PORT}") as channel:
        export = channel.unary_unary(TRACE_EXPORT,
                                     response_deserializer=ExportTraceServiceResponse.FromString)
        assert export(body, timeout=10) == ExportTraceServiceResponse()
        with pytest.raises(grpc.RpcError) as refused:
            export(b"\x0a\xff\xff\xff", timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    service = "otlp-fixture-grpc-openai-v2"
    assert wait_for(lambda: by_service(receiver.samples(), "llm_records_total").get(service)
                    == RUNS["grpc-openai-v2"][1], 10)
