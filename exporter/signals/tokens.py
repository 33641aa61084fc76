"""Offline token counting for model outputs.

Token counts are a length signal for drift detection. They are computed locally
with tiktoken and never need the network: the BPE rank files for the two
encodings we use ship inside this package (``exporter/signals/encodings/``,
provenance and re-fetch in ``scripts/fetch_encodings.sh``).

Every rank file is checked against a pinned sha256 before use (via
``tiktoken.load.check_hash``), whichever place it came from. Places are tried in
this order; since every accepted file has the same hash, the order only decides
which copy is read, never which ranks are used:

1. the files packaged with the exporter;
2. a user-configured directory (``TokenCounter(encodings_dir=...)``), holding
   either ``<encoding>.tiktoken`` or tiktoken's cache file name for it;
3. ``$TIKTOKEN_CACHE_DIR``, using tiktoken's cache naming (sha1 hex digest of
   the URL tiktoken would download the file from).

If no verified file is found for an encoding, `TokenCounter()` raises
`EncodingUnavailableError` at construction, so a deployment cannot start up
and quietly report zero tokens.

The regex split pattern and special tokens of each encoding are taken from
tiktoken's own definition (``tiktoken_ext.openai_public``) rather than restated
here; see `_encoding_spec`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import tiktoken.load
from tiktoken_ext import openai_public

__all__ = [
    "CL100K_BASE",
    "DEFAULT_ENCODING",
    "ENCODING_SHA256",
    "O200K_BASE",
    "EncodingSource",
    "EncodingUnavailableError",
    "TokenCounter",
    "encoding_name_for_model",
]

log = logging.getLogger(__name__)

O200K_BASE = "o200k_base"
CL100K_BASE = "cl100k_base"

# Models we cannot map to an OpenAI encoding are counted with this one. See
# `encoding_name_for_model` for why.
DEFAULT_ENCODING = O200K_BASE

# Pinned sha256 of each rank file. These equal the hashes tiktoken itself pins
# for the same files; `_encoding_spec` refuses to run if the two ever disagree.
ENCODING_SHA256: dict[str, str] = {
    O200K_BASE: "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    CL100K_BASE: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

_PACKAGED_DIR = Path(__file__).resolve().parent / "encodings"
_SUFFIX = ".tiktoken"


class EncodingUnavailableError(RuntimeError):
    """No hash-verified rank file could be found for a required encoding."""


@dataclass(frozen=True, slots=True)
class EncodingSource:
    """Where an encoding's rank file was found.

    `kind` is one of ``packaged``, ``encodings_dir`` or ``TIKTOKEN_CACHE_DIR``.
    """

    encoding: str
    kind: str
    path: Path

    def describe(self) -> str:
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True, slots=True)
class _EncodingSpec:
    """tiktoken's definition of an encoding, minus the rank data."""

    url: str
    expected_hash: str
    params: dict[str, Any]


# --------------------------------------------------------------------------
# Model -> encoding
# --------------------------------------------------------------------------

# Checked in order; o200k prefixes come first so "gpt-4o"/"gpt-4.1" are not
# taken by the plain "gpt-4" rule below.
_O200K_PREFIXES = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "chatgpt-4o",
    "gpt-5",
    "gpt-oss",
    "codex-mini",
)
_CL100K_PREFIXES = (
    "gpt-4",
    "gpt-3.5",
    "gpt-35",  # Azure's spelling, e.g. gpt-35-turbo
    "text-embedding-3",
    "text-embedding-ada-002",
    "davinci-002",
    "babbage-002",
)
# o1, o1-mini, o3-pro, o4-mini-2025-04-16, ... but not e.g. "o1x".
_O_SERIES = re.compile(r"o[1-9][0-9]*(?:-|$)")


