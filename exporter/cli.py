"""Command line: run, replay, check-config, demo (DESIGN.md's contract)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import orjson

from exporter import __version__
from exporter.config import Config, ConfigError, load_config
from exporter.web.server import DEFAULT_LISTEN_ADDRESS, parse_listen_address, serve
from exporter.web.web_config import WebConfig, WebConfigError, load_web_config

log = logging.getLogger("exporter")


def _add_web_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN_ADDRESS,
        help=f"address to listen on for metrics, push and API (default {DEFAULT_LISTEN_ADDRESS})",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="exporter-toolkit web config (TLS, basic auth) protecting every route (default none)",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        help="path under which to expose metrics (default /metrics)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-drift-exporter",
        description="Prometheus exporter that detects drift in LLM request/response streams.",
    )
    parser.add_argument("--version", action="version", version=f"llm-drift-exporter {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the exporter until SIGTERM/SIGINT", parents=[common])
    run.add_argument("--config", required=True, help="YAML config file")
    _add_web_flags(run)

    replay = commands.add_parser(
        "replay", help="feed files through the pipeline and report", parents=[common]
    )
    replay.add_argument("--config", required=True, help="YAML config file")
    replay.add_argument("--report-json", dest="report_json", help="write the JSON report here")
    replay.add_argument("paths", nargs="+", metavar="PATH", help="JSON-lines files to replay")

    baseline = commands.add_parser(
        "baseline",
        help="learn baselines from known-good files into state_dir, then exit",
        parents=[common],
    )
    baseline.add_argument("--config", required=True, help="YAML config file (with state_dir)")
    baseline.add_argument("paths", nargs="+", metavar="PATH", help="known-good JSON-lines files")

    check = commands.add_parser("check-config", help="validate a config file", parents=[common])
    check.add_argument("file", help="YAML config file")

    demo = commands.add_parser(
        "demo", help="serve metrics for built-in synthetic LLM traffic", parents=[common]
    )
    _add_web_flags(demo)
    return parser


def _load(path: str, require_inputs: bool) -> Config | None:
    try:
        return load_config(path, require_inputs=require_inputs)
    except ConfigError as error:
        for message in error.errors:
            print(message, file=sys.stderr)
        return None


def _check_listen_address(address: str) -> bool:
    try:
        parse_listen_address(address)
    except ValueError as exc:
        print(f"--web.listen-address: {exc}", file=sys.stderr)
        return False
    return True


def _web_config(args: argparse.Namespace) -> tuple[bool, WebConfig | None]:
    if not args.web_config_file:
        return True, None
    try:
        return True, load_web_config(args.web_config_file)
    except WebConfigError as exc:
        print(f"--web.config.file: {exc}", file=sys.stderr)
        return False, None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file, require_inputs=True)
    if config is None:
        return 1
    print(
        f"{args.file}: OK ({len(config.inputs)} input(s), stream labels "
        f"{', '.join(config.stream_labels)})"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from exporter.service import Exporter

    config = _load(args.config, require_inputs=True)
    web_ok, web_config = _web_config(args)
    if config is None or not web_ok or not _check_listen_address(args.listen_address):
        return 1
    try:
        exporter = Exporter(config)
    except (OSError, ValueError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    clean = asyncio.run(serve(exporter, args.listen_address, args.telemetry_path, web_config))
    return 0 if clean else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from exporter import demo
    from exporter.service import Exporter

    web_ok, web_config = _web_config(args)
    if not web_ok or not _check_listen_address(args.listen_address):
        return 1
    exporter = Exporter(demo.DEMO_CONFIG)
    exporter.add_source("demo", "demo", demo.feed)
    host = args.listen_address
    print(
        f"demo: synthetic LLM traffic on 3 streams; drifts: {demo.schedule_text()}; "
        f"metrics at http://"
        f"{'localhost' + host if host.startswith(':') else host}{args.telemetry_path}",
        file=sys.stderr,
    )
    asyncio.run(serve(exporter, args.listen_address, args.telemetry_path, web_config))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from exporter.replay import build_report, max_line_bytes_of, print_summary, replay_files
    from exporter.streams.pipeline import Pipeline

    config = _load(args.config, require_inputs=False)
    if config is None:
        return 1
    pipeline = Pipeline(config)
    progress = sys.stderr if sys.stderr.isatty() else None
    try:
        summary = replay_files(pipeline, args.paths, max_line_bytes_of(config), progress)
    except OSError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    print_summary(pipeline, summary)
    if args.report_json:
        report = build_report(pipeline, summary)
        with open(args.report_json, "wb") as out:
            out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from exporter.replay import max_line_bytes_of, replay_files
    from exporter.streams.pipeline import Pipeline
    from exporter.streams.state import StateStore

    config = _load(args.config, require_inputs=False)
    if config is None:
        return 1
    if not config.state_dir:
        print(f"{args.config}: state_dir: required by the baseline command", file=sys.stderr)
        return 1
    pipeline = Pipeline(config, learn_only=True)
    try:
        replay_files(pipeline, args.paths, max_line_bytes_of(config))
    except OSError as exc:
        print(f"baseline: {exc}", file=sys.stderr)
        return 1
    names = pipeline.streams.label_names
    for stream in sorted(pipeline.streams, key=lambda s: s.labels):
        assert stream.detectors is not None
        labels = ", ".join(f"{n}={v}" for n, v in zip(names, stream.labels, strict=True))
        states = ", ".join(
            f"{signal} {'ready' if d.baseline_ready else 'NOT ready (too few records)'}"
            for signal, d in stream.detectors.detectors.items()
        )
        print(f"{{{labels}}}: {stream.records} records; {states}")
    store = StateStore(config.state_dir)
    if not store.save(pipeline):
        return 1
    print(f"baselines written to {store.path}; `run` with this config starts from them")
    return 0


COMMANDS = {
    "run": cmd_run,
    "replay": cmd_replay,
    "check-config": cmd_check_config,
    "baseline": cmd_baseline,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
    )
    # One line per scrape drowns the lines that matter; access logs only at debug.
    if args.log_level != "debug":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return COMMANDS[args.command](args)
