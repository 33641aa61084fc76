"""A real Prometheus, with the shipped rules, scraping every member of a Kafka consumer group
while the group's streams move and records keep coming: one member is SIGKILLed, a fourth
joins, then one of the first leaves (SIGTERM, as in a rolling update).

What a user sees in Prometheus must stay right across the moves (rules header, "STREAMS THAT
MOVE BETWEEN INSTANCES"): each stream's `sum without (instance, job) (llm_records_total)` ends
at the records sent to it; it has no gap longer than a session timeout and a rebalance; it
never goes down, but where a SIGKILL took back what the dead member counted after its last
checkpoint (at most ~1 s of counting); and `llm:drift_detected:bridged5m` has no gap at all.
Which instance served which stream when is read from Prometheus too (`llm_records_total` with
its `instance` label), so the moves are checked where a user would see them. The test writes
every stream's story and the numbers (gaps, dips) to report.json in its tmp_path.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks.kafka_traffic import records
from tests.kafka_broker import KafkaBroker, produce_keyed
from tests.kafka_members import SESSION_TIMEOUT, member_config, progress, wait_caught_up
from tests.process import ExporterProcess, free_port
from tests.prom import Server, start_prometheus

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RULES = Path(__file__).resolve().parents[1] / "rules" / "llm-drift-exporter.rules.yml"
TOPIC = "llm-prometheus"
PARTITIONS = 12
STREAMS = 48
ROUNDS, ROUND_RECORDS, ROUND_SECONDS = 40, 750, 1.0  # 30,000 records over 40 s
# a stream may be unserved for the session timeout (the dead member's partitions wait for
# it), the rebalance, the changelog restore and the next scrape: seconds, with a margin
MAX_GAP = SESSION_TIMEOUT + 9
# A SIGKILL loses what the dead member counted after its last checkpoint, which is at most
# `checkpoint_interval` (1 s) plus one transaction (well under 1 s) old. Its last sample in
# Prometheus was scraped at most 1 s before the kill, so the sample KILL_WINDOW (3) steps
# earlier was taken before that checkpoint: a dip larger than what the stream's counter rose
# over those 3 s is a lost or double-counted record, not the checkpoint's age.
KILL_WINDOW = 3
Stream = tuple[str, str]  # (model, route): the stream labels
Steps = dict[int, float]  # step index (seconds since the first step) -> value


class Traffic(threading.Thread):
    """Sends the records in rounds while the group runs, so that every move happens under
    load; counts what each stream was sent."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.sent: Counter[Stream] = Counter()
        self.error: BaseException | None = None

    def run(self) -> None:
        source = records(ROUNDS * ROUND_RECORDS, STREAMS, seed=23)
        start = time.monotonic()
        try:
            for n in range(ROUNDS):
                batch = list(itertools.islice(source, ROUND_RECORDS))
                produce_keyed(self.bootstrap, TOPIC, batch)
                self.sent.update(tuple(orjson.loads(key)) for key, _ in batch)
                time.sleep(max(0.0, start + (n + 1) * ROUND_SECONDS - time.monotonic()))
        except BaseException as exc:  # the test thread reports it
            self.error = exc

    @property
    def total(self) -> int:
        return ROUNDS * ROUND_RECORDS


def test_prometheus_sees_every_stream_continue_across_a_kill_a_join_and_a_leave(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    traffic = Traffic(kafka_broker.bootstrap)
    found, events = _run_group(kafka_broker, tmp_path, traffic)
    report = _follow_all(found, traffic.sent, events)
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report["summary"], indent=1))  # the numbers, shown with -s
    assert sorted(found["sum"]) == sorted(traffic.sent), "streams missing in Prometheus"
    assert not report["problems"], report["problems"][:20]
    summary = report["summary"]
    assert summary["streams_moved_by_kill"], "no stream moved off the killed member"
    assert summary["streams_to_joiner"], "no stream moved to the joining member"
    assert summary["streams_off_leaver"], "no stream moved off the member that left"
    assert summary["streams_only_graceful"], "no stream that only moved gracefully"


