"""Stream health end to end: a stall and a fall-behind, each alerted once and resolved once.

Real parts only: the session's Kafka broker and SparkSession, a temporary Dagster instance, the
continuous job (Supervisor, listener, reports in the event log) executed in-process, and the
health sensor evaluated tick by tick as the daemon would, delivering to a local webhook
receiver. Test-only declarations make a query slow or stuck on purpose:

- `GatedAppend` writes each micro-batch only once its gate is open, so closing the gate makes
  the query stop completing batches while its input keeps arriving (a hung write);
- a small `maxOffsetsPerTrigger` makes a query read less per batch than is produced.

Thresholds are small (seconds) and every wait polls with a generous deadline.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context, instance_for_test
from pyspark.sql import DataFrame

from stream_assets import sinks
from stream_assets.dev.generator import Record, generate_events
from stream_assets.dev.producer import produce
from stream_assets.jobs import build_continuous_job
from stream_assets.monitoring.health import HealthState
from stream_assets.monitoring.problems import HealthThresholds
from stream_assets.monitoring.sensors import build_health_sensor
from stream_assets.monitoring.stream_report import StreamReport
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.alerting import AlertSink
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.catalog import raw_events
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.sources import kafka_topic, upstream
from stream_assets.tables.writes import DeltaAppend, Sink, WriteTarget
from stream_assets_tests.fixtures_kafka import broker_of_its_own
from stream_assets_tests.fixtures_s3 import delta_rs

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest_plugins = ["stream_assets_tests.dagster_dev"]  # alert_receiver

RUN_CONFIG = {
    "trigger_interval": "1 second", "event_interval_s": 1.0, "heartbeat_interval_s": 1.0,
    "poll_interval_s": 0.5, "stop_timeout_s": 15.0,
}
FIRING_STALLED = ":large_orange_circle: {}: stream stalled"
RESOLVED_STALLED = ":large_green_circle: {}: stream stalled - resolved"
FIRING_BEHIND = ":large_orange_circle: {}: stream falling behind"
FIRING_UNREACHABLE = ":red_circle: {}: source unreachable"
RESOLVED_UNREACHABLE = ":large_green_circle: {}: source unreachable - resolved"
# The daemon ticks the health sensor every 30 s (sensors.py); the test ticks it twice a second,
# so an alert within 60 s of an outage must reach the test within 60 - 30 s.
DAEMON_TICK_S = 30
RESOLVED_BEHIND = ":large_green_circle: {}: stream falling behind - resolved"


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str,
               every: Callable[[], Any] | None = None) -> Any:
    """Poll `condition` (running `every` first, e.g. a sensor tick) until it holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if every is not None:
            every()
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


# -- test-only declarations ----------------------------------------------------------------

@dataclass(frozen=True)
class GatedAppend(Sink):
    """Appends each batch (idempotently, like the project's sinks) once `gate` is open."""

    gate: threading.Event = field(default_factory=threading.Event)

    def write_batch(self, batch: DataFrame, batch_id: int, target: WriteTarget) -> None:
        # foreachBatch runs in this (the driver's) process: the test holds the gate.
        if not self.gate.wait(timeout=180):
            raise TimeoutError("the test never opened the gate")
        sinks.append_once(batch, target.path, target.query, target.table, batch_id)


def kafka_values(df: DataFrame) -> DataFrame:
    return df.selectExpr("CAST(value AS STRING) AS value", "partition", "offset")


def event_ids(df: DataFrame) -> DataFrame:
    return df.select("event_id", "event_type")


def gated_events(gate: threading.Event) -> StreamingTable:
    return StreamingTable(name="gated_events", sources={"df": kafka_topic("events")},
                          transform=kafka_values, sink=GatedAppend(gate),
                          description="test: Kafka records, written when the gate is open")


def gated_copy(gate: threading.Event) -> StreamingTable:
    return StreamingTable(name="gated_copy", sources={"df": upstream("raw_events")},
                          transform=event_ids, sink=GatedAppend(gate),
                          description="test: raw_events ids, written when the gate is open")


