"""Re-driving dead letters after the parser is fixed, with real parts (issue 29).

A producer switches, for two stretches of records, to a timestamp format the parser refuses
(epoch milliseconds). Parser v2 reads it. A dry run counts what would pass; a re-drive of the
first stretch (by time) appends exactly those records and marks their dead letters; a second
re-drive, through `stream-assets redrive` in a process of its own, leaves a crash image at
every file of its Delta writes (crash_images.py: the intent, the append, their temporary files
and checksums) and is SIGKILLed once its append is committed; its rerun, in this process,
leaves an image at every file of the marks it finishes. The rerun and each image re-driven
again must leave each Kafka position once in `payments` or among the dead letters not
re-driven, the marks naming the version that holds the row, and each re-driven row with its
record's own Kafka timestamp. The downstream table then equals a plain-Python computation over
every record sent; every table is read back with delta-rs. Shares the session's broker and
SparkSession.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from dagster import AssetsDefinition, DagsterInstance, materialize
from deltalake import DeltaTable

from stream_assets import DeltaLake, KafkaSource
from stream_assets.jobs.redrive import JOB_NAME, OP_NAME
from stream_assets.tables.context import StreamContext
from stream_assets.tables.redrive import redrive
from stream_assets.tables.redrive_plan import Selection
from stream_assets_tests import redrive_project as project
from stream_assets_tests.crash_images import (
    Crash,
    crash_run,
    hadoop_checksum,
    images_of_own_jvm,
)
from stream_assets_tests.fault_driver import PROJECT_ROOT, QUIET, Driver, broker_messages

pytestmark = pytest.mark.integration

EPOCH = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def payment(n: int, customer: int, amount: int, epoch_millis: bool) -> dict:
    moment = EPOCH.timestamp() + 60 * n
    ts = int(moment * 1000) if epoch_millis else datetime.fromtimestamp(
        moment, UTC).isoformat().replace("+00:00", "Z")
    return {"id": f"p{n:04d}", "customer": f"c{customer}", "amount": amount, "ts": ts}


def stretch(first: int, good: int, epoch: int, negative_epoch: int, negative: int) -> list[dict]:
    """`good` ISO payments, then the producer's epoch stretch (some with amounts the table
    drops), then payments with non-positive amounts in the good format."""
    out, n = [], first
    for kind, count in (("good", good), ("epoch", epoch), ("negative_epoch", negative_epoch),
                        ("negative", negative)):
        for _ in range(count):
            amount = -5 if kind.startswith("negative") else 10 + n % 7
            out.append(payment(n, n % 4, amount, epoch_millis="epoch" in kind))
            n += 1
    return out


# Kafka timestamps of the records: recent (the broker's retention deletes old ones at once).
SENT_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def kafka_time(record: dict) -> datetime:
    """The Kafka timestamp the producer gives a record: its own, apart from its `ts`."""
    return SENT_AT + timedelta(seconds=int(record["id"][1:]))


def send(bootstrap: str, topic: str, records: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "logger": QUIET})
    for record in records:
        producer.produce(topic, key=record["id"].encode(), value=json.dumps(record).encode(),
                         timestamp=int(kafka_time(record).timestamp() * 1000))
    assert producer.flush(30) == 0


def passes_v2(record: dict) -> bool:
    return record["amount"] > 0


def rows(lake: DeltaLake, table: str) -> list[dict]:
    return DeltaTable(lake.table_path(table)).to_pyarrow_table().to_pylist()


def delta_version(lake: DeltaLake, table: str) -> int:
    return DeltaTable(lake.table_path(table)).version()


class Pipeline:
    """The project at parser v1 or v2 on the test's topic and lake, one Dagster instance."""

    def __init__(self, spark_resource, lake: DeltaLake, bootstrap: str, topic: str) -> None:
        self.lake, self.instance = lake, DagsterInstance.ephemeral()
        self.resources = {"spark": spark_resource, "lake": lake, "stream_source": KafkaSource(
            bootstrap_servers=bootstrap, topic_names={"payments": topic})}

    def defs(self, version: int):
        return project.definitions(version, self.resources)

    def materialize(self, version: int, *names: str) -> None:
        assets = [a for a in self.defs(version).assets or () if isinstance(a, AssetsDefinition)]
        selection = [a for a in assets if a.node_def.name in names]
        result = materialize(selection, resources=self.resources, instance=self.instance)
        assert result.success

    def redrive(self, version: int = 2, **config):
        job = self.defs(version).resolve_job_def(JOB_NAME)
        result = job.execute_in_process(
            run_config={"ops": {OP_NAME: {"config": {"table": "payments", **config}}}},
            instance=self.instance)
        assert result.success
        found = {e.event_specific_data.materialization.asset_key.to_user_string():
                 e.event_specific_data.materialization.metadata
                 for e in result.get_asset_materialization_events()}
        for event in result.all_events:
            if event.event_type_value == "ASSET_OBSERVATION":
                found["observed"] = event.event_specific_data.asset_observation.metadata
        return found


