"""HTTP push backpressure, web config (TLS, basic auth), cardinality cap."""

from __future__ import annotations

import base64
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import bcrypt
import pytest
from aiohttp.test_utils import TestServer

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.service import Exporter
from exporter.streams.pipeline import Pipeline
from exporter.web.server import make_app
from exporter.web.web_config import WebConfigError, load_web_config
from tests import samples
from tests.process import ExporterProcess


@pytest.fixture
async def start(aiohttp_client):
    async def factory(exporter: Exporter, web_config=None):
        server = TestServer(make_app(exporter, web_config=web_config))
        await server.start_server(auto_decompress=False)
        return await aiohttp_client(server)

    return factory


def http_exporter(**options) -> Exporter:
    return Exporter(parse_config({"inputs": [{"type": "http", **options}]}))


async def test_full_queue_answers_429_with_retry_after(start):
    exporter = http_exporter(max_pending_requests=2)
    client = await start(exporter)
    exporter.http_input.stats.pending = 2  # two bodies still being read
    response = await client.post("/v1/records", json=samples.chat())
    assert response.status == 429 and response.headers["Retry-After"] == "1"
    exporter.http_input.stats.pending = 0
    assert (await client.post("/v1/records", json=samples.chat())).status == 200
    text = await (await client.get("/metrics")).text()
    assert 'llm_exporter_http_push_responses_total{code="429",input="http"} 1.0' in text
    assert 'llm_exporter_http_pending_requests{input="http"} 0.0' in text


async def test_shutting_down_answers_503(start):
    exporter = http_exporter()
    client = await start(exporter)
    exporter.http_input.accepting = False
    response = await client.post("/v1/records", json=samples.chat())
    assert response.status == 503 and "Retry-After" in response.headers


def write_web_config(tmp_path, body: str):
    path = tmp_path / "web.yml"
    path.write_text(body)
    return str(path)


async def test_basic_auth_protects_every_route(start, tmp_path):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    web = load_web_config(write_web_config(
        tmp_path, f"basic_auth_users:\n  alice: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"))
    client = await start(http_exporter(), web)
    for path in ("/metrics", "/", "/api/v1/streams", "/-/healthy"):
        assert (await client.get(path)).status == 401
    good = {"Authorization": "Basic " + base64.b64encode(b"alice:s3cret").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"alice:nope").decode()}
    assert (await client.get("/metrics", headers=bad)).status == 401
    response = await client.get("/metrics", headers=good)
    assert response.status == 200 and response.headers["X-Frame-Options"] == "deny"
    assert (await client.post("/v1/records", json=samples.chat(), headers=good)).status == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("basic_auth_user: {}\n", "Additional properties"),
        ("basic_auth_users: {bob: plain}\n", "not a bcrypt hash"),
        ("tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n", "tls_server_config"),
        ("tls_server_config: {cert_file: a}\n", "'key_file' is a required property"),
    ],
)
def test_bad_web_config_is_reported(tmp_path, body, message):
    with pytest.raises(WebConfigError, match=message):
        load_web_config(write_web_config(tmp_path, body))


@pytest.mark.e2e
def test_tls_end_to_end_with_the_real_process(tmp_path):
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    web = write_web_config(tmp_path, "tls_server_config:\n  cert_file: server.crt\n"
                                     "  key_file: server.key\n")
    config = tmp_path / "c.yaml"
    config.write_text("inputs: [{type: http}]\n")
    exporter = ExporterProcess(["run", "--config", str(config), "--web.config.file", web],
                               tmp_path / "log")
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://{exporter.address}/metrics"
        for _ in range(300):
            try:
                with urllib.request.urlopen(url, context=context, timeout=2) as response:
                    assert b"llm_exporter_build_info" in response.read()
                    break
            except (urllib.error.URLError, ConnectionError):
                if exporter.process.poll() is not None:
                    raise AssertionError((tmp_path / "log").read_text()) from None
                time.sleep(0.1)
        else:
            raise AssertionError("no TLS answer")
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://{exporter.address}/metrics", timeout=2)
    finally:
        exporter.process.terminate()
        assert exporter.process.wait(10) == 0


def test_bad_web_config_refuses_to_start(tmp_path, capsys):
    from exporter.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("inputs: [{type: http}]\n")
    web = write_web_config(tmp_path, "basic_auth_users: {bob: plain}\n")
    assert main(["run", "--config", str(config), "--web.config.file", web]) == 1
    assert "not a bcrypt hash" in capsys.readouterr().err


def test_streams_beyond_the_cap_go_to_overflow():
    pipeline = Pipeline(parse_config({"max_streams": 3}))
    stats = InputStats("t", "test")
    values = [samples.chat(route=f"/r{i}") for i in range(10)]
    assert pipeline.ingest_values(values, stats).accepted == 10
    labels = {s.labels: s.records for s in pipeline.streams}
    assert labels == {("gpt-4o", "/r0"): 1, ("gpt-4o", "/r1"): 1, ("gpt-4o", "/r2"): 1,
                      ("__other__", "__other__"): 7}
    assert pipeline.streams.overflow_records == 7


async def test_concatenated_gzip_members_are_all_read(start):
    import gzip

    import orjson

    client = await start(http_exporter())
    body = b"".join(gzip.compress(orjson.dumps(samples.chat()) + b"\n") for _ in range(3))
    response = await client.post("/v1/records", data=body, headers={"Content-Encoding": "gzip"})
    assert (await response.json())["accepted"] == 3
    truncated = gzip.compress(orjson.dumps(samples.chat()))[:-8]
    bad = await client.post("/v1/records", data=truncated, headers={"Content-Encoding": "gzip"})
    assert bad.status == 400
    text = await (await client.get("/metrics")).text()
    assert 'llm_exporter_http_push_responses_total{code="400",input="http"} 1.0' in text


async def test_bearer_push_and_reset_work_beside_basic_auth(start, tmp_path):
    token = tmp_path / "token"
    token.write_text("tok")
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = load_web_config(write_web_config(tmp_path, f"basic_auth_users:\n  a: '{hashed}'\n"))
    exporter = http_exporter(bearer_token_file=str(token))
    client = await start(exporter, web)
    bearer = {"Authorization": "Bearer tok"}
    assert (await client.post("/v1/records", json=samples.chat(), headers=bearer)).status == 200
    assert (await client.post("/v1/records", json=samples.chat())).status == 401
    reset = {"match": {"route": "/chat"}}
    assert (await client.post("/api/v1/baseline/reset", json=reset)).status == 401
    ok = await client.post("/api/v1/baseline/reset", json=reset, headers=bearer)
    assert ok.status == 200
    # everything else still needs basic auth
    assert (await client.get("/metrics", headers=bearer)).status == 401


async def test_odd_credentials_are_401_not_500(start, tmp_path):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = load_web_config(write_web_config(tmp_path, f"basic_auth_users:\n  a: '{hashed}'\n"))
    client = await start(http_exporter(), web)
    long = base64.b64encode(b"a:" + b"x" * 100).decode()
    assert (await client.get("/metrics", headers={"Authorization": f"Basic {long}"})).status == 401
    garbage = {"Authorization": "Basic %%%"}
    assert (await client.get("/metrics", headers=garbage)).status == 401


def test_malformed_bcrypt_hash_is_a_config_error(tmp_path):
    with pytest.raises(WebConfigError, match="invalid bcrypt hash"):
        load_web_config(write_web_config(tmp_path, "basic_auth_users: {a: '$2b$10$short'}\n"))
