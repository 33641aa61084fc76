"""JSON answers for every aiohttp handler that answers JSON: the API and the HTTP push
input. It imports nothing of the exporter, so an input can answer with it without
depending on the rest of the web layer."""

from __future__ import annotations

import orjson
from aiohttp import web


def json_response(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """orjson instead of aiohttp's stdlib `json.dumps`: faster, and it writes numpy values
    (the evidence of a stream view) as plain numbers."""
    return web.json_response(payload, status=status, headers=headers, dumps=_dumps)


def _dumps(payload: object) -> str:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY).decode()