def encoding_name_for_model(model: str | None) -> str:
    """Name of the encoding used to count tokens for `model`.

    * ``o200k_base``: gpt-4o, gpt-4.1, gpt-4.5, chatgpt-4o, the o1/o3/o4
      reasoning series, gpt-5 and gpt-oss families.
    * ``cl100k_base``: gpt-4 (not -4o/-4.1/-4.5), gpt-3.5 / gpt-35 (Azure),
      text-embedding-3-*, text-embedding-ada-002.
    * anything else, including None and other vendors (Claude, Gemini, Llama,
      Mistral, ...): ``o200k_base`` (`DEFAULT_ENCODING`).

    The default exists because other vendors' tokenizers are not available
    offline in a form tiktoken can load. o200k_base is the most recent public
    BPE with broad multilingual coverage, so its counts track those vendors'
    output lengths more closely than older encodings. The counts are meant for
    comparing a stream against its own history (the same model name always maps
    to the same encoding), not for billing or context-window arithmetic.

    Provider routing prefixes (``openai/gpt-4o``, ``azure/gpt-4``) and
    fine-tune names (``ft:gpt-4o-mini:org::id``) are understood. Matching is
    case-insensitive.
    """
    if not model:
        return DEFAULT_ENCODING
    name = model.strip().lower().rsplit("/", 1)[-1]
    name = name.removeprefix("ft:")
    if name.startswith(_O200K_PREFIXES) or _O_SERIES.match(name):
        return O200K_BASE
    if name.startswith(_CL100K_PREFIXES):
        return CL100K_BASE
    return DEFAULT_ENCODING


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _encoding_spec(name: str) -> _EncodingSpec:
    """Run tiktoken's constructor for `name` without letting it fetch anything.

    ``tiktoken_ext.openai_public`` builds the split pattern and special tokens
    inside each constructor, so they cannot be imported as constants. Instead
    the constructor's code is run against a copy of its module globals in which
    ``load_tiktoken_bpe`` only records the URL and hash it was asked for. The
    real module is not modified, so other users of tiktoken are unaffected.
    """
    constructor = openai_public.ENCODING_CONSTRUCTORS[name]
    requests: list[tuple[str, str | None]] = []

    def record_request(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        requests.append((blobpath, expected_hash))
        return {}

    scoped_globals = dict(constructor.__globals__)
    scoped_globals["load_tiktoken_bpe"] = record_request
    probe = types.FunctionType(
        constructor.__code__,
        scoped_globals,
        constructor.__name__,
        constructor.__defaults__,
        constructor.__closure__,
    )
    params = probe()

    if len(requests) != 1 or params.get("mergeable_ranks") != {}:
        raise RuntimeError(
            f"tiktoken_ext.openai_public.{constructor.__name__} no longer loads its ranks with "
            f"a single load_tiktoken_bpe call (tiktoken {tiktoken.__version__}); "
            "exporter/signals/tokens.py needs updating"
        )
    url, expected_hash = requests[0]
    if expected_hash != ENCODING_SHA256[name]:
        raise RuntimeError(
            f"tiktoken {tiktoken.__version__} pins {name} to sha256 {expected_hash}, "
            f"but this exporter ships {ENCODING_SHA256[name]}"
        )
    return _EncodingSpec(url=url, expected_hash=expected_hash, params=params)


def _candidates(name: str, url: str, encodings_dir: Path | None) -> list[EncodingSource]:
    cache_key = hashlib.sha1(url.encode()).hexdigest()
    found = [EncodingSource(name, "packaged", _PACKAGED_DIR / f"{name}{_SUFFIX}")]
    if encodings_dir is not None:
        found.append(EncodingSource(name, "encodings_dir", encodings_dir / f"{name}{_SUFFIX}"))
        found.append(EncodingSource(name, "encodings_dir", encodings_dir / cache_key))
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if cache_dir:
        found.append(EncodingSource(name, "TIKTOKEN_CACHE_DIR", Path(cache_dir) / cache_key))
    return found


def _read_verified(path: Path, expected_hash: str) -> bytes:
    """Bytes of `path`; ValueError if they do not hash to `expected_hash`."""
    data = path.read_bytes()
    if not tiktoken.load.check_hash(data, expected_hash):
        actual = hashlib.sha256(data).hexdigest()
        raise ValueError(f"sha256 {actual} does not match expected {expected_hash}")
    return data


def _parse_ranks(data: bytes, origin: Path) -> dict[bytes, int]:
    """Parse tiktoken's rank format: one ``<base64 token> <rank>`` per line.

    Parsed here rather than with ``tiktoken.load.load_tiktoken_bpe`` because
    that function copies every local file it reads into tiktoken's cache
    directory, and raises if ``$TIKTOKEN_CACHE_DIR`` is set but not writable
    (e.g. a read-only volume pre-populated with the cache).
    """
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as exc:
            raise ValueError(f"{origin}:{lineno}: malformed rank line {line[:80]!r}") from exc
    return ranks


# --------------------------------------------------------------------------
# Counter
# --------------------------------------------------------------------------


class TokenCounter:
    """Counts tokens in model output with the encoding that fits the model.

    Construction finds and hash-checks a rank file for every supported encoding
    and raises `EncodingUnavailableError` if one is missing. Parsing a file and
    building the tiktoken encoding happens on first use of that encoding (or in
    `preload`), once per counter. Safe to share between threads.
    """

    ENCODINGS = (O200K_BASE, CL100K_BASE)

    def __init__(self, encodings_dir: str | None = None) -> None:
        user_dir = Path(encodings_dir).expanduser() if encodings_dir else None
        if user_dir is not None and not user_dir.is_dir():
            raise EncodingUnavailableError(f"encodings_dir {user_dir} is not a directory")

        self._lock = threading.Lock()
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._specs: dict[str, _EncodingSpec] = {}
        self._sources: dict[str, EncodingSource] = {}

        problems: list[str] = []
        for name in self.ENCODINGS:
            spec = _encoding_spec(name)
            self._specs[name] = spec
            source, rejected = self._locate(name, spec, user_dir)
            if source is None:
                problems.append(f"{name}: " + "; ".join(rejected))
            else:
                self._sources[name] = source
        if problems:
            raise EncodingUnavailableError(
                "no verified BPE rank file for: "
                + " | ".join(problems)
                + ". Restore the packaged files with scripts/fetch_encodings.sh, or point "
                "encodings_dir / TIKTOKEN_CACHE_DIR at a directory holding them."
            )

    @staticmethod
    def _locate(
        name: str, spec: _EncodingSpec, user_dir: Path | None
    ) -> tuple[EncodingSource | None, list[str]]:
        rejected: list[str] = []
        for candidate in _candidates(name, spec.url, user_dir):
            if not candidate.path.is_file():
                rejected.append(f"{candidate.describe()} missing")
                continue
            try:
                _read_verified(candidate.path, spec.expected_hash)
            except (OSError, ValueError) as exc:
                log.warning("ignoring %s rank file %s: %s", name, candidate.describe(), exc)
                rejected.append(f"{candidate.describe()} rejected ({exc})")
                continue
            return candidate, rejected
        return None, rejected

    def _encoding(self, name: str) -> tiktoken.Encoding:
        enc = self._encodings.get(name)
        if enc is not None:
            return enc
        with self._lock:
            enc = self._encodings.get(name)
            if enc is None:
                enc = self._load(name)
                self._encodings[name] = enc
            return enc

    def _load(self, name: str) -> tiktoken.Encoding:
        spec = self._specs[name]
        source = self._sources[name]
        started = time.perf_counter()
        try:
            data = _read_verified(source.path, spec.expected_hash)
        except (OSError, ValueError) as exc:
            raise EncodingUnavailableError(
                f"{name} rank file {source.describe()} became unusable after startup: {exc}"
            ) from exc
        ranks = _parse_ranks(data, source.path)
        enc = tiktoken.Encoding(**{**spec.params, "mergeable_ranks": ranks})
        log.info(
            "token encoding %s loaded from %s (sha256 verified, %.0f ms)",
            name,
            source.describe(),
            (time.perf_counter() - started) * 1000,
        )
        return enc

    def preload(self) -> None:
        """Build every encoding now instead of on first use."""
        for name in self.ENCODINGS:
            self._encoding(name)

    def load_in_background(self, name: str = DEFAULT_ENCODING) -> threading.Thread:
        """Start building encoding `name` on a thread. The exporter calls it at start for
        the default encoding (most models and every unknown one): built on first use, it
        stalled the event loop, and so a scrape, for about 0.4 s. It costs ~77 MiB of RSS
        whether or not a record ever needs counting; cl100k_base (~30 MiB, ~0.1 s) stays
        lazy. A record that needs it earlier waits for the thread (the build is locked)."""
        thread = threading.Thread(
            target=self._encoding, args=(name,), name=f"load-{name}", daemon=True
        )
        thread.start()
        return thread

    def count(self, text: str, model: str | None) -> tuple[int, str]:
        """Return ``(token_count, encoding_name)`` for `text` produced by `model`.

        Special-token strings such as ``<|endoftext|>`` are counted as ordinary
        text; they never raise.
        """
        name = encoding_name_for_model(model)
        if not text:
            return 0, name
        return len(self._encoding(name).encode_ordinary(text)), name

    def loaded_sources(self) -> dict[str, str]:
        """Encoding name -> ``<kind>:<path>`` of the verified file serving it.

        Known from construction on, so it can feed an info metric at startup.
        """
        return {name: source.describe() for name, source in self._sources.items()}