plain_events = StreamingTable(name="plain_events", sources={"df": kafka_topic("events")},
                              transform=kafka_values, sink=DeltaAppend(),
                              description="test: Kafka records through Delta's own sink")


# -- the real parts around them ------------------------------------------------------------

@dataclass
class Setup:
    topic: str
    lake: DeltaLake
    resources: dict[str, Any]
    connection: KafkaConnection
    produced: int = 0

    def send(self, count: int, prefix: str) -> int:
        records = [Record(self.topic, r.key, r.value, r.kind, r.event)
                   for r in generate_events(count, id_prefix=prefix)]
        produce(records, self.connection)
        self.produced += count
        return count


@pytest.fixture
def setup(kafka_broker, topic_factory, spark_resource, workdir) -> Callable[..., Setup]:
    """One single-partition topic (offsets are then plain counts) and a fresh lake."""

    def make(**source: Any) -> Setup:
        topic = topic_factory("health", partitions=1)
        lake = DeltaLake(tables_root=str(workdir / "tables"),
                         checkpoints_root=str(workdir / "checkpoints"))
        stream_source = KafkaSource(bootstrap_servers=kafka_broker.bootstrap,
                                    topic_names={"events": topic}, **source)
        return Setup(topic, lake, {"spark": spark_resource, "lake": lake,
                                   "stream_source": stream_source},
                     KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))

    return make


class ContinuousRun:
    """The project's continuous job over `catalog`, running in a thread against `instance`."""

    def __init__(self, instance: DagsterInstance, catalog: Sequence[StreamingTable],
                 resources: dict[str, Any]) -> None:
        self.instance = instance
        self.job = build_continuous_job(catalog, name=f"health_e2e_{uuid.uuid4().hex[:6]}")
        self.resources = resources
        self.thread = threading.Thread(target=self._run, name="continuous-job", daemon=True)

    def _run(self) -> None:
        self.job.execute_in_process(
            run_config={"ops": {"run_streams": {"config": RUN_CONFIG}}},
            instance=self.instance, resources=self.resources, raise_on_error=False)

    def __enter__(self) -> ContinuousRun:
        self.thread.start()
        self.run_id = wait_until(
            lambda: next((r.run_id for r in self.instance.get_runs()
                          if r.job_name == self.job.name), None), 60, "the run to exist")
        return self

    def reports(self, table: str) -> list[StreamReport]:
        """This run's reports on `table`, oldest first."""
        found = []
        for fetch in (self.instance.fetch_materializations, self.instance.fetch_observations):
            for record in fetch(AssetKey(table), limit=1000).records:
                report = StreamReport.from_metadata(record.asset_event.metadata,
                                                    record.timestamp)
                if report is not None and record.run_id == self.run_id:
                    found.append((record.storage_id, report))
        return [report for _, report in sorted(found, key=lambda f: f[0])]

    def rows_read(self, table: str) -> int:
        return sum(r.input_rows for r in self.reports(table))

    def latest(self, table: str) -> StreamReport | None:
        reports = self.reports(table)
        return reports[-1] if reports else None

    def __exit__(self, *exc: object) -> None:
        self.instance.report_run_canceling(self.instance.get_run_by_id(self.run_id))
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the continuous job did not stop"


