"""Re-driving dead letters after the parser is fixed, with real parts (issue 29).

A producer switches, for two stretches of records, to a timestamp format the parser refuses
(epoch milliseconds). Parser v2 reads it. A dry run counts what would pass; a re-drive of the
first stretch (by time) appends exactly those records and marks their dead letters; a second
re-drive, through `stream-assets redrive` in a process of its own, is SIGKILLed the moment its
append's Delta commit appears, and run again: nothing is doubled. The downstream table then
equals a plain-Python computation over every record sent, and every table is read back with
delta-rs: each Kafka position is in `payments` or among the dead letters not re-driven, once.
Shares the session's broker and SparkSession.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer
from dagster import AssetsDefinition, DagsterInstance, materialize
from deltalake import DeltaTable

from stream_assets import DeltaLake, KafkaSource
from stream_assets.jobs.redrive import JOB_NAME, OP_NAME
from stream_assets_tests import redrive_project as project
from stream_assets_tests.fault_driver import (
    PROJECT_ROOT,
    QUIET,
    NewFiles,
    _wait_group_gone,
    broker_messages,
)

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


def send(bootstrap: str, topic: str, records: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "logger": QUIET})
    for record in records:
        producer.produce(topic, key=record["id"].encode(), value=json.dumps(record).encode())
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


def kill_redrive_at_its_append(pipeline: Pipeline, workdir: Path, bootstrap: str,
                               topic: str) -> None:
    """`stream-assets redrive payments` in its own process group, SIGKILLed when the append's
    commit file of `payments` appears (the marks are not written yet)."""
    lake = pipeline.lake
    log = Path(lake.table_path("payments")) / "_delta_log"
    next_commit = f"{delta_version(lake, 'payments') + 1:020d}.json"
    env = {**os.environ, "STREAM_ASSETS_TABLES_ROOT": lake.tables_root,
           "STREAM_ASSETS_CHECKPOINTS_ROOT": lake.checkpoints_root,
           "STREAM_ASSETS_KAFKA_BOOTSTRAP": bootstrap, project.TOPIC_ENV: topic,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    env.pop("DAGSTER_HOME", None)
    out = open(workdir / "redrive.out", "w")  # noqa: SIM115 - closed below
    with NewFiles(log) as new_files:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream_assets.cli", "redrive", "payments",
             "--definitions", "stream_assets_tests.redrive_project:defs"],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not any(p.name == next_commit for p in new_files.poll(0.5)):
                assert proc.poll() is None, (workdir / "redrive.out").read_text()[-3000:]
                assert time.monotonic() < deadline, "the re-drive never appended"
            os.killpg(proc.pid, 9)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            proc.wait(30)
            _wait_group_gone(proc.pid)
            out.close()


class Phases:
    """The records sent and what the test saw between its phases, in order (one topic and
    lake for the module's tests, which run in this file's order)."""

    def __init__(self, pipeline: Pipeline, sent: list[dict], between: str, topic: str,
                 workdir: Path) -> None:
        self.pipeline, self.sent, self.between = pipeline, sent, between
        self.topic, self.workdir = topic, workdir


@pytest.fixture(scope="module")
def phases(kafka_broker, spark_resource, tmp_path_factory) -> Iterator[Phases]:
    """Two stretches of the new format, each caught up by parser v1."""
    workdir = tmp_path_factory.mktemp("redrive")
    topic = f"payments-{os.urandom(4).hex()}"
    kafka_broker.create_topics([topic], partitions=2)
    lake = DeltaLake(tables_root=str(workdir / "tables"),
                     checkpoints_root=str(workdir / "checkpoints"))
    pipeline = Pipeline(spark_resource, lake, kafka_broker.bootstrap, topic)
    first = stretch(0, good=20, epoch=10, negative_epoch=2, negative=2)
    send(kafka_broker.bootstrap, topic, first)
    pipeline.materialize(1, "payments", "payment_totals")
    between = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    second = stretch(100, good=10, epoch=7, negative_epoch=1, negative=0)
    send(kafka_broker.bootstrap, topic, second)
    pipeline.materialize(1, "payments")
    letters = rows(lake, "payments_dead_letters")
    assert Counter(r["error"] for r in letters) == {project.BAD_TS: 20,
                                                   project.NOT_POSITIVE: 2}
    yield Phases(pipeline, first + second, between, topic, workdir)
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


def test_a_killed_redrive_runs_again_without_doubling_and_downstream_follows(
        phases, kafka_broker):
    pipeline, lake, topic = phases.pipeline, phases.pipeline.lake, phases.topic
    # The second re-drive, killed right after its append, then run again.
    kill_redrive_at_its_append(pipeline, phases.workdir, kafka_broker.bootstrap, topic)
    interrupted = [r for r in rows(lake, "payments_dead_letters")
                   if r["redrive_plan"] is not None and r["redriven_version"] is None]
    assert len(interrupted) == 7, "the kill did not land between the append and the marks"
    assert len(rows(lake, "payments")) == 30 + 10 + 7
    events = pipeline.redrive()
    assert events["payments_dead_letters"]["redrive_finished_interrupted"].value == 7
    assert events["payments_dead_letters"]["redriven"].value == 0

    # Downstream follows: payment_totals gets the re-driven rows in its next batch.
    pipeline.materialize(2, "payments", "payment_totals")

    # Every table by delta-rs, against the broker and plain Python.
    table = rows(lake, "payments")
    dead = rows(lake, "payments_dead_letters")
    positions = Counter((r["partition"], r["offset"]) for r in table) + Counter(
        (r["partition"], r["offset"]) for r in dead if r["redriven_version"] is None)
    assert positions == Counter(broker_messages(kafka_broker.bootstrap, topic).keys())
    assert Counter(r["id"] for r in table) == Counter(r["id"] for r in phases.sent
                                                      if passes_v2(r))
    notes = [c for c in DeltaTable(lake.table_path("payments")).history()
             if str(c.get("userMetadata", "")).startswith("stream_assets redrive")]
    assert len(notes) == 2, notes  # the killed run's append was not made twice
    want: dict[str, list[int]] = {}
    for record in filter(passes_v2, phases.sent):
        want.setdefault(record["customer"], []).append(record["amount"])
    assert {r["customer"]: (r["payments"], r["total"]) for r in rows(lake, "payment_totals")} \
        == {c: (len(a), sum(a)) for c, a in want.items()}


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
