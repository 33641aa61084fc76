"""The Dockerfile and deploy/ example, checked with the real tools available here.

No Docker engine runs on these machines, so the image's Python environment is
built the way the Dockerfile builds it (a venv with `pip install .` of the
package, not the source tree) and exercised offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines()
            if line.strip().upper().startswith(name + " ")]


def test_dockerfile_shape():
    assert all("python:3.11-slim" in base for base in instructions("FROM"))
    assert instructions("USER") == ["exporter"]
    assert any("/-/healthy" in check for check in instructions("HEALTHCHECK"))
    assert instructions("VOLUME") == ['["/var/lib/llm-drift-exporter"]']
    assert instructions("EXPOSE") == ["9847"]
    for copy in instructions("COPY"):
        if copy.startswith("--from"):
            continue
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source


@pytest.mark.e2e
def test_image_environment_installs_and_counts_tokens_offline(tmp_path):
    """`pip install .` into a fresh venv, as the Dockerfile does; then, outside the source
    tree and with the network blocked, check the config and count tokens."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True,
                   timeout=900)
    check = subprocess.run([str(venv / "bin" / "llm-drift-exporter"), "check-config",
                            str(ROOT / "deploy" / "docker" / "config.yaml")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    offline = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "import exporter, exporter.signals.tokens as t\n"
        "assert 'site-packages' in exporter.__file__, exporter.__file__\n"
        "c = t.TokenCounter(); c.preload()\n"
        "print(c.count('hello world', 'gpt-4o'), c.count('hello world', 'gpt-4'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TIKTOKEN_CACHE_DIR")}
    env["TIKTOKEN_CACHE_DIR"] = str(tmp_path / "empty-cache")
    result = subprocess.run([str(python), "-c", offline], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 'o200k_base') (2, 'cl100k_base')"


def require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} missing in CI (scripts/install-system-deps installs it)")
        pytest.skip(f"{tool} not installed (scripts/install-system-deps)")
    return found


def test_deploy_prometheus_config_is_valid():
    result = subprocess.run([require("promtool"), "check", "config",
                             str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_mounts_what_the_repository_ships():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / "deploy" / source).resolve().exists(), source
    assert re.search(r"/-/healthy", DOCKERFILE)
