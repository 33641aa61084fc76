"""Human and JSON views of the exporter's state: landing page, health, /api/v1/streams."""

from __future__ import annotations

import html

import orjson
from aiohttp import web

from exporter import __version__
from exporter.service import Exporter


def streams_document(exporter: Exporter) -> dict[str, object]:
    streams = exporter.pipeline.streams
    return {
        "label_names": list(streams.label_names),
        "streams": [
            {
                "labels": dict(zip(streams.label_names, stream.labels, strict=True)),
                "records": stream.records,
                "finish_reasons": dict(stream.finish_reasons),
                "served_models": dict(stream.served_models),
                "last_record_time": stream.last_record_time,
            }
            for stream in sorted(streams, key=lambda s: s.labels)
        ],
    }


class Api:
    def __init__(self, exporter: Exporter, telemetry_path: str) -> None:
        self.exporter = exporter
        self.telemetry_path = telemetry_path

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, request: web.Request) -> web.Response:
        if self.exporter.ready:
            return web.Response(text="Ready\n")
        return web.Response(text="Not ready\n", status=503)

    async def streams(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(streams_document(self.exporter)), content_type="application/json"
        )

    async def landing(self, request: web.Request) -> web.Response:
        streams = self.exporter.pipeline.streams
        header = "".join(f"<th>{html.escape(n)}</th>" for n in streams.label_names)
        rows = []
        for stream in sorted(streams, key=lambda s: s.labels):
            cells = "".join(f"<td>{html.escape(v)}</td>" for v in stream.labels)
            rows.append(f"<tr>{cells}<td>{stream.records}</td></tr>")
        path = html.escape(self.telemetry_path)
        page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>llm-drift-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
tr:nth-child(even){{background:#f3f3f3}}</style></head>
<body><h1>llm-drift-exporter</h1><p>Version {__version__}</p>
<ul><li><a href="{path}">Metrics</a></li><li><a href="api/v1/streams">Streams (JSON)</a></li>
<li><a href="-/healthy">Health</a></li></ul>
<h2>Streams ({len(streams)})</h2>
<table><tr>{header}<th>records</th></tr>{"".join(rows)}</table>
</body></html>"""
        return web.Response(text=page, content_type="text/html")
