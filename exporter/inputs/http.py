"""`POST /v1/records`: records pushed over HTTP.

The body is one JSON object, a JSON array of them, or NDJSON; it may be
gzip-compressed. Both the wire size and the decompressed size are capped
(a small gzip body can expand to gigabytes), and the answer says how many
records were accepted and why the others were not.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from exporter.config import HttpInputConfig, OtlpInputConfig
from exporter.inputs.stats import InputStats
from exporter.records import RejectedRecord
from exporter.streams.pipeline import MAX_REPORTED_ERRORS, IngestResult, Pipeline
from exporter.web.responses import json_response

log = logging.getLogger(__name__)
YIELD_EVERY = 256  # records processed between two returns to the event loop
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson")


class BodyTooLarge(Exception):
    pass


class HttpPushInput:
    def __init__(
        self,
        config: HttpInputConfig | OtlpInputConfig,
        pipeline: Pipeline,
        stats: InputStats,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.stats = stats
        self._token = _read_token(config.bearer_token_file)
        self.accepting = True

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def authorized(self, request: web.Request) -> bool:
        """Bearer token check, also used by the baseline-reset API when a token is set."""
        return self.token_matches(request.headers.get("Authorization", ""))

    def token_matches(self, header: str) -> bool:
        """An `Authorization` header's (or gRPC metadata's) bearer token is the one set."""
        if self._token is None:
            return True
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = supplied.strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._token.encode())

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge(f"body of {request.content_length} bytes exceeds {limit}")
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(f"body exceeds {limit} bytes")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            return self._decompress(bytes(body), encoding)
        if encoding not in ("identity", ""):
            raise web.HTTPUnsupportedMediaType(text=f"unsupported Content-Encoding {encoding}\n")
        return bytes(body)

    def _decompress(self, body: bytes, encoding: str) -> bytes:
        """All members of a (possibly concatenated) gzip body, never more than the limit."""
        limit = self.config.max_decompressed_bytes
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        parts: list[bytes] = []
        size = 0
        remaining = body
        while remaining:
            decompressor = zlib.decompressobj(wbits)
            try:
                data = decompressor.decompress(remaining, limit + 1 - size)
            except zlib.error as exc:
                raise web.HTTPBadRequest(text=f"body is not valid {encoding}: {exc}\n") from None
            size += len(data)
            if size > limit or decompressor.unconsumed_tail:
                raise BodyTooLarge(f"decompressed body exceeds {limit} bytes")
            parts.append(data)
            if not decompressor.eof:
                raise web.HTTPBadRequest(text=f"body is a truncated {encoding} stream\n")
            remaining = decompressor.unused_data
        return b"".join(parts)

    def _split(self, body: bytes, content_type: str) -> tuple[list[Any], bool]:
        """(items, decoded): JSON values when the body is one JSON document, else lines."""
        stripped = body.strip()
        if content_type not in NDJSON_TYPES and stripped[:1] in (b"[", b"{"):
            try:
                value = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                pass  # maybe NDJSON sent as application/json
            else:
                return (value if isinstance(value, list) else [value]), True
        return stripped.split(b"\n"), False

    def ingest_slices(self, body: bytes, content_type: str) -> Iterator[IngestResult]:
        """Ingest the body slice by slice; yields the running result after each slice, so a
        caller on the event loop can hand control back between slices (a 10 MB push must
        not hold up scrapes and tailing for seconds)."""
        items, decoded = self._split(body, content_type)
        ingest = self.pipeline.ingest_values if decoded else self.pipeline.ingest_lines
        result = IngestResult()
        for start in range(0, len(items), YIELD_EVERY):
            _add_slice(result, ingest(items[start : start + YIELD_EVERY], self.stats), start)
            yield result

    async def _ingest_yielding(self, body: bytes, content_type: str) -> IngestResult:
        result = IngestResult()
        for result in self.ingest_slices(body, content_type):  # noqa: B007 - the last one
            await asyncio.sleep(0)
        return result

    async def handle(self, request: web.Request) -> web.Response:
        try:
            response = await self._handle(request)
        except web.HTTPException as exc:
            self.stats.responses[exc.status] += 1
            raise
        except Exception:
            self.stats.responses[500] += 1
            raise
        self.stats.responses[response.status] += 1
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        """Bounded: at most `max_pending_requests` bodies are read at once; beyond that the
        client is told to come back (429 + Retry-After) instead of the exporter buffering
        without limit. While shutting down the answer is 503."""
        if not self.accepting:
            return self._error(request, 503, "shutting down", {"Retry-After": "5"})
        if self.stats.pending >= self.config.max_pending_requests:
            return self._error(request, 429, "too many requests in flight; retry later",
                               {"Retry-After": "1"})
        self.stats.pending += 1
        try:
            return await self._accept(request)
        finally:
            self.stats.pending -= 1

    def _error(self, request: web.Request, status: int, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        """A request refused: `{"error": message}` (the OTLP receiver answers otherwise)."""
        return json_response({"error": message}, status=status, headers=headers)

    async def _body(self, request: web.Request) -> bytes | web.Response:
        """The request's body, uncompressed; or the answer when it cannot be taken (no
        token, too large)."""
        if not self.authorized(request):
            return self._error(request, 401, "missing or invalid bearer token",
                               {"WWW-Authenticate": 'Bearer realm="llm-drift-exporter"'})
        try:
            body = await self._read_body(request)
        except BodyTooLarge as exc:
            self.pipeline.reject(self.stats, RejectedRecord("too_large", str(exc)))
            return self._error(request, 413, str(exc))
        self.stats.bytes_read += len(body)
        return body

    async def _accept(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if not body.strip():
            self.pipeline.reject(self.stats, RejectedRecord("empty_body", "empty body"))
            return json_response(
                {"accepted": 0, "rejected": 1, "errors": ["empty body"]}, status=400
            )
        result = await self._ingest_yielding(body, request.content_type)
        payload = {
            "accepted": result.accepted,
            "rejected": result.rejected,
            "errors": [str(error) for error in result.errors],
        }
        return json_response(payload, status=200 if result.accepted else 400)


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"bearer_token_file {path} is empty")
    return token


def _add_slice(result: IngestResult, done: IngestResult, start: int) -> None:
    """Fold a slice's result into the body's, its record numbers shifted by `start`."""
    result.accepted += done.accepted
    result.rejected += done.rejected
    for error in done.errors[: MAX_REPORTED_ERRORS - len(result.errors)]:
        result.errors.append(replace(error, position=start + error.position))
