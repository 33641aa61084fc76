"""Scale-out on Kafka, measured on a real broker with real exporter processes.

    python benchmarks/bench_kafka.py scaling [--streams 40] [--warm-up 1500] [--records 100000]
    python benchmarks/bench_kafka.py handoff [--streams 1000] [--per-stream 1100] [--settle 150]

`scaling`: records/s of one consumer against two in one group, on the same records, side by
side. Baselines are learned and thresholds simulated during a warm-up; the members are then
stopped (their state checkpointed), the measured records produced, and each group started
again: the clock runs from the first measured record counted to the last, so start-up,
restores and the producer are outside it. `handoff`: one member holds every partition and
1,000 learned streams; live traffic goes on for `--settle` seconds (the broker's log cleaner
compacts the changelog meanwhile, as in the hours after a learning); then it is stopped
(SIGTERM: it revokes them, checkpointing first); a few new records are produced and a
second member takes every partition: the handoff is the revocation's checkpoint plus the
assignment, from its start (committed offsets, changelog read, streams restored) to its
first record processed, as each member measures and logs it. Nothing scrapes the new
member until then (a scrape of 1,000 streams holds its event loop).

Both start their own broker (tests/kafka_broker.py) and exporter processes
(tests/kafka_members.py), and print a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.kafka_traffic import records  # noqa: E402
from tests.kafka_broker import KafkaBroker, produce_keyed  # noqa: E402
from tests.kafka_members import member_config, progress, start_member, wait_caught_up  # noqa: E402

PARTITIONS = 12
TOPIC = "llm-bench"
UNKEYED = "llm-bench-unkeyed"


def _counted(members: list) -> float:
    return sum(progress(m)["records"] for m in members)


def _timed_catch_up(members: list, before: float, total: float) -> float:
    """Seconds from the first record beyond `before` counted to `total` counted."""
    started = None
    while True:
        counted = _counted(members)
        now = time.perf_counter()
        if started is None and counted > before:
            started = now
        if counted >= total:
            return now - (started or now)
        time.sleep(0.05)


def scaling(args: argparse.Namespace, broker: KafkaBroker, work: Path) -> None:
    """One consumer, two, and one with `repartition: true` on the same records unkeyed."""
    runs = [("1 consumer", TOPIC, 1, ""), ("2 consumers", TOPIC, 2, ""),
            ("1 consumer, repartition: true (topic not keyed)", UNKEYED, 1,
             "    repartition: true\n")]
    warm = args.streams * args.warm_up

    def produce(count: int, seed: int) -> None:
        lines = list(records(count, args.streams, seed=seed, drift_after=2))
        produce_keyed(broker.bootstrap, TOPIC, lines)
        produce_keyed(broker.bootstrap, UNKEYED, [(None, line) for _, line in lines])

    for topic in (TOPIC, UNKEYED):
        broker.create_topic(topic, PARTITIONS)
    produce(warm, seed=1)
    configs = [member_config(work, broker.bootstrap, topic, f"group-{n}", extra)
               for n, (_, topic, _, extra) in enumerate(runs)]
    for n, ((_, _, size, _), config) in enumerate(zip(runs, configs, strict=True)):
        members = [start_member(config, work, f"warm-{n}-{i}") for i in range(size)]
        wait_caught_up(members, warm, PARTITIONS)  # baselines learned, thresholds simulated
        time.sleep(3.0)  # then a checkpoint holds them
        for member in members:
            member.stop(60)
    produce(args.records, seed=2)
    rates = []
    for n, ((_, _, size, _), config) in enumerate(zip(runs, configs, strict=True)):
        members = [start_member(config, work, f"run-{n}-{i}") for i in range(size)]
        seconds = _timed_catch_up(members, warm, warm + args.records)
        rates.append(args.records / seconds)
        for member in members:
            member.stop(60)
    print(f"\n{os.cpu_count()} CPUs shared by the broker and the members; {args.streams} "
          f"streams, {PARTITIONS} partitions, {args.records:,} measured records after "
          f"{warm:,} of warm-up, all four signals\n")
    print("| consumers | records/s | vs one |\n| --- | ---: | ---: |")
    for (label, _, _, _), rate in zip(runs, rates, strict=True):
        print(f"| {label} | {rate:,.0f} | {rate / rates[0]:.2f}x |")


def handoff(args: argparse.Namespace, broker: KafkaBroker, work: Path) -> None:
    broker.create_topic(TOPIC, PARTITIONS)
    total = args.streams * args.per_stream
    produce_keyed(broker.bootstrap, TOPIC, records(total, args.streams, seed=3, drift_after=2))
    config = member_config(work, broker.bootstrap, TOPIC, "handoff")
    first = start_member(config, work, "first")
    wait_caught_up([first], total, PARTITIONS, timeout=3600)
    total += _live(broker, args)
    wait_caught_up([first], total, PARTITIONS, timeout=300)
    time.sleep(3.0)  # a checkpoint holds every calibration finished
    assert first.stop(120) == 0  # revokes every partition: checkpoints, then leaves
    revocation = _logged_seconds(first.log_path, "revoked")
    probes = list(records(4 * PARTITIONS, args.streams, seed=4, drift_after=2))
    produce_keyed(broker.bootstrap, TOPIC, probes)
    second = start_member(config, work, "second")
    _wait_logged(second.log_path, "first records")  # no scrapes meanwhile: they take the loop
    wait_caught_up([second], total + len(probes), PARTITIONS, timeout=300)
    samples = second.samples()
    restored = sum(v for (n, _), v in samples.items()
                   if n == "llm_exporter_kafka_changelog_restores_total")
    assignment = max(v for (n, _), v in samples.items()
                     if n == "llm_exporter_kafka_last_assignment_seconds")
    second.stop(120)
    print(*[line.split("msg=")[1] for line in second.log_path.read_text().splitlines()
            if "msg=restored" in line or "msg=first records" in line], sep="\n")
    print(f"\n{os.cpu_count()} CPUs; {args.streams} streams learned on {args.per_stream} "
          f"records each, then {args.settle:.0f} s of live traffic ({args.rate} records/s), "
          f"{PARTITIONS} partitions, all four signals\n")
    print("| step | seconds |\n| --- | ---: |")
    print(f"| revocation on the old owner: every stream checkpointed, then dropped | "
          f"{revocation:.2f} |")
    print(f"| assignment on the new owner: committed offsets, changelog read, {restored:.0f} "
          f"streams restored, first record processed | {assignment:.2f} |")
    print(f"| handoff | {revocation + assignment:.2f} |")


def _live(broker: KafkaBroker, args: argparse.Namespace) -> int:
    """`--settle` seconds of live traffic (`--rate` records a second, every stream): the
    checkpoints go on and the broker's log cleaner compacts the changelog meanwhile, as
    it would in the hours between a stream's learning and a handoff. The records sent."""
    sent, second = 0, 0
    started = time.monotonic()
    while time.monotonic() - started < args.settle:
        batch = records(args.rate, args.streams, seed=100 + second, drift_after=2)
        sent += len(produce_keyed(broker.bootstrap, TOPIC, batch))
        second += 1
        time.sleep(max(0.0, started + second - time.monotonic()))
    return sent


def _wait_logged(log: Path, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while f"msg={what}" not in log.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what!r} in {log}")
        time.sleep(0.2)


def _logged_seconds(log: Path, what: str) -> float:
    """The seconds the last `what` log line of a member reports ("... in 0.123 s")."""
    lines = [line for line in log.read_text().splitlines() if f"msg={what}" in line]
    return float(lines[-1].rsplit(" in ", 1)[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    scale = sub.add_parser("scaling")
    scale.add_argument("--streams", type=int, default=40)
    scale.add_argument("--warm-up", type=int, default=1500, help="records per stream")
    scale.add_argument("--records", type=int, default=100_000)
    hand = sub.add_parser("handoff")
    hand.add_argument("--streams", type=int, default=1000)
    hand.add_argument("--per-stream", type=int, default=1100)
    hand.add_argument("--settle", type=float, default=150.0,
                      help="seconds of live traffic between the learning and the handoff")
    hand.add_argument("--rate", type=int, default=200, help="records/s of live traffic")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        work = Path(tmp)
        broker = KafkaBroker()
        broker.start(work / "broker")
        try:
            (scaling if args.what == "scaling" else handoff)(args, broker, work)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