class HealthSensor:
    """The project's health sensor, ticked like the daemon ticks it (cursor carried over)."""

    def __init__(self, instance: DagsterInstance, catalog: Sequence[StreamingTable],
                 thresholds: HealthThresholds, receiver) -> None:
        self.instance = instance
        self.sensor = build_health_sensor(catalog, thresholds, name="health_e2e",
                                          minimum_interval_seconds=1)
        self.sink = AlertSink(webhook_url=receiver.url)
        self.receiver = receiver
        self.seen = len(receiver.received())
        self.cursor: str | None = None

    def tick(self) -> None:
        context = build_sensor_context(instance=self.instance, cursor=self.cursor,
                                       resources={"alerting": self.sink})
        self.cursor = self.sensor(context).cursor

    def messages(self) -> list[dict]:
        return self.receiver.received()[self.seen:]

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages()]

    def detail(self, index: int) -> str:
        return self.messages()[index]["blocks"][1]["text"]["text"].strip("`")

    def open_detail(self, stream: str, problem: str) -> str | None:
        incident = HealthState.from_json(self.cursor).open_incidents(stream).get(problem)
        return None if incident is None else incident["detail"]

    def settle(self, stream: str) -> None:
        """Forget what the start-up produced: a fresh JVM's first batch can itself take longer
        than the small stall threshold, a real (and resolved) incident the scenario is not
        about. Waits until nothing is open, then counts messages from here."""
        wait_until(lambda: not HealthState.from_json(self.cursor).open_incidents(stream),
                   60, f"no open incident on {stream}", every=self.tick)
        self.seen = len(self.receiver.received())

    def keep_ticking(self, ticks: int = 4) -> None:
        """A few more ticks, for a test to check that they said nothing new."""
        for _ in range(ticks):
            self.tick()
            time.sleep(0.5)

    def wait_for_messages(self, count: int, timeout_s: float, what: str) -> list[str]:
        wait_until(lambda: len(self.messages()) >= count, timeout_s, what, every=self.tick)
        return self.texts()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as instance:
        yield instance


@pytest.fixture
def gate() -> threading.Event:
    """The gate of a GatedAppend table, open to begin with."""
    event = threading.Event()
    event.set()
    return event


@contextmanager
def opened_at_exit(gate: threading.Event) -> Iterator[None]:
    """Open the gate before the run is stopped, even when the test fails: a held batch would
    keep the continuous job from stopping."""
    try:
        yield
    finally:
        gate.set()


def first_records(env: Setup, run: ContinuousRun, health: HealthSensor, table: str) -> None:
    """Ten records read and reported, and nothing left open from the start-up."""
    env.send(10, "a")
    wait_until(lambda: run.rows_read(table) == 10, 120, "the first records", every=health.tick)
    health.settle(table)


def delta_versions(path: str) -> int:
    """The latest version of a local Delta table, straight from its log folder."""
    log = os.path.join(path, "_delta_log")
    names = os.listdir(log) if os.path.isdir(log) else []
    return max((int(n[:20]) for n in names if re.fullmatch(r"\d{20}\.json", n)), default=-1)


# -- the scenarios ---------------------------------------------------------------------------

def test_a_query_that_stops_completing_batches_while_records_wait_is_stalled_once(
    setup, instance, alert_receiver, gate
):
    env = setup()
    table = gated_events(gate)
    # A stall threshold well above a batch's time on two busy cores: a slow batch after the
    # gate opens must not look like a second stall.
    health = HealthSensor(instance, [table], HealthThresholds(
        stall_after_s=10, silent_after_s=120, behind_batches=3), alert_receiver)
    with ContinuousRun(instance, [table], env.resources) as run, opened_at_exit(gate):
        env.send(10, "a")
        wait_until(lambda: run.rows_read("gated_events") == 10, 120, "the first 10 records",
                   every=health.tick)
        wait_until(lambda: (run.latest("gated_events") or StreamReport("", "", 0)
                            ).kafka_lag == 0, 30, "a report of nothing waiting",
                   every=health.tick)
        health.settle("gated_events")
        gate.clear()  # the next batch hangs in its write
        env.send(30, "b")
        texts = health.wait_for_messages(1, 60, "the stall alert")
        assert texts == [FIRING_STALLED.format("gated_events")]
        detail = health.detail(0)
        assert re.fullmatch(r"no batch completed for \d+ s while 30 records wait", detail)
        assert int(detail.split()[4]) >= 10
        health.keep_ticking()  # the stall goes on: still the one alert
        assert health.texts() == texts

        gate.set()
        texts = health.wait_for_messages(2, 60, "the resolved notice")
        assert texts == [FIRING_STALLED.format("gated_events"),
                         RESOLVED_STALLED.format("gated_events")]
        wait_until(lambda: run.rows_read("gated_events") == 40, 60, "every record",
                   every=health.tick)
        health.keep_ticking()
        assert health.texts() == texts


