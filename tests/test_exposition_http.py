"""The `/metrics` handler: what prometheus_client's aiohttp handler answered for the same
state (Content-Type by Accept; the golden stream families, then the collector's own
families; `name[]`), gzip when accepted, and the stream source seam a multi-process
supervisor plugs into."""

from __future__ import annotations

import gzip

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.exposition import choose_encoder

from exporter.metrics.collector import build_rest_registry
from exporter.service import Exporter
from exporter.web.metrics_handler import COMPRESS_OFF_LOOP_BYTES
from exporter.web.server import make_app
from tests.exposition_helpers import (
    add_raw_stream,
    exporter_with,
    golden_exporter,
    golden_path,
    matches_golden,
    metrics_text,
    sample_set,
    split_golden,
)

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
# Accept headers and the golden dialect of their stream families
ACCEPTS = {
    "": "prom",
    "application/openmetrics-text": "openmetrics",
    PROMETHEUS_ACCEPT: "openmetrics",
    "text/plain;version=0.0.4": "prom",
}
IDENTITY = {"Accept-Encoding": "identity"}


@pytest.fixture
async def serve(aiohttp_client):
    async def start(exporter: Exporter) -> TestClient:
        return await aiohttp_client(TestServer(make_app(exporter)))

    return start


@pytest.fixture(scope="module")
def golden() -> Exporter:
    return golden_exporter()


def steady(samples: set[tuple]) -> set[tuple]:
    """Without the process metrics, whose values move between two scrapes."""
    return {s for s in samples if not s[0].startswith("process_")}


async def body_of(response: ClientResponse) -> bytes:
    assert response.status == 200
    return await response.read()


@pytest.mark.parametrize("accept", list(ACCEPTS))
async def test_answers_as_prometheus_client_did(serve, golden: Exporter, accept: str) -> None:
    """The golden stream families, then what prometheus_client writes for the rest."""
    client = await serve(golden)
    response = await client.get("/metrics", headers={"Accept": accept, **IDENTITY})
    body = await body_of(response)
    encoder, content_type = choose_encoder(accept)
    assert response.headers["Content-Type"] == content_type
    assert "Content-Encoding" not in response.headers
    openmetrics = content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n") == openmetrics
    streams = golden_path("streams", ACCEPTS[accept]).read_bytes()
    head, rest = split_golden(body, streams)
    assert matches_golden(head, streams)
    new_samples = sample_set(rest, openmetrics)
    assert steady(new_samples) == steady(sample_set(encoder(build_rest_registry(golden.collector)),
                                                    openmetrics))
    assert any(s[0] == "process_cpu_seconds" for s in new_samples)


async def test_gzip_when_accepted_and_off_the_loop_when_large(serve) -> None:
    exporter = exporter_with(["learned"])
    for i in range(100):
        add_raw_stream(exporter.pipeline.streams, (f"raw-{i}", "/raw"))
    client = await serve(exporter)
    plain = await body_of(await client.get("/metrics", headers=IDENTITY))
    assert len(plain) > COMPRESS_OFF_LOOP_BYTES
    response = await client.get("/metrics", headers={"Accept-Encoding": "br, gzip;q=0.9"},
                                auto_decompress=False)
    packed = await body_of(response)
    assert response.headers["Content-Encoding"] == "gzip"
    assert len(packed) < len(plain) / 5
    unpacked = gzip.decompress(packed)
    assert steady(sample_set(unpacked, False)) == steady(sample_set(plain, False))


async def test_name_filter(serve) -> None:
    exporter = exporter_with(["a", "b"])
    client = await serve(exporter)
    query = "name[]=llm_records_total&name[]=llm_output_tokens_sum&name[]=llm_exporter_streams"
    body = await body_of(await client.get(f"/metrics?{query}", headers=IDENTITY))
    names = {s[2] for s in sample_set(body, False)}
    assert names == {"llm_records_total", "llm_output_tokens_sum", "llm_exporter_streams"}
    assert body.count(b"# TYPE ") == 3


async def test_metrics_text_is_what_the_endpoint_serves(serve, golden: Exporter) -> None:
    """`metrics_text` (for tests that need the whole scrape without a server)."""
    client = await serve(golden)
    body = await body_of(await client.get("/metrics", headers=IDENTITY))
    assert steady(sample_set(body, False)) == steady(sample_set(metrics_text(golden), False))
