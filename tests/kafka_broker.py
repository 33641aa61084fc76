"""A real Apache Kafka 4.4 broker for the tests: one KRaft node on loopback, from the official jars.

The Kafka input's behaviour that matters (consumer-group rebalances, keyed partitioning,
compacted topics, a broker that goes away and comes back) belongs to the broker and to
librdkafka, so the tests run against the real thing rather than a fake of our own making.
`scripts/install-kafka` puts the jars in a cache (`$LLM_DRIFT_KAFKA_HOME`, by default
`~/.cache/llm-drift-exporter/kafka-4.4.0`); `kafka_lib_dir()` runs it when they are not there,
so a fresh CI machine needs nothing else. One JVM is both broker and controller, with its own
free ports, data directory and log file, so several brokers (pytest-xdist workers) coexist.

Tests take the session-scoped `kafka_broker` fixture once tests/conftest.py registers this
module (`pytest_plugins = ["tests.kafka_broker"]`)::

    def test_reads_events(kafka_broker: KafkaBroker) -> None:
        kafka_broker.create_topic("events", partitions=12)
        produce_keyed(kafka_broker.bootstrap, "events", [(b"stream-a", b"{}")])

A test that needs the broker gone ("broker unavailable") can `kill()` or `stop()` it and must
`restart()` it before it ends (try/finally), because the other tests share it; or it starts a
private `KafkaBroker` in its own tmp_path.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

KAFKA_VERSION = "4.4.0"
REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO / "scripts" / "install-kafka"
POM = REPO / "deploy" / "kafka" / "pom.xml"
NODE_ID = 1
# librdkafka logs every refused connection (ten a second while a broker is down) to stderr;
# the clients made here send their logs to this logger instead, which pytest shows on failure.
RDKAFKA_LOG = logging.getLogger("tests.kafka_broker.librdkafka")

# A test broker lives for seconds and moves little data: the serial collector and C1-only JIT
# cut format + start from 3.0 s to 2.4 s (medians of 5, 2-core machine). SLF4J's simple
# logger writes to stderr, which goes to the broker's log file, with timestamps.
JVM_OPTIONS = (
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
)


def kafka_home() -> Path:
    """Where scripts/install-kafka keeps the jars: the same default as the script."""
    default = Path.home() / ".cache" / "llm-drift-exporter" / f"kafka-{KAFKA_VERSION}"
    return Path(os.environ.get("LLM_DRIFT_KAFKA_HOME") or default)


@functools.cache
def kafka_lib_dir() -> Path:
    """The directory of Kafka's jars; runs scripts/install-kafka (once) when they are missing.

    The script's marker holds the sha256 of deploy/kafka/pom.xml, so an edited pom resolves
    again. It also installs Java (as root), so it runs when there is no java on PATH either.
    Fails, never skips: CI installs everything, so a missing broker is a broken setup.
    """
    home = kafka_home()
    marker = home / "installed.sha256"
    want = hashlib.sha256(POM.read_bytes()).hexdigest()
    installed = marker.is_file() and marker.read_text().strip() == want
    if not installed or shutil.which("java") is None:
        result = subprocess.run([str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"scripts/install-kafka failed (exit {result.returncode}); the Kafka tests "
                f"need Java 17+ and the Kafka jars:\n{result.stdout}{result.stderr}"
            )
    if shutil.which("java") is None:
        raise RuntimeError("no java on PATH after scripts/install-kafka; install Java 17+")
    return home / "lib"


def _client_config(bootstrap: str, config: dict[str, object]) -> dict[str, object]:
    """librdkafka settings for a client of `bootstrap`, logging to RDKAFKA_LOG, plus `config`."""
    return {"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG, **config}


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports; all bound at once so the kernel never repeats one."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _cluster_id() -> str:
    """A random 22-character base64url id like `StorageTool random-uuid`'s; like Kafka's
    Uuid.randomUuid, never one starting with "-", which a command line takes for an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass
