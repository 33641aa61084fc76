"""The `/metrics` handler: the per-stream families written as text, then the rest.

It answers as prometheus_client's own aiohttp handler did (same format negotiation,
the same bytes, `name[]` honoured) but takes the per-stream families from the
collector's `stream_chunks` instead of building MetricFamily objects, so a scrape
of 1,000 streams stays well under 100 ms (benchmarks/bench_scale.py).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from functools import partial

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.openmetrics import exposition as om
from prometheus_client.registry import Collector

from exporter.metrics.collector import ExporterCollector, build_rest_registry
from exporter.metrics.exposition import Dialect
from exporter.metrics.families import merge_streams

# zlib level 1: a 1,000-stream body (5 MB) compresses 20x in 8 ms; level 6 (the default
# aiohttp used) gets 25x for 45 ms of CPU, level 9 no better for 180 ms.
GZIP_LEVEL = 1
# bodies above this are compressed on a worker thread (zlib releases the GIL)
COMPRESS_OFF_LOOP_BYTES = 64 * 1024


def negotiate(accept: str) -> tuple[Dialect, str, Callable[[Collector], bytes]]:
    """The dialect, Content-Type and prometheus_client encoder for an Accept header,
    chosen by prometheus_client's own `choose_encoder` (OpenMetrics when asked for,
    the 0.0.4 text format otherwise, name escaping as requested)."""
    encoder, content_type = choose_encoder(accept)
    func = getattr(encoder, "func", encoder)
    escaping = getattr(encoder, "keywords", {}).get("escaping", om.UNDERSCORES)
    return Dialect(openmetrics=func is om.generate_latest, escaping=escaping), content_type, encoder


class MetricsEndpoint:
    """`/metrics` of one exporter: stream families from `collector.stream_chunks`, then
    the collector's other families, process and platform metrics. `body` is the whole
    work of a scrape, without HTTP."""

    def __init__(self, collector: ExporterCollector, gzip_level: int = GZIP_LEVEL) -> None:
        self.collector = collector
        self.gzip_level = gzip_level
        self.rest = build_rest_registry(collector)

    async def body(
        self, accept: str, accept_encoding: str = "", names: frozenset[str] | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The response body and headers for these request headers (and `name[]` values)."""
        dialect, content_type, encoder = negotiate(accept)
        sources = [self.collector.stream_chunks(dialect)]
        others = encoder(self.rest if names is None else self.rest.restricted_registry(names))
        body = merge_streams(sources, dialect, names) + others
        headers = {hdrs.CONTENT_TYPE: content_type}
        if gzip_accepted(accept_encoding):
            body = await compress(body, self.gzip_level)
            headers[hdrs.CONTENT_ENCODING] = "gzip"
        return body, headers

    async def handle(self, request: web.Request) -> web.Response:
        names = frozenset(request.query.getall("name[]")) if "name[]" in request.query else None
        body, headers = await self.body(
            ",".join(request.headers.getall(hdrs.ACCEPT, [])),
            ",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, [])),
            names,
        )
        return web.Response(body=body, headers=headers)


def make_metrics_handler(collector: ExporterCollector, gzip_level: int = GZIP_LEVEL) -> Handler:
    return MetricsEndpoint(collector, gzip_level).handle


async def compress(body: bytes, level: int = GZIP_LEVEL) -> bytes:
    """gzip `body`, off the event loop when it is large."""
    squeeze = partial(gzip.compress, body, compresslevel=level, mtime=0)
    if len(body) <= COMPRESS_OFF_LOOP_BYTES:
        return squeeze()
    return await asyncio.get_running_loop().run_in_executor(None, squeeze)