@dataclass
class RedriveCli(Driver):
    """`stream-assets redrive payments` (parser v2) on the test's lake and topic, as a driver
    crash_run can freeze and kill: a process group of its own (Python and its JVM)."""

    def start(self, pause_at: str | None = None) -> RedriveCli:
        self.signal_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        env.pop("DAGSTER_HOME", None)
        self._out = open(self.signal_dir / "stdout", "w")  # noqa: SIM115 - closed by Driver
        self._err = open(self.signal_dir / "stderr", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_assets.cli", "redrive", "payments",
             "--definitions", "stream_assets_tests.redrive_project:defs"],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._out,
            stderr=self._err, start_new_session=True)
        return self


# The append's Delta checksum: its commit is on disk, the marks are not begun.
KILL_AT = "tables/payments/_delta_log/0*.crc"


def every_point_then_kill(point: str) -> str | None:
    if fnmatch.fnmatchcase(point, KILL_AT):
        return "kill"
    return None if hadoop_checksum(point) else "image"


def every_point(point: str) -> str | None:
    return None if hadoop_checksum(point) else "image"


def reached(crashes: list[Crash], *patterns: str) -> None:
    points = [p for _, p, _ in crashes]
    for pattern in patterns:
        assert any(fnmatch.fnmatchcase(p, pattern) for p in points), (pattern, points)


class Phases:
    """The records sent and what the test saw between its phases, in order (one topic and
    lake for the module's tests, which run in this file's order)."""

    def __init__(self, pipeline: Pipeline, sent: list[dict], between: str, topic: str,
                 workdir: Path, images: Path) -> None:
        self.pipeline, self.sent, self.between = pipeline, sent, between
        self.topic, self.workdir, self.images = topic, workdir, images
        # The crash images of the killed re-drive and of its rerun (taken by the third test).
        self.crashes: list[Crash] = []
        self.positions: Counter | None = None

    def expected_positions(self, bootstrap: str) -> Counter:
        if self.positions is None:
            self.positions = Counter(broker_messages(bootstrap, self.topic).keys())
        return self.positions


@pytest.fixture(scope="module")
def phases(kafka_broker, spark_resource, tmp_path_factory) -> Iterator[Phases]:
    """Two stretches of the new format, each caught up by parser v1."""
    workdir = tmp_path_factory.mktemp("redrive")
    images = tmp_path_factory.mktemp("redrive-images")  # outside the watched lake
    topic = f"payments-{os.urandom(4).hex()}"
    kafka_broker.create_topics([topic], partitions=2)
    lake = DeltaLake(tables_root=str(workdir / "tables"),
                     checkpoints_root=str(workdir / "checkpoints"))
    pipeline = Pipeline(spark_resource, lake, kafka_broker.bootstrap, topic)
    first = stretch(0, good=20, epoch=10, negative_epoch=2, negative=2)
    send(kafka_broker.bootstrap, topic, first)
    pipeline.materialize(1, "payments", "payment_totals", "payments_typed")
    between = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    second = stretch(100, good=10, epoch=7, negative_epoch=1, negative=0)
    send(kafka_broker.bootstrap, topic, second)
    pipeline.materialize(1, "payments")
    letters = rows(lake, "payments_dead_letters")
    assert Counter(r["error"] for r in letters) == {project.BAD_TS: 20,
                                                   project.NOT_POSITIVE: 2}
    phases = Phases(pipeline, first + second, between, topic, workdir, images)
    phases.first = first  # what payments_typed read
    yield phases
    kafka_broker.delete_topics([topic])


