"""Human and JSON views of the exporter: landing page, health, streams, baseline reset."""

from __future__ import annotations

import html
from typing import Any

import orjson
from aiohttp import web

from exporter import __version__
from exporter.detectors import SIGNALS
from exporter.service import Exporter
from exporter.web.responses import json_response


def _cell(view: dict[str, Any] | None) -> str:
    if view is None:
        return "<td>-</td>"
    if not view["baseline_ready"]:
        reason = view.get("baseline", {}).get("reason")
        if reason is not None and view["observations"]:  # rolling or seasonal: say why
            label = "learning" if reason.startswith("learning") else "waiting"
            return f'<td class="learning" title="{html.escape(reason)}">{label}</td>'
        # e.g. format validity on a stream no format rule selects
        label = "no data" if view["observations"] == 0 else "learning"
        return f'<td class="learning">{label}</td>'
    if view["drift_detected"]:
        return f'<td class="drift">DRIFT {view["score"]:.2f}</td>'
    return f'<td class="ok">ok {view["score"]:.2f}</td>'


def _evidence(view: dict[str, Any], signal: str) -> str:
    direction = f" ({html.escape(view['direction'])})" if view.get("direction") else ""
    parts = [f"<h4>{html.escape(signal)}: score {view['score']:.2f}{direction}</h4><ul>"]
    for stat, change in view["change"].items():
        parts.append(
            f"<li>{html.escape(stat)}: baseline {change['baseline']!s:.8} → "
            f"window {change['window']!s:.8}</li>"
        )
    for item in view.get("moved_features", []):
        parts.append(
            f"<li>“{html.escape(item['feature'])}” in {item['window_share']:.0%} of "
            f"recent outputs, was {item['baseline_share']:.0%}</li>"
        )
    parts.append("</ul>")
    examples = view.get("examples")
    if examples:
        parts.append(_examples(examples))
    return "".join(parts)


# what a signal's window examples are, in words (`Evidence.window_examples`)
SHOWS = {
    "invalid": "latest invalid replies",
    "refusals": "latest refusals",
    "above_p95": "latest replies longer than the baseline's p95",
    "below_p5": "latest replies shorter than the baseline's p5",
    "beyond_p5_p95": "latest replies outside the baseline's p5 to p95",
    "most_unlike_baseline": "recent replies most unlike the baseline (MMD witness)",
    "latest": "latest replies",
}


def _examples(examples: dict[str, Any]) -> str:
    """Baseline examples beside the window's, each window example with what makes it one."""
    parts = [f"<p>Window: {html.escape(SHOWS.get(examples['shows'], examples['shows']))}</p>"]
    for side in ("window", "baseline"):
        for example in examples[side]:
            notes = [f"{key} {example[key]}" for key in ("reason", "output_tokens", "witness")
                     if key in example]
            note = f" ({html.escape(', '.join(notes))})" if notes else ""
            parts.append(f"<blockquote><b>{side}</b>{note}: "
                         f"{html.escape(example['text'])}</blockquote>")
    return "".join(parts)


class Api:
    def __init__(self, exporter: Exporter, telemetry_path: str) -> None:
        self.exporter = exporter
        self.telemetry_path = telemetry_path

    @property
    def _with_evidence(self) -> bool:
        return self.exporter.pipeline.evidence_settings.enabled

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, request: web.Request) -> web.Response:
        why = self.exporter.not_ready
        if why is None:
            return web.Response(text="Ready\n")
        return web.Response(text=f"Not ready: {why}\n", status=503)

    async def streams(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "label_names": list(self.exporter.pipeline.streams.label_names),
                "streams": await self.exporter.stream_views(self._with_evidence),
            }
        )

    async def reset_baseline(self, request: web.Request) -> web.Response:
        """`{"match": {label: value}, "signals": [...]}`: re-learn after an intended change.

        It mutes detection until the baselines are learned again, so when push has a bearer
        token this route requires it too, instead of basic auth (one Authorization header
        cannot carry both)."""
        push = self.exporter.http_input
        if push is not None and not push.authorized(request):
            return json_response({"error": "missing or invalid bearer token"}, status=401)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return json_response({"error": f"body is not JSON: {exc}"}, status=400)
        match = body.get("match") if isinstance(body, dict) else None
        if not isinstance(match, dict) or not all(isinstance(v, str) for v in match.values()):
            return json_response({"error": 'body must be {"match": {"label": "value", ...}}'}, 400)
        signals = body.get("signals", list(SIGNALS))
        if (
            not isinstance(signals, list)
            or not signals
            or not all(isinstance(s, str) and s in SIGNALS for s in signals)
        ):
            return json_response(
                {"error": f"signals must be a list drawn from {list(SIGNALS)}"}, 400
            )
        streams = self.exporter.pipeline.streams
        unknown = sorted(set(match) - set(streams.label_names))
        if unknown:
            return json_response({"error": f"unknown stream labels {unknown}"}, status=400)
        matched = await self.exporter.reset_baselines(match, tuple(signals))
        names = streams.label_names
        return json_response(
            {
                "reset": [dict(zip(names, labels, strict=True)) for labels in matched],
                "signals": signals,
            }
        )

    async def landing(self, request: web.Request) -> web.Response:
        streams = self.exporter.pipeline.streams
        views = await self.exporter.stream_views(self._with_evidence)
        header = "".join(f"<th>{html.escape(n)}</th>" for n in streams.label_names)
        header += "<th>records</th>" + "".join(f"<th>{s}</th>" for s in SIGNALS)
        rows, details = [], []
        for view in views:
            cells = "".join(f"<td>{html.escape(v)}</td>" for v in view["labels"].values())
            cells += f"<td>{view['records']}</td>"
            cells += "".join(_cell(view["signals"].get(s)) for s in SIGNALS)
            rows.append(f"<tr>{cells}</tr>")
            drifted = {s: v for s, v in view["signals"].items() if v["drift_detected"]}
            if drifted:
                title = ", ".join(f"{k}={v}" for k, v in view["labels"].items())
                details.append(
                    f"<h3>{html.escape(title)}</h3>"
                    + "".join(_evidence(v, s) for s, v in drifted.items())
                )
        path = html.escape(self.telemetry_path)
        page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>llm-drift-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
tr:nth-child(even){{background:#f3f3f3}}.drift{{background:#f8c6c6;font-weight:bold}}
.ok{{color:#2a7a2a}}.learning{{color:#888}}blockquote{{color:#444;border-left:3px solid #ccc;
margin:.3em 0;padding-left:.6em}}</style></head>
<body><h1>llm-drift-exporter</h1><p>Version {__version__}</p>
<ul><li><a href="{path}">Metrics</a></li><li><a href="api/v1/streams">Streams (JSON)</a></li>
<li><a href="-/healthy">Health</a></li></ul>
<h2>Streams ({len(views)})</h2>
<table><tr>{header}</tr>{"".join(rows)}</table>
{"<h2>What changed</h2>" + "".join(details) if details else ""}
</body></html>"""
        return web.Response(text=page, content_type="text/html")
