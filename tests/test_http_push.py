from __future__ import annotations

import gzip

import orjson
import pytest
from aiohttp.test_utils import TestServer

from exporter.config import parse_config
from exporter.service import Exporter
from exporter.web.server import make_app
from tests import samples


def make_exporter(tmp_path, **http_options) -> Exporter:
    return Exporter(parse_config({"inputs": [{"type": "http", **http_options}]}))


@pytest.fixture
async def push(aiohttp_client, tmp_path):
    """A client for an exporter with an HTTP input; returns (client, exporter)."""

    async def factory(**http_options):
        exporter = make_exporter(tmp_path, **http_options)
        server = TestServer(make_app(exporter))
        # As in production (server.serve): the push handler decompresses with its own limits.
        await server.start_server(auto_decompress=False)
        client = await aiohttp_client(server)
        return client, exporter

    return factory


def stream_counts(exporter: Exporter) -> dict[tuple[str, ...], int]:
    return {s.labels: s.records for s in exporter.pipeline.streams}


async def test_single_object(push):
    client, exporter = await push()
    response = await client.post("/v1/records", json=samples.chat())
    assert response.status == 200
    assert await response.json() == {"accepted": 1, "rejected": 0, "errors": []}
    assert stream_counts(exporter) == {("gpt-4o", "/chat"): 1}


async def test_array_of_mixed_shapes(push):
    client, exporter = await push()
    body = [
        samples.chat(),
        samples.anthropic(),
        samples.responses(),
        samples.otel_span(),
        samples.litellm(),
    ]
    response = await client.post("/v1/records", json=body)
    assert (await response.json())["accepted"] == 5
    assert stream_counts(exporter) == {
        ("gpt-4o", "/chat"): 2,
        ("claude-sonnet-4-5", "/chat"): 1,
        ("gpt-4.1-mini", "/extract"): 1,
        ("gpt-4o", "/agent"): 1,
    }


async def test_ndjson_with_bad_lines_reports_each(push):
    client, exporter = await push()
    lines = [
        orjson.dumps(samples.chat()),
        b"{broken",
        b"",
        b'{"hello": "world"}',
        b"\xff\xfe not utf8",
        orjson.dumps(samples.anthropic()),
    ]
    response = await client.post(
        "/v1/records",
        data=b"\n".join(lines),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert response.status == 200
    payload = await response.json()
    assert payload["accepted"] == 2
    assert payload["rejected"] == 3
    assert payload["errors"][0].startswith("record 1: invalid_json:")
    assert payload["errors"][1].startswith("record 3: unknown_format:")
    assert payload["errors"][2].startswith("record 4: invalid_utf8:")
    rejections = exporter.pipeline.rejections
    assert (
        rejections["invalid_json"],
        rejections["unknown_format"],
        rejections["invalid_utf8"],
    ) == (1, 1, 1)


async def test_gzip_body(push):
    client, _ = await push()
    body = gzip.compress(orjson.dumps([samples.chat(), samples.chat()]))
    response = await client.post(
        "/v1/records",
        data=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert (await response.json())["accepted"] == 2


async def test_gzip_bomb_is_refused(push):
    client, exporter = await push(max_decompressed_bytes=1024 * 1024)
    bomb = gzip.compress(b" " * (20 * 1024 * 1024))
    assert len(bomb) < 100 * 1024
    response = await client.post("/v1/records", data=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status == 413
    assert exporter.pipeline.rejections["too_large"] == 1


async def test_corrupt_gzip_is_400(push):
    client, _ = await push()
    response = await client.post(
        "/v1/records", data=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert response.status == 400


async def test_body_over_limit_is_413(push):
    client, exporter = await push(max_body_bytes=1000)
    response = await client.post("/v1/records", data=b"x" * 5000)
    assert response.status == 413
    assert exporter.pipeline.rejections["too_large"] == 1
    assert stream_counts(exporter) == {}


async def test_empty_body_is_400_and_counted(push):
    client, exporter = await push()
    response = await client.post("/v1/records", data=b"  \n")
    assert response.status == 400
    assert exporter.pipeline.rejections["empty_body"] == 1


async def test_nothing_usable_is_400(push):
    client, exporter = await push()
    response = await client.post("/v1/records", data=b'[1, "two", {"x": 3}]')
    assert response.status == 400
    payload = await response.json()
    assert payload["accepted"] == 0 and payload["rejected"] == 3
    assert exporter.pipeline.rejections["unknown_format"] == 3


async def test_bearer_token(push, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    client, exporter = await push(bearer_token_file=str(token))
    assert (await client.post("/v1/records", json=samples.chat())).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post("/v1/records", json=samples.chat(), headers=wrong)).status == 401
    right = {"Authorization": "Bearer s3cret"}
    assert (await client.post("/v1/records", json=samples.chat(), headers=right)).status == 200
    assert stream_counts(exporter) == {("gpt-4o", "/chat"): 1}


async def test_metrics_negotiates_openmetrics(push):
    client, _ = await push()
    await client.post("/v1/records", json=samples.chat())
    plain = await client.get("/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'llm_records_total{model="gpt-4o",route="/chat"} 1.0' in await plain.text()
    om = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await om.text()).rstrip().endswith("# EOF")


async def test_health_ready_landing_and_streams_api(push):
    client, _ = await push()
    await client.post("/v1/records", json=samples.anthropic())
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200
    landing = await (await client.get("/")).text()
    assert "claude-sonnet-4-5" in landing and 'href="/metrics"' in landing
    streams = await (await client.get("/api/v1/streams")).json()
    assert streams["streams"][0]["labels"] == {"model": "claude-sonnet-4-5", "route": "/chat"}
    assert streams["streams"][0]["finish_reasons"] == {"tool_call": 1}


async def test_large_body_is_processed_in_slices_with_positions_kept(push):
    client, exporter = await push()
    lines = [orjson.dumps(samples.chat())] * 600
    lines[300] = b"{broken"
    response = await client.post("/v1/records", data=b"\n".join(lines),
                                 headers={"Content-Type": "application/x-ndjson"})
    payload = await response.json()
    assert payload["accepted"] == 599 and payload["rejected"] == 1
    assert payload["errors"][0].startswith("record 300: invalid_json")
    assert stream_counts(exporter) == {("gpt-4o", "/chat"): 599}
