"""Real Prometheus and Alertmanager processes for end-to-end tests, on loopback ports.

Binaries come from Debian's `prometheus` and `prometheus-alertmanager`
packages (scripts/install-system-deps installs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.process import free_port

ALERTMANAGER_BINARIES = ("alertmanager", "prometheus-alertmanager")


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(f"none of {names} on PATH; run scripts/install-system-deps")


class Server:
    """A started binary with a loopback HTTP API; stopped by `stop()`."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.log = log
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, path: str = "/-/ready", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.log.read_text())
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(self.log.read_text())

    def get_json(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._log.close()


def start_prometheus(workdir: Path, targets: list[str], rule_files: list[Path],
                     alertmanager: str | None = None) -> Server:
    port = free_port()
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "llm-drift-exporter",
                            "static_configs": [{"targets": targets}]}],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    server = Server(
        [binary("prometheus"), f"--config.file={path}",
         f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        port, workdir / "prometheus.log")
    server.wait_ready()
    return server


def start_alertmanager(workdir: Path, webhook_url: str) -> Server:
    port = free_port()
    config = {
        "route": {"receiver": "test", "group_by": ["alertname", "model", "route"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook_url,
                                                            "send_resolved": True}]}],
    }
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    server = Server(
        [binary(*ALERTMANAGER_BINARIES), f"--config.file={path}",
         f"--storage.path={workdir / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        port, workdir / "alertmanager.log")
    server.wait_ready()
    return server


class WebhookReceiver:
    """Collects Alertmanager webhook notifications (JSON bodies) in a background thread."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def alerts(self, status: str) -> list[dict[str, Any]]:
        return [alert for n in self.notifications for alert in n["alerts"]
                if alert["status"] == status]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def with_short_for(rules_file: Path, target: Path, duration: str = "1s") -> Path:
    """A copy of shipped rules with every `for:` shortened (only for the wiring test)."""
    document = yaml.safe_load(rules_file.read_text())
    for group in document["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "alert" in rule and "for" in rule:
                rule["for"] = duration
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target