def _run_group(broker: KafkaBroker, workdir: Path, traffic: Traffic
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Three members start; a quarter in, one is SIGKILLed; once its partitions have moved
    (after the session timeout), a fourth joins (revocations: graceful moves to it); later
    one of the first leaves (SIGTERM: graceful moves off it, as in a rolling update). Returns
    what Prometheus recorded, and who was killed, joined and left at which step."""
    ports: set[int] = set()
    while len(ports) < 4:  # every member's address is a scrape target from the start
        ports.add(free_port())
    first, second, third, fourth = sorted(ports)
    broker.create_topic(TOPIC, PARTITIONS)
    prometheus = start_prometheus(workdir, [f"127.0.0.1:{p}" for p in ports], [RULES])
    config = member_config(workdir, broker.bootstrap, TOPIC, "prometheus-group")

    def member(name: str, port: int) -> ExporterProcess:
        started = ExporterProcess(["run", "--config", str(config)], workdir / f"{name}.log",
                                  port=port)
        members.append(started)
        started.wait_ready(timeout=60)
        return started

    members: list[ExporterProcess] = []
    try:
        begin = math.floor(time.time())  # whole seconds: step n of a range query is begin + n
        leaver, killed, stayer = (member(f"member-{i}", port)
                                  for i, port in enumerate((first, second, third)))
        traffic.start()
        _until(lambda: _owned(members) == PARTITIONS
               and _counted(members) >= traffic.total // 4, "a quarter counted")
        assert progress(killed)["partitions"] > 0, "the member to kill owns nothing"
        killed.kill()  # no checkpoint: its streams resume from the last one elsewhere
        kill_step = round(time.time() - begin)
        _until(lambda: _owned([leaver, stayer]) == PARTITIONS, "the dead member's partitions")
        joiner = member("member-3", fourth)
        live = [leaver, stayer, joiner]
        _until(lambda: progress(joiner)["partitions"] > 0 and _owned(live) == PARTITIONS
               and _counted(live) >= traffic.total * 7 // 10, "the joiner took partitions")
        assert progress(leaver)["partitions"] > 0, "the member to stop owns nothing"
        leave_step = round(time.time() - begin)
        assert leaver.stop(60) == 0  # revoked: it checkpoints, then its partitions move
        live.remove(leaver)
        _until(lambda: _owned(live) == PARTITIONS, "the partitions of the member that left")
        traffic.join(ROUNDS * ROUND_SECONDS + 60)
        assert not traffic.is_alive() and traffic.error is None, traffic.error
        wait_caught_up(live, traffic.total, PARTITIONS, timeout=60)
        time.sleep(5)  # the last values scraped, the rules evaluated on them
        # up to the last whole second whose scrapes have all been stored
        found = _query(prometheus, begin, math.floor(time.time()) - 1)
    finally:
        for started in members:
            if started.process.poll() is None:
                assert started.stop(60) == 0
        prometheus.stop()
    events = {"killed": killed.address, "kill_step": kill_step, "joiner": joiner.address,
              "leaver": leaver.address, "leave_step": leave_step}
    return found, events


def _until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def _owned(members: list[ExporterProcess]) -> float:
    return sum(progress(m)["partitions"] for m in members)


def _counted(members: list[ExporterProcess]) -> float:
    return sum(progress(m)["records"] for m in members)


def _range(prometheus: Server, query: str, begin: int, end: int,
           labels: tuple[str, ...]) -> dict[tuple[str, ...], Steps]:
    """A range query at 1 s steps from `begin`: each series (keyed by `labels`) as
    step index -> value."""
    answer = prometheus.get_json("/api/v1/query_range", query=query, start=str(begin),
                                 end=str(end), step="1")
    assert answer["status"] == "success", answer
    return {tuple(series["metric"].get(name, "") for name in labels):
            {round(float(t) - begin): float(v) for t, v in series["values"]}
            for series in answer["data"]["result"]}


def _query(prometheus: Server, begin: int, end: int) -> dict[str, Any]:
    raw = prometheus.get_json("/api/v1/query", time=str(end),
                              query=f"llm:drift_detected:bridged5m[{end - begin + 1}s]")
    assert raw["status"] == "success", raw
    return {
        "steps": end - begin + 1,
        "sum": _range(prometheus, "sum without (instance, job) (llm_records_total)",
                      begin, end, ("model", "route")),
        "per_instance": _range(prometheus, "llm_records_total", begin, end,
                               ("model", "route", "instance")),
        "bridged": _range(prometheus, "llm:drift_detected:bridged5m", begin, end,
                          ("model", "route", "signal")),
        "bridged_raw": {(s["metric"]["model"], s["metric"]["route"], s["metric"]["signal"]):
                        [float(t) for t, _ in s["values"]] for s in raw["data"]["result"]},
    }


def _follow_all(found: dict[str, Any], sent: Counter[Stream], events: dict[str, Any]
                ) -> dict[str, Any]:
    """Every stream's story (owners, moves, gaps, dips) and what contradicts the claims."""
    owners: dict[Stream, dict[int, dict[str, float]]] = {}
    for (model, route, instance), steps in found["per_instance"].items():
        for step, value in steps.items():
            owners.setdefault((model, route), {}).setdefault(step, {})[instance] = value
    problems: list[str] = []
    streams: dict[str, Any] = {}
    last = found["steps"] - 1
    for stream, total in sorted(sent.items()):
        story = _follow(found["sum"].get(stream, {}), owners.get(stream, {}), events, last)
        problems += [f"{stream}: {p}" for p in story.pop("problems")]
        final = story["values"][-1][1] if story["values"] else None
        if final != total:
            problems.append(f"{stream}: ends at {final} in Prometheus, {total} records sent")
        problems += [f"{stream}: {p}" for p in _bridged(found, stream, story, last)]
        streams[" ".join(stream)] = story
    stories = list(streams.values())

    def moved(kind: str) -> int:
        return sum(any(m["kind"] == kind for m in s["moves"]) for s in stories)

    def of(kind: str, key: str) -> list[float]:
        return sorted(m[key] for s in stories for m in s["moves"] if m["kind"] == kind)

    summary = {
        "streams": len(streams), "steps": found["steps"], "kill_step": events["kill_step"],
        "leave_step": events["leave_step"], "bridged_series": len(found["bridged"]),
        "streams_moved_by_kill": moved("kill"), "streams_to_joiner": moved("join"),
        "streams_off_leaver": moved("leave"),
        "streams_only_graceful": sum(bool(s["moves"]) and all(m["kind"] != "kill"
                                                              for m in s["moves"])
                                     for s in stories),
        **{f"{kind}_{key}": of(kind, key) for kind in ("kill", "join", "leave", "graceful")
           for key in ("gap", "dip")},
        "kill_dip_bound": of("kill", "dip_bound"),
        "overlap_steps": sum(s["overlap_steps"] for s in stories),
        "bridged_max_raw_spacing_s": max((s["bridged_max_spacing"] for s in stories),
                                         default=None),
        "bridged_steps_without_owner": sum(s["bridged_unowned"] for s in stories),
        "problems": len(problems),
    }
    return {"summary": summary, "problems": problems, "streams": streams}


def _kind(before: str, after: str, left: int, events: dict[str, Any]) -> str:
    """What moved a stream that was last on `before` at step `left`: the kill (its last
    scrape is at most ~1 s before it), the leave, the join, or another revocation (the
    group forming); or a gap on one instance."""
    if before == after:
        return "gap"
    if before == events["killed"] and left >= events["kill_step"] - 2:
        return "kill"
    if before == events["leaver"] and left >= events["leave_step"] - 2:
        return "leave"
    return "join" if after == events["joiner"] else "graceful"


def _follow(total: Steps, owners: dict[int, dict[str, float]], events: dict[str, Any],
            last: int) -> dict[str, Any]:
    """One stream: which instance served it when, its moves with the gap and the dip of each,
    and every gap or fall that the claims do not allow.

    Where two instances have the stream at one step, the one it left still shows its last
    sample: Prometheus keeps a vanished series until its target's next scrape. The sum counts
    the stream twice there (a spike of at most one scrape interval, which `rate` first, then
    `sum`, as the rules do, never sees); the stream's own count is then the newer owner's. Only
    that is let pass: the old instance's value must be its last one, held, not a new count.
    """
    problems: list[str] = []
    present = sorted(total)
    if not present:
        return {"values": [], "moves": [], "segments": [], "overlap_steps": 0,
                "problems": ["never in Prometheus"]}
    if present[-1] != last:
        problems.append(f"gone at the end (last seen at step {present[-1]} of {last})")
    count: Steps = {}  # the stream's count: the sum, or the newer owner's at an overlap
    segments: list[list[Any]] = []  # [instance, first step, last step], no gap within
    overlap = 0
    for step in present:
        here = owners.get(step, {})
        if sum(here.values()) != total[step]:
            problems.append(f"sum {total[step]} at step {step} is not that of {here}")
        before = owners.get(step - 1, {})
        owner = max(here, key=lambda i: (here[i], i not in before), default="?")
        count[step] = here.get(owner, total[step])
        if len(here) > 1:
            overlap += 1
            held = {i: v for i, v in here.items() if i != owner}
            if len(here) > 2 or any(before.get(i) != v for i, v in held.items()):
                problems.append(f"served by {here} at step {step} (before: {before})")
        if segments and segments[-1][0] == owner and segments[-1][2] == step - 1:
            segments[-1][2] = step
        else:
            segments.append([owner, step, step])
    moves = []
    for (before, _, left), (after, came, _) in itertools.pairwise(segments):
        kind = _kind(before, after, left, events)
        dip = max(0.0, count[left] - count[came])
        bound = count[left] - _at_or_before(count, left - KILL_WINDOW)
        moves.append({"from": before, "to": after, "kind": kind, "left": left, "came": came,
                      "gap": came - left - 1, "dip": dip, "dip_bound": bound})
        if came - left - 1 > MAX_GAP:
            problems.append(f"unserved for {came - left - 1} s (steps {left}..{came}), "
                            f"more than {MAX_GAP} s")
        if dip and kind != "kill":
            problems.append(f"fell by {dip} at a {kind} move {before} -> {after} "
                            f"(steps {left} -> {came})")
        if kind == "kill" and dip > bound:
            problems.append(f"fell by {dip} after the kill, more than the {bound} counted "
                            f"in its last {KILL_WINDOW} s on the killed member")
    moved = {(m["left"], m["came"]) for m in moves}
    for a, b in itertools.pairwise(present):
        if count[b] < count[a] and (a, b) not in moved:
            problems.append(f"fell from {count[a]} to {count[b]} at step {b} on one instance")
    return {"segments": segments, "moves": moves, "overlap_steps": overlap,
            "values": [(s, total[s]) for s in present], "problems": problems}


def _at_or_before(values: Steps, step: int) -> float:
    """The value at `step`, else at the step before it closest to it; 0 before the first."""
    earlier = [s for s in values if s <= step]
    return values[max(earlier)] if earlier else 0.0


def _bridged(found: dict[str, Any], stream: Stream, story: dict[str, Any],
             last: int) -> list[str]:
    """`llm:drift_detected:bridged5m` of the stream: every signal's series, once it starts,
    at every step to the end, also while no instance serves the stream. A rule evaluation
    without the series would have written a stale marker, which ends it at the next step. (The
    spacing of its raw samples, Prometheus' evaluation schedule, is only reported.)"""
    problems: list[str] = []
    story["bridged_unowned"] = 0
    story["bridged_max_spacing"] = 0.0
    series = {signal: steps for (model, route, signal), steps in found["bridged"].items()
              if (model, route) == stream}
    if not series:
        return ["no llm:drift_detected:bridged5m series"]
    served = {s for segment in story["segments"] for s in range(segment[1], segment[2] + 1)}
    for signal, steps in sorted(series.items()):
        first = min(steps)
        missing = [s for s in range(first, last + 1) if s not in steps]
        if missing:
            problems.append(f"bridged {signal} missing at steps {missing[:10]}")
        story["bridged_unowned"] += sum(1 for s in steps if s not in served)
        times = found["bridged_raw"].get((*stream, signal), [])
        spacing = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
        story["bridged_max_spacing"] = max(story["bridged_max_spacing"], spacing)
    return problems