def test_a_query_reading_less_per_batch_than_arrives_falls_behind_once_and_recovers(
    setup, instance, alert_receiver, spark
):
    # 20 records per 1-second trigger: at most 20 records/s, while 40/s arrive.
    env = setup(max_offsets_per_trigger=20)
    health = HealthSensor(instance, [plain_events], HealthThresholds(
        stall_after_s=60, silent_after_s=120, behind_batches=3), alert_receiver)
    stop = threading.Event()

    def endless() -> Iterator[Record]:
        n = 0
        while not stop.is_set():
            for r in generate_events(10, seed=n, id_prefix=f"s{n}"):
                yield Record(env.topic, r.key, r.value, r.kind, r.event)
            n += 1
            env.produced += 10

    producer = threading.Thread(target=lambda: produce(endless(), env.connection, rate=40),
                                name="producer", daemon=True)
    with ContinuousRun(instance, [plain_events], env.resources) as run:
        first_records(env, run, health, "plain_events")
        producer.start()
        try:
            texts = health.wait_for_messages(1, 90, "the falling-behind alert")
        finally:
            stop.set()
            producer.join(timeout=60)
        assert texts == [FIRING_BEHIND.format("plain_events")]
        # Either way of seeing it can come first: the lag growing over three reports, or, on a
        # busy machine whose batches take longer, three batches slower than their input.
        detail = health.detail(0)
        grew = re.fullmatch(r"Kafka lag grew over 3 consecutive reports: (\d+) -> (\d+) records",
                            detail)
        slower = re.fullmatch(r"input rate above processing rate for (\d+) consecutive batches "
                              r"\((\d+) rows/s in, (\d+) rows/s processed\)", detail)
        assert grew or slower, detail
        if grew:
            first, last = int(grew[1]), int(grew[2])
            assert 0 <= first < last <= env.produced
        else:
            assert int(slower[1]) >= 3 and int(slower[2]) >= int(slower[3]), detail  # rounded

        texts = health.wait_for_messages(2, 90, "the resolved notice")
        assert texts[1] == RESOLVED_BEHIND.format("plain_events")
        # 20 records a batch: on a loaded machine (batches of 3 s) a backlog of 1,000 takes
        # 150 s; the wait ends as soon as the query has caught up.
        wait_until(lambda: run.rows_read("plain_events") == env.produced, 300,
                   "the query to catch up", every=health.tick)
        wait_until(lambda: (run.latest("plain_events") or StreamReport("", "", 0)
                            ).kafka_lag == 0, 30, "a report of no lag", every=health.tick)
        health.keep_ticking()
        assert health.texts() == [FIRING_BEHIND.format("plain_events"),
                                  RESOLVED_BEHIND.format("plain_events")]
    rows = spark.read.format("delta").load(env.lake.table_path("plain_events"))
    assert rows.count() == rows.select("offset").distinct().count() == env.produced


