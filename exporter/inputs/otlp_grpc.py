"""OTLP/gRPC, for OpenTelemetry Collectors (their default `otlp` exporter): the TraceService
and LogsService `Export` calls on their own address (`grpc_address`, default :4317), taken
by the same receiver as OTLP/HTTP (`otlp.py`).

Requests are taken as bytes (no deserializer registered), so a gRPC export goes through the
same decode as a protobuf HTTP one, including its check that skips an export without any
GenAI attribute before a span is read. gRPC's own compression (gzip) is undone by grpcio.
Status codes as the OTLP spec wants them: INVALID_ARGUMENT for a body that does not decode
(not retried), UNAVAILABLE while shutting down or with too many exports in flight (retried
by the client), UNAUTHENTICATED without the bearer token when one is set.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
from grpc import aio

from exporter.config import OtlpInputConfig
from exporter.inputs.otlp_decode import OtlpDecodeError

if TYPE_CHECKING:
    from exporter.inputs.otlp import OtlpReceiver

log = logging.getLogger(__name__)
SERVICES = (("opentelemetry.proto.collector.trace.v1.TraceService", "traces"),
            ("opentelemetry.proto.collector.logs.v1.LogsService", "logs"))
Export = Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]


async def start_grpc(receiver: OtlpReceiver, config: OtlpInputConfig) -> aio.Server:
    """The started server; raises if its address cannot be bound."""
    assert config.grpc_address is not None
    server = aio.server(options=[
        ("grpc.max_receive_message_length", config.max_decompressed_bytes)])
    for service, signal in SERVICES:
        export = grpc.unary_unary_rpc_method_handler(_export(receiver, signal))
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"Export": export}),))
    host, _, port = config.grpc_address.rpartition(":")
    bound = server.add_insecure_port(f"{host or '[::]'}:{port}")
    await server.start()
    log.info("OTLP/gRPC listening on %s:%d", host or "[::]", bound)
    return server


def _export(receiver: OtlpReceiver, signal: str) -> Export:
    async def export(body: bytes, context: aio.ServicerContext) -> bytes:
        if not receiver.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        token = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not receiver.token_matches(str(token)):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or invalid bearer token")
        if receiver.stats.pending >= receiver.config.max_pending_requests:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "too many exports in flight; retry later")
        receiver.stats.pending += 1
        try:
            receiver.stats.bytes_read += len(body)
            response = await receiver.export(body, "application/x-protobuf", signal)
        except OtlpDecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            receiver.stats.pending -= 1
        return response.SerializeToString()

    return export