def test_a_dry_run_counts_what_the_fixed_parser_would_redrive_and_writes_nothing(phases):
    lake = phases.pipeline.lake
    versions = (delta_version(lake, "payments"), delta_version(lake, "payments_dead_letters"))
    meta = phases.pipeline.redrive(dry_run=True)["observed"]
    assert meta["redriven"].value == 17
    assert meta["still_failing_by_reason"].value == {project.NOT_POSITIVE: 5}
    assert meta["redriven_by_reason"].value == {project.BAD_TS: 17}
    summary = meta["redrive_summary"].value
    assert "would re-drive 17 of 22" in summary and '"ts": 1777' in summary, summary
    assert versions == (delta_version(lake, "payments"),
                        delta_version(lake, "payments_dead_letters"))


def test_a_redrive_by_time_appends_exactly_the_first_stretch_and_marks_it(phases):
    lake = phases.pipeline.lake
    before = {(r["partition"], r["offset"]) for r in rows(lake, "payments")}
    events = phases.pipeline.redrive(refused_until=phases.between)
    into = events["payments"]["redriven_into_version"].value
    assert events["payments"]["redriven"].value == 10
    assert events["payments"]["still_failing_by_reason"].value == {project.NOT_POSITIVE: 4}
    added = [r for r in rows(lake, "payments")
             if (r["partition"], r["offset"]) not in before]
    assert sorted(r["id"] for r in added) == [f"p{n:04d}" for n in range(20, 30)]
    marked = [r for r in rows(lake, "payments_dead_letters") if r["redriven_version"]]
    assert sorted((r["partition"], r["offset"]) for r in marked) == sorted(
        (r["partition"], r["offset"]) for r in added)
    assert {r["redriven_version"] for r in marked} == {into}
    # Those still failing now say why they fail now.
    assert Counter(r["error"] for r in rows(lake, "payments_dead_letters")
                   if r["redrive_plan"] is None) == {project.BAD_TS: 8,
                                                     project.NOT_POSITIVE: 4}


def assert_redriven_once(phases: Phases, lake: DeltaLake, bootstrap: str, what: str) -> None:
    """After both re-drives: each Kafka position once in `payments` or among the dead letters
    not re-driven, each passing record once with its own Kafka timestamp, one append per
    re-drive, and every mark naming a re-drive's version that holds the row (delta-rs)."""
    table, dead = rows(lake, "payments"), rows(lake, "payments_dead_letters")
    positions = Counter((r["partition"], r["offset"]) for r in table) + Counter(
        (r["partition"], r["offset"]) for r in dead if r["redriven_version"] is None)
    assert positions == phases.expected_positions(bootstrap), what
    by_id = {r["id"]: r for r in phases.sent}
    assert Counter(r["id"] for r in table) == Counter(r["id"] for r in phases.sent
                                                      if passes_v2(r)), what
    assert {r["id"] for r in table
            if r["kafka_timestamp"] != kafka_time(by_id[r["id"]])} == set(), what
    assert [r for r in dead if (r["redrive_plan"] is None) != (r["redriven_version"] is None)
            ] == [], f"{what}: a letter chosen and not marked, or marked and not chosen"
    path = lake.table_path("payments")
    appends = {c["version"] for c in DeltaTable(path).history()
               if str(c.get("userMetadata", "")).startswith("stream_assets redrive")}
    assert len(appends) == 2, f"{what}: re-drive appends {sorted(appends)}"
    marks = {r["redriven_version"] for r in dead} - {None}
    assert marks <= appends, (what, marks, appends)
    for version in marks:
        held = {(r["partition"], r["offset"]) for r in DeltaTable(path, version=version)
                .to_pyarrow_table(columns=["partition", "offset"]).to_pylist()}
        assert {(r["partition"], r["offset"]) for r in dead
                if r["redriven_version"] == version} <= held, (what, version)