def test_a_delta_sourced_query_stuck_while_upstream_versions_wait_is_stalled_once(
    setup, instance, alert_receiver, gate
):
    env = setup()
    copy = gated_copy(gate)
    catalog = [raw_events, copy]
    # behind_batches 6: the 3 versions made here cannot look like a backlog growing for 6
    # reports, so the only incident is the stall.
    # stall_after_s 15: the catch-up after the gate opens runs raw_events and gated_copy
    # batches on two busy cores; a batch of it may take seconds while versions wait.
    health = HealthSensor(instance, catalog, HealthThresholds(
        stall_after_s=15, silent_after_s=120, behind_batches=6), alert_receiver)
    upstream_path = env.lake.table_path("raw_events")
    with ContinuousRun(instance, catalog, env.resources) as run, opened_at_exit(gate):
        env.send(20, "a")
        wait_until(lambda: run.rows_read("gated_copy") == 20, 150,
                   "gated_copy to read the first 20 events", every=health.tick)
        wait_until(lambda: (run.latest("gated_copy") or StreamReport("", "", 0)
                            ).upstream_versions_waiting == 0, 30,
                   "a report of nothing waiting upstream", every=health.tick)
        health.settle("gated_copy")
        gate.clear()
        before = delta_versions(upstream_path)
        for chunk in range(3):  # three raw_events batches: at least three new versions
            version = delta_versions(upstream_path)
            env.send(5, f"b{chunk}")
            wait_until(lambda v=version: delta_versions(upstream_path) > v, 60,
                       "raw_events to commit the chunk")
        wait_until(lambda: run.rows_read("raw_events") == 35, 60, "raw_events to read all")
        waiting = delta_versions(upstream_path) - before

        texts = health.wait_for_messages(1, 60, "the stall alert")
        assert texts == [FIRING_STALLED.format("gated_copy")]
        assert re.fullmatch(r"no batch completed for \d+ s while \d+ upstream raw_events "
                            r"versions? waits?", health.detail(0)), health.detail(0)
        # Once the upstream has settled, the open incident says exactly how many wait.
        expected = f"while {waiting} upstream raw_events versions wait"
        wait_until(lambda: (health.open_detail("gated_copy", "stalled") or ""
                            ).endswith(expected), 30, expected, every=health.tick)

        gate.set()
        texts = health.wait_for_messages(2, 60, "the resolved notice")
        assert texts == [FIRING_STALLED.format("gated_copy"),
                         RESOLVED_STALLED.format("gated_copy")]
        wait_until(lambda: run.rows_read("gated_copy") == 35, 60, "every event copied",
                   every=health.tick)
        wait_until(lambda: (run.latest("gated_copy") or StreamReport("", "", 0)
                            ).upstream_versions_waiting == 0, 30,
                   "a report of nothing waiting upstream", every=health.tick)
        assert health.texts() == texts


def test_a_broker_outage_is_alerted_within_a_minute_once_and_resolved_once(
    instance, alert_receiver, spark_resource, workdir, tmp_path_factory
):
    # The test's own broker: stopping the worker's session broker would cut off other tests.
    with broker_of_its_own(tmp_path_factory.mktemp("kafka-away")) as broker:
        topic = f"away-{uuid.uuid4().hex[:8]}"
        broker.create_topics([topic], partitions=1)
        lake = DeltaLake(tables_root=str(workdir / "tables"),
                         checkpoints_root=str(workdir / "checkpoints"))
        env = Setup(topic, lake, {
            "spark": spark_resource, "lake": lake,
            "stream_source": KafkaSource(bootstrap_servers=broker.bootstrap,
                                         topic_names={"events": topic})},
            KafkaConnection(bootstrap_servers=broker.bootstrap))
        health = HealthSensor(instance, [plain_events], HealthThresholds(
            stall_after_s=600, silent_after_s=600), alert_receiver)
        with ContinuousRun(instance, [plain_events], env.resources) as run:
            first_records(env, run, health, "plain_events")
            broker.stop()
            stopped = time.monotonic()
            texts = health.wait_for_messages(1, 60, "the outage alert")
            took = time.monotonic() - stopped
            assert texts == [FIRING_UNREACHABLE.format("plain_events")]
            assert took <= 60 - DAEMON_TICK_S, f"the alert came {took:.0f} s after the stop"
            assert re.fullmatch(rf"no Kafka broker answered at {broker.bootstrap} within 5 s "
                                r".*\(for \d+ s\)", health.detail(0)), health.detail(0)
            health.keep_ticking()  # still away: still the one alert
            assert health.texts() == texts

            broker.start()
            texts = health.wait_for_messages(2, 60, "the resolved notice")
            assert texts == [FIRING_UNREACHABLE.format("plain_events"),
                             RESOLVED_UNREACHABLE.format("plain_events")]
            env.send(10, "b")
            wait_until(lambda: run.rows_read("plain_events") == 20, 180,
                       "the records sent after the outage", every=health.tick)
            health.keep_ticking()
            assert health.texts() == texts
        # Exactly once through the outage, read back by delta-rs.
        offsets = delta_rs(lake, "plain_events").to_pyarrow_table(columns=["offset"])
        assert sorted(offsets.column("offset").to_pylist()) == list(range(20))
