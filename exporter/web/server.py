"""The aiohttp application: one listener for metrics, push, API and health.

Background work (tailing, the demo generator) starts in a `cleanup_ctx` so it
runs only while the app is up and is cancelled and awaited on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from exporter.inputs.otlp import SIGNALS
from exporter.service import Exporter
from exporter.web.api import Api
from exporter.web.metrics_handler import make_metrics_handler
from exporter.web.web_config import WebConfig

log = logging.getLogger(__name__)
EXPORTER_KEY = web.AppKey("exporter", Exporter)
DEFAULT_LISTEN_ADDRESS = ":9847"


def make_app(
    exporter: Exporter, telemetry_path: str = "/metrics", web_config: WebConfig | None = None
) -> web.Application:
    # routes that check the push bearer token themselves (one Authorization header cannot
    # carry basic auth and a bearer token at once)
    own_auth = frozenset(
        ({"/v1/records", "/api/v1/baseline/reset"}
         if exporter.http_input is not None and exporter.http_input.has_token else set())
        | ({"/v1/traces", "/v1/logs"}
           if exporter.otlp is not None and exporter.otlp.has_token else set())
    )
    middlewares = [web_config.middleware(own_auth)] if web_config is not None else []
    app = web.Application(middlewares=middlewares)
    app[EXPORTER_KEY] = exporter
    api = Api(exporter, telemetry_path)
    app.router.add_get(telemetry_path, make_metrics_handler(exporter.collector))
    app.router.add_get("/", api.landing)
    app.router.add_get("/-/healthy", api.healthy)
    app.router.add_get("/-/ready", api.ready)
    app.router.add_get("/api/v1/streams", api.streams)
    app.router.add_post("/api/v1/baseline/reset", api.reset_baseline)
    if exporter.http_input is not None:
        app.router.add_post("/v1/records", exporter.http_input.handle)
    if exporter.otlp is not None:  # OTLP/HTTP: OTEL_EXPORTER_OTLP_ENDPOINT=http://<here>
        for signal in SIGNALS:
            app.router.add_post(f"/v1/{signal}", exporter.otlp.handler(signal))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await exporter.start()
        yield
        await exporter.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """`host:port`, `:port` (all interfaces) or `[v6]:port`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {address!r}, expected HOST:PORT")
    host = host.strip("[]")
    return (host or None), int(port)


async def serve(
    exporter: Exporter,
    listen_address: str,
    telemetry_path: str = "/metrics",
    web_config: WebConfig | None = None,
) -> bool:
    """Serve until SIGTERM or SIGINT, then shut down cleanly; False when it stopped
    because the exporter failed (`Exporter.fail`; the caller exits non-zero)."""
    host, port = parse_listen_address(listen_address)
    runner = web.AppRunner(
        make_app(exporter, telemetry_path, web_config), auto_decompress=False,
        handle_signals=False,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        ssl_context = web_config.ssl_context if web_config is not None else None
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        log.info("listening on %s (metrics at %s)", listen_address, telemetry_path)
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(exporter.failed())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        failure = exporter.failed_reason
        log.info("shutting down" if failure is None else f"shutting down: {failure}")
    finally:
        await runner.cleanup()
    return failure is None