def test_a_redrive_crashed_at_each_delta_write_runs_again_once_and_downstream_follows(
        phases, kafka_broker, spark):
    pipeline, lake, topic = phases.pipeline, phases.pipeline.lake, phases.topic
    # The second re-drive: an image at every file of its Delta writes, a SIGKILL once its
    # append is committed (the marks not begun).
    cli = RedriveCli(phases.workdir, kafka_broker.bootstrap, topic, name="redrive", env={
        "STREAM_ASSETS_TABLES_ROOT": lake.tables_root,
        "STREAM_ASSETS_CHECKPOINTS_ROOT": lake.checkpoints_root,
        "STREAM_ASSETS_KAFKA_BOOTSTRAP": kafka_broker.bootstrap, project.TOPIC_ENV: topic})
    crashes, killed = crash_run(cli, phases.workdir, phases.images / "run",
                                every_point_then_kill, timeout_s=240)
    assert killed, f"the re-drive ended before its append's checksum {KILL_AT}: {crashes}"
    # Its intent (the dead letters' commit) and its append, each file as it appeared.
    reached(crashes, "tables/payments_dead_letters/_delta_log/.0*.json.*.tmp",
            "tables/payments_dead_letters/_delta_log/0*.json",
            "tables/payments/_delta_log/.0*.json.*.tmp", "tables/payments/_delta_log/0*.json")
    interrupted = [r for r in rows(lake, "payments_dead_letters")
                   if r["redrive_plan"] is not None and r["redriven_version"] is None]
    assert len(interrupted) == 7, "the kill did not land between the append and the marks"
    assert len(rows(lake, "payments")) == 30 + 10 + 7

    # The rerun finishes the marks, with an image at every file of them.
    jvm = spark.sparkContext._gateway.proc.pid
    with images_of_own_jvm(jvm, phases.workdir, phases.images / "rerun", every_point) as rerun:
        events = pipeline.redrive()
    reached(rerun, "tables/payments_dead_letters/_delta_log/0*.json")
    assert events["payments_dead_letters"]["redrive_finished_interrupted"].value == 7
    assert events["payments_dead_letters"]["redriven"].value == 0
    phases.crashes = [c for c in crashes if c[0] == "image"] + rerun

    # Downstream follows: payment_totals gets the re-driven rows in its next batch.
    pipeline.materialize(2, "payments", "payment_totals")

    # Every table by delta-rs, against the broker and plain Python.
    assert_redriven_once(phases, lake, kafka_broker.bootstrap, "after the rerun")
    want: dict[str, list[int]] = {}
    for record in filter(passes_v2, phases.sent):
        want.setdefault(record["customer"], []).append(record["amount"])
    assert {r["customer"]: (r["payments"], r["total"]) for r in rows(lake, "payment_totals")} \
        == {c: (len(a), sum(a)) for c, a in want.items()}


def delta_state(root: Path) -> tuple[str, ...]:
    """The files of the image's `_delta_log`s that decide what Delta reads: commits and
    checkpoints. Not temporary files (`.<name>.<uuid>.tmp`, Hadoop's `.<name>.crc`), which
    Delta never lists: an image at a commit's temporary file is, to Delta, the image before
    it. Nor a version's checksum (`NNN.crc`): Delta reads a table the same without it, which
    the crash sweep shows for every append (test_crash_sweep.py restarts each such point)."""
    return tuple(sorted(p.relative_to(root).as_posix()
                        for p in root.glob("tables/*/_delta_log/*")
                        if not p.name.startswith(".") and p.suffix != ".crc"))


