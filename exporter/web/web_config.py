"""`--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit format.

The same file format as node_exporter's, so operators reuse what they have:

    tls_server_config: {cert_file, key_file, client_auth_type, client_ca_file,
                        min_version, max_version}
    basic_auth_users: {name: bcrypt-hash}
    http_server_config: {headers: {Name: value}}

Basic auth protects every route, /metrics included. bcrypt is slow on
purpose, so verified (user, password) pairs are cached in memory by a keyed
digest, as the toolkit does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import jsonschema
import yaml
from aiohttp import web

_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tls_server_config": {
            "type": "object",
            "additionalProperties": False,
            "required": ["cert_file", "key_file"],
            "properties": {
                "cert_file": {"type": "string"},
                "key_file": {"type": "string"},
                "client_auth_type": {"enum": list(_CLIENT_AUTH)},
                "client_ca_file": {"type": "string"},
                "min_version": {"enum": list(_TLS_VERSIONS)},
                "max_version": {"enum": list(_TLS_VERSIONS)},
            },
        },
        "basic_auth_users": {"type": "object", "additionalProperties": {"type": "string"}},
        "http_server_config": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebConfigError(Exception):
    pass


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)
    _cache_key: bytes = field(default_factory=lambda: os.urandom(32))

    def check(self, user: str, password: str) -> bool:
        secret = password.encode("utf-8", "surrogateescape")
        if len(secret) > 72:  # bcrypt's limit; longer passwords cannot match
            return False
        hashed = self.users.get(user)
        if hashed is None:
            bcrypt.checkpw(secret, _DUMMY_HASH)  # same cost for unknown users
            return False
        token = hmac.new(self._cache_key, user.encode("utf-8", "surrogateescape") + b"\0" + secret,
                         hashlib.sha256).digest()
        if token in self._verified:
            return True
        if bcrypt.checkpw(secret, hashed):
            if len(self._verified) < 10_000:
                self._verified.add(token)
            return True
        return False

    def middleware(
        self, own_auth_paths: frozenset[str] = frozenset()
    ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        """`own_auth_paths`: routes that check their own credentials (the push route with a
        bearer token; one Authorization header cannot carry both)."""

        @web.middleware
        async def protect(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.users and request.path not in own_auth_paths and not await self._authorized(
                request
            ):
                return web.Response(status=401, text="Unauthorized\n",
                                    headers={"WWW-Authenticate": 'Basic realm="llm-drift"'})
            response = await handler(request)
            response.headers.update(self.headers)
            return response

        return protect

    async def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # bcrypt takes tens of milliseconds: off the event loop, so scrapes are not stalled
        return await asyncio.to_thread(self.check, user, password)


_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=10))


def _context(tls: dict[str, Any], base: Path) -> ssl.SSLContext:
    def path(name: str) -> str:
        return str((base / tls[name]).resolve())

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.get("min_version", "TLS12")]
    if "max_version" in tls:
        context.maximum_version = _TLS_VERSIONS[tls["max_version"]]
    context.load_cert_chain(path("cert_file"), path("key_file"))
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth in ("RequireAnyClientCert", "RequestClientCert") and "client_ca_file" not in tls:
        raise ssl.SSLError(f"client_auth_type {auth} needs client_ca_file here: Python's TLS "
                           "cannot accept client certificates without verifying them")
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and (
        "client_ca_file" not in tls
    ):
        raise ssl.SSLError(f"client_auth_type {auth} needs client_ca_file")
    if auth != "NoClientCert":
        if "client_ca_file" in tls:
            context.load_verify_locations(path("client_ca_file"))
        verify = auth in ("RequireAndVerifyClientCert", "RequireAnyClientCert")
        context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_OPTIONAL
    return context


def load_web_config(file: str) -> WebConfig:
    """Parse and check the file; every problem is a WebConfigError naming the key."""
    source = Path(file)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WebConfigError(f"{file}: {exc}") from exc
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
        for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(raw)
    ]
    if errors:
        raise WebConfigError(f"{file}: " + "; ".join(errors))
    config = WebConfig(headers=dict((raw.get("http_server_config") or {}).get("headers") or {}))
    for user, hashed in (raw.get("basic_auth_users") or {}).items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise WebConfigError(f"{file}: basic_auth_users.{user}: not a bcrypt hash")
        config.users[user] = hashed.replace("$2y$", "$2b$", 1).encode()
        try:
            bcrypt.checkpw(b"", config.users[user])
        except ValueError as exc:
            message = f"{file}: basic_auth_users.{user}: invalid bcrypt hash ({exc})"
            raise WebConfigError(message) from exc
    if raw.get("tls_server_config"):
        try:
            config.ssl_context = _context(raw["tls_server_config"], source.parent)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{file}: tls_server_config: {exc}") from exc
    return config