class KafkaBroker:
    """One Kafka process that is broker and KRaft controller, on 127.0.0.1.

    `start()` picks the ports and formats the data directory; `restart()` keeps both, so the
    broker comes back at the same address with the same data, as a real one does.
    """

    start_timeout: float = 60.0
    stop_timeout: float = 30.0
    port: int = 0
    controller_port: int = 0
    workdir: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """`bootstrap.servers` for clients: "127.0.0.1:<port>"."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path:
        return self._dir / "broker.log"

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("KafkaBroker.start() has not been called")
        return self.workdir

    def start(self, workdir: Path) -> None:
        """Configure, format and start the broker in `workdir`; return once it answers."""
        if self.workdir is not None:
            raise RuntimeError(f"this broker already lives in {self.workdir}; use restart()")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.controller_port = _free_ports(2)
        properties = workdir / "server.properties"
        properties.write_text(
            "".join(f"{key}={value}\n" for key, value in self._properties().items())
        )
        self._java("kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(properties))
        self._launch()
        self._wait_ready()

    def _properties(self) -> dict[str, str]:
        controller = f"127.0.0.1:{self.controller_port}"
        return {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{controller}",
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self._dir / "data"),
            # Topics exist only when a test creates them, as in a managed cluster.
            "auto.create.topics.enable": "false",
            # One node: every internal topic with one replica. One offsets partition, not 50:
            # clients cannot tell, and creating 50 when the first group joins costs it 3 s.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # A group's first member starts at once rather than 3 s later.
            "group.initial.rebalance.delay.ms": "0",
            # After a kill the controller refuses the restarted broker's registration until the
            # dead one's session expires: 3 s rather than 9 s (restart 5 s instead of 12 s).
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "log.cleaner.enable": "true",
        }

    def _java(self, main_class: str, *args: str) -> None:
        """Run one Kafka tool to completion; its output goes into the exception on failure."""
        command = ["java", *JVM_OPTIONS, "-cp", f"{kafka_lib_dir()}/*", main_class, *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def _launch(self) -> None:
        properties = str(self._dir / "server.properties")
        command = ["java", *JVM_OPTIONS, "-cp", f"{kafka_lib_dir()}/*", "kafka.Kafka", properties]
        # setpriv (util-linux) has the kernel kill the JVM when the test process dies, so a
        # crashed or interrupted run leaves no broker holding 512 MB behind.
        if shutil.which("setpriv"):
            command = ["setpriv", "--pdeathsig", "KILL", "--", *command]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        # cwd: where a crashing JVM writes its hs_err file.
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, cwd=self._dir
        )

    def admin(self) -> AdminClient:
        """An AdminClient for this broker. It retries connections every 0.5 s at most (not
        librdkafka's 10 s), so a broker that has just come up is seen at once."""
        config = {"reconnect.backoff.max.ms": 500}
        return AdminClient(_client_config(self.bootstrap, config))

    def _wait_ready(self) -> None:
        """Wait until the broker answers a metadata request; on failure say why, with its log."""
        admin = self.admin()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                self._reap()
                raise RuntimeError(f"Kafka broker exited with {code} while starting{self._tail()}")
            try:
                if NODE_ID in admin.list_topics(timeout=1).brokers:
                    return
            except KafkaException:
                pass
            admin.poll(0)  # hands its queued log lines to RDKAFKA_LOG
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"Kafka broker not answering after {self.start_timeout} s{self._tail()}"
                )
            time.sleep(0.1)

    def _tail(self, lines: int = 15) -> str:
        """The broker's first ERROR lines (each with the next, the exception) and its last lines,
        for an exception's message: a failed start ends in lines of orderly shutdown."""
        text = self.log_path.read_text(errors="replace").splitlines()
        errors = [f"{text[i]}\n{text[i + 1]}" for i in range(len(text) - 1) if " ERROR " in text[i]]
        return f"; in {self.log_path}:\n" + "\n".join([*errors[:3], "...", *text[-lines:]])

    def create_topic(
        self, name: str, partitions: int = 1, config: dict[str, str] | None = None
    ) -> None:
        """Create a topic (one replica) and wait until every partition has its leader."""
        admin = self.admin()
        topic = NewTopic(
            name, num_partitions=partitions, replication_factor=1, config=dict(config or {})
        )
        futures = admin.create_topics([topic], operation_timeout=30, request_timeout=30)
        futures[name].result(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = admin.list_topics(topic=name, timeout=5).topics.get(name)
            if (
                found is not None
                and found.error is None
                and len(found.partitions) == partitions
                and all(p.leader == NODE_ID for p in found.partitions.values())
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"topic {name}: partitions without a leader after 30 s")

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM); SIGKILL if that takes longer than stop_timeout."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._reap()

    def kill(self) -> None:
        """Die at once (SIGKILL), as a crashed broker does; recovery happens at restart()."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._reap()

    def _reap(self) -> None:
        """Collect the exit status and close the log file of a process that has ended."""
        if self._process is not None:
            self._process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop if running, then start again on the same ports and data; return once it answers."""
        self.stop()
        self._launch()
        self._wait_ready()


def produce_keyed(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    config: dict[str, object] | None = None,
    timeout: float = 60.0,
) -> list[Message]:
    """Produce (key, value) records and return their delivery reports, in delivery order.

    Acknowledged by the broker (acks=all, idempotent, so retries neither reorder nor repeat)
    before it returns; raises if any record was not delivered. The partitioner is murmur2, the
    Java clients' default, so a key lands where a Java producer would put it (librdkafka's own
    default hashes with CRC32). `config` overrides any producer setting.
    """
    delivered: list[Message] = []
    failed: list[KafkaError] = []

    def report(error: KafkaError | None, message: Message) -> None:
        if error is None:
            delivered.append(message)
        else:
            failed.append(error)

    defaults = {"acks": "all", "enable.idempotence": True, "partitioner": "murmur2_random"}
    producer = Producer(_client_config(bootstrap, {**defaults, "linger.ms": 5, **(config or {})}))
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=report)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or failed:
        raise RuntimeError(
            f"{remaining} records undelivered after {timeout} s, {len(failed)} failed: {failed[:3]}"
        )
    return delivered


def consume(
    bootstrap: str,
    topic: str,
    count: int,
    config: dict[str, object] | None = None,
    timeout: float = 60.0,
) -> list[Message]:
    """Read `count` records of `topic` from the start, in a fresh consumer group.

    Raises on a consumer error, and with how many arrived when `count` do not within `timeout`.
    `config` overrides any consumer setting (e.g. `partition.assignment.strategy`).
    """
    group = {"group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    consumer = Consumer(_client_config(bootstrap, {**group, **(config or {})}))
    messages: list[Message] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(messages) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is not None:
                    raise KafkaException(message.error())
                messages.append(message)
    finally:
        consumer.close()
    if len(messages) < count:
        raise TimeoutError(f"{len(messages)} of {count} records of {topic} in {timeout} s")
    return messages


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One running broker for the session (each xdist worker has its own).

    Setting it up fails, and never skips, when Java or the jars cannot be had: CI installs
    them, so their absence is a broken setup. A test that kills or stops it restarts it.
    """
    broker = KafkaBroker()
    broker.start(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()
