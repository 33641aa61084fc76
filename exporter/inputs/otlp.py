"""`POST /v1/traces` and `POST /v1/logs`: OTLP/HTTP from OpenTelemetry-instrumented apps.

Point an app's SDK at the exporter (`OTEL_EXPORTER_OTLP_ENDPOINT=http://exporter:9847`) and
each LLM call it traces becomes one record. Bodies are protobuf (the SDKs' default) or OTLP
JSON, gzip or not, decoded with the official messages (`otlp_decode`). Only chat and
completion spans make records; other spans (HTTP, database, agent steps) and embeddings calls
are counted by kind and skipped without reading their attributes. Instrumentations that send
a reply's text in a log record instead of on the span (OpenTelemetry's own openai-v2 with
`gen_ai.choice` events) are joined by trace and span id (`otlp_join`), for `join_wait`
seconds at most: a span whose text never comes is recorded without it, and counted.

Body limits, the bearer token, 413/429/503 and `Retry-After` are the push input's
(`inputs/http.py`). The answer is the export's response message in the request's encoding,
with `partial_success` saying how many spans or log records were rejected and why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from exporter.config import OtlpInputConfig
from exporter.inputs.http import HttpPushInput, _add_slice
from exporter.inputs.otlp_decode import PROTOBUF_TYPES, OtlpDecodeError, decode
from exporter.inputs.otlp_grpc import start_grpc
from exporter.inputs.otlp_join import SpanJoin
from exporter.inputs.stats import InputStats
from exporter.records import RejectedRecord
from exporter.streams.pipeline import IngestResult, Pipeline

log = logging.getLogger(__name__)
FORMAT = "otel_genai"  # the adapter of every span passed on (OpenInference mapped onto it)
SLICE = 256  # spans ingested between two returns to the event loop
EXPIRE_EVERY = 0.5  # seconds between two looks for spans whose text did not come
SIGNALS = ("traces", "logs")
# an HTTP error status as the gRPC code of its google.rpc.Status body
GRPC_CODES = {400: 3, 413: 3, 415: 3, 401: 16, 429: 8, 503: 14}


class OtlpReceiver(HttpPushInput):
    def __init__(self, config: OtlpInputConfig, pipeline: Pipeline, stats: InputStats,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config, pipeline, stats)
        self.join = SpanJoin(config.join_wait, config.join_capacity)
        self.clock = clock
        self.received: Counter[tuple[str, str]] = Counter()  # (signal, kind) -> items
        self.invalid_bodies = 0

    def handler(self, signal: str) -> Callable[[web.Request], Any]:
        """The route's handler for `signal` (traces or logs)."""

        async def handle(request: web.Request) -> web.Response:
            request["otlp_signal"] = signal
            return await self.handle(request)

        return handle

    async def _accept(self, request: web.Request) -> web.Response:
        signal = request["otlp_signal"]
        try:
            body = await self._body(request)
        except (web.HTTPBadRequest, web.HTTPUnsupportedMediaType) as exc:  # its encoding
            self._count_invalid(exc.text or exc.reason)
            return self._error(request, exc.status, (exc.text or exc.reason).strip())
        if isinstance(body, web.Response):
            return body
        content_type = request.headers.get("Content-Type", "")
        try:
            message = await self.export(body, content_type, signal)
        except OtlpDecodeError as exc:  # (counted)
            return self._error(request, exc.status, str(exc))
        return _encoded(message, request)

    async def export(self, body: bytes, content_type: str, signal: str) -> Message:
        """Take one export (HTTP or gRPC): its response message. Raises OtlpDecodeError,
        counted, for a body that is not one."""
        try:  # off the loop: a large export must not hold up scrapes
            decoded = await asyncio.get_running_loop().run_in_executor(
                None, decode, body, content_type, signal)
        except OtlpDecodeError as exc:
            self._count_invalid(str(exc))
            raise
        for kind, count in decoded.counts.items():
            if count:
                self.received[(signal, str(kind))] += count
        spans = self.join.add(decoded.items, self.clock())
        return _response(signal, await self._ingest(spans))

    def _error(self, request: web.Request, status: int, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        """The spec's error body: a google.rpc.Status, in the request's encoding."""
        answer = Status(code=GRPC_CODES.get(status, 2), message=message)  # 2: UNKNOWN
        return _encoded(answer, request, status, headers)

    def _count_invalid(self, error: str) -> None:
        self.invalid_bodies += 1
        self.pipeline.reject(self.stats, RejectedRecord("invalid_otlp", error.strip()))

    async def _ingest(self, spans: list[dict[str, Any]]) -> IngestResult:
        result = IngestResult()
        for start in range(0, len(spans), SLICE):
            done = self.pipeline.ingest_values(spans[start:start + SLICE], self.stats, FORMAT)
            _add_slice(result, done, start)
            await asyncio.sleep(0)
        return result

    async def run(self) -> None:
        """The gRPC server, if any; and spans whose text did not come within `join_wait`,
        recorded without it."""
        server = None
        if self.config.grpc_address:
            try:
                server = await start_grpc(self, self.config)
            except RuntimeError as exc:  # the address is taken: OTLP/HTTP goes on
                log.error("cannot serve OTLP/gRPC on %s: %s", self.config.grpc_address, exc)
        try:
            while True:
                await asyncio.sleep(EXPIRE_EVERY)
                spans = self.join.expire(self.clock())
                if spans:
                    await self._ingest(spans)
        finally:
            if server is not None:
                await server.stop(grace=2.0)


def _response(signal: str, result: IngestResult) -> Message:
    """The export's response: empty when everything was taken, else `partial_success` with
    the number rejected and the first reasons."""
    message: Message = ExportTraceServiceResponse() if signal == "traces" \
        else ExportLogsServiceResponse()
    if result.rejected:
        partial = message.partial_success
        if signal == "traces":
            partial.rejected_spans = result.rejected
        else:
            partial.rejected_log_records = result.rejected
        partial.error_message = "; ".join(str(error) for error in result.errors[:5])
    return message


def _encoded(message: Message, request: web.Request, status: int = 200,
             headers: dict[str, str] | None = None) -> web.Response:
    """`message` as the answer, in the request's encoding (protobuf or JSON)."""
    if request.headers.get("Content-Type", "").lower().startswith(PROTOBUF_TYPES):
        return web.Response(status=status, body=message.SerializeToString(),
                            content_type="application/x-protobuf", headers=headers)
    return web.Response(status=status, body=json_format.MessageToJson(message, indent=None)
                        .encode(), content_type="application/json", headers=headers)