def test_each_crash_image_of_a_redrive_runs_again_once(phases, kafka_broker, spark):
    """Each image is what a SIGKILL at its file would have left: re-driven again (in this
    process: a re-drive call, as the job's op makes it), each position lands once. One image
    per state of the Delta logs: on 2026-12-07 all 11 images were run again and each passed;
    one per state keeps the suite within its time."""
    assert len(phases.crashes) >= 8, phases.crashes
    distinct: dict[tuple[str, ...], Crash] = {}
    for crash in phases.crashes:
        distinct.setdefault(delta_state(crash[2]), crash)
    # Before the intent, after the intent, after the append, after the marks.
    assert len(distinct) >= 4, [p for _, p, _ in distinct.values()]
    table = project.tables(2)[0]
    for how, point, root in distinct.values():
        lake = DeltaLake(tables_root=str(root / "tables"),
                         checkpoints_root=str(root / "checkpoints"))
        redrive(table, StreamContext(spark=spark, lake=lake, source=None), Selection())
        assert_redriven_once(phases, lake, kafka_broker.bootstrap, f"{how} at {point}")


def test_a_declared_schema_fixed_redrives_with_its_typed_columns_and_rescued_data(
        phases, kafka_broker):
    """payments_typed (a record schema) refused the epoch stretch for its `ts`; v2 rescues
    a wrong-typed `ts` instead. Re-driven, each such record lands once with the declared typed
    columns, `ts` null and its value in `_rescued_data`."""
    lake = phases.pipeline.lake
    epoch = {r["id"]: r for r in phases.first if isinstance(r["ts"], int)}
    assert Counter(r["error"] for r in rows(lake, "payments_typed_dead_letters")) == {
        project.TYPED_BAD_TS: len(epoch)}
    events = phases.pipeline.redrive(table="payments_typed")
    assert events["payments_typed"]["redriven"].value == len(epoch) == 12
    table = rows(lake, "payments_typed")
    assert Counter(r["id"] for r in table) == Counter(r["id"] for r in phases.first)
    for row in table:
        record = epoch.get(row["id"])
        want = ({"ts": record["ts"]}, None) if record else (
            None, datetime.fromisoformat(phases.first[int(row["id"][1:])]["ts"]))
        got = (None if row["_rescued_data"] is None else json.loads(row["_rescued_data"]),
               row["ts"])
        assert got == want, row
        source = record or phases.first[int(row["id"][1:])]
        assert (row["customer"], row["amount"]) == (source["customer"], source["amount"])
    dead = rows(lake, "payments_typed_dead_letters")
    assert all(r["redriven_version"] is not None for r in dead), dead
    messages = broker_messages(kafka_broker.bootstrap, phases.topic)
    first_ids = {r["id"] for r in phases.first}
    assert Counter((r["partition"], r["offset"]) for r in table) == Counter(
        p for p, value in messages.items() if json.loads(value)["id"] in first_ids)


def test_redrive_is_refused_while_a_continuous_run_writes_the_table(spark_resource, workdir):
    from dagster import DagsterRun, DagsterRunStatus
    from dagster._core.utils import make_new_run_id

    from stream_assets.continuous_runs import CONTINUOUS, MODE_TAG

    instance = DagsterInstance.ephemeral()
    running = instance.add_run(DagsterRun(
        job_name="continuous_streams", run_id=make_new_run_id(),
        tags={MODE_TAG: CONTINUOUS}, status=DagsterRunStatus.STARTED))
    lake = DeltaLake(tables_root=str(workdir / "tables"),
                     checkpoints_root=str(workdir / "checkpoints"))
    defs = project.definitions(2, {"spark": spark_resource, "lake": lake,
                                   "stream_source": KafkaSource()})
    result = defs.resolve_job_def(JOB_NAME).execute_in_process(
        run_config={"ops": {OP_NAME: {"config": {"table": "payments"}}}},
        instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    while error.cause is not None:  # Dagster's wrapper around what the op raised
        error = error.cause
    message = error.message
    assert f"continuous run {running.run_id} writes payments" in message, message
    assert not (workdir / "tables").exists()
