"""The continuous job with a real broker, Spark and Delta, executed in-process by Dagster.

One run processes what arrives, reports its batches to Dagster (throttled, nothing lost in
the sums) and stops between batches when its run is marked for termination; a second run
resumes from the checkpoint. The tables end up holding every record exactly once, with the
lake on the test S3 server (and a local folder: fixtures_s3.TEST_LAKES; issue 14). (Failures,
alerts and the UI's terminate button are covered end to end in test_ops_dagster_dev.py.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterRunStatus, instance_for_test

from stream_assets.dev.generator import GOOD, Record, generate_events
from stream_assets.dev.producer import produce
from stream_assets.jobs import build_continuous_job
from stream_assets.jobs.run import CANCELED_MESSAGE
from stream_assets.monitoring.checks import table_checks
from stream_assets.monitoring.stream_report import StreamReport
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.catalog import raw_events
from stream_assets_tests.fixtures_s3 import delta_rs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_CONFIG = {"ops": {"run_streams": {"config": {
    "trigger_interval": "1 second", "event_interval_s": 1.0, "heartbeat_interval_s": 5.0,
    "restart_backoff_s": 1.0, "max_restart_backoff_s": 2.0, "poll_interval_s": 0.5,
    # The derived checks read whole tables: once when the run first writes, once at stop.
    "checks_interval_s": 60.0,
}}}}


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


class ContinuousRun:
    """The job running in a thread, with the instance it reports to."""

    def __init__(self, instance, resources) -> None:
        self.instance = instance
        self.job = build_continuous_job([raw_events], name="continuous_test",
                                        checks=table_checks([raw_events]))
        self.result: list[Any] = []
        self.thread = threading.Thread(target=self._run, name="continuous-job", daemon=True)
        self.known_runs = {r.run_id for r in instance.get_runs()}
        self.resources = resources

    def _run(self) -> None:
        self.result.append(self.job.execute_in_process(
            run_config=RUN_CONFIG, instance=self.instance, resources=self.resources,
            raise_on_error=False))

    def __enter__(self) -> ContinuousRun:
        self.thread.start()
        self.run_id = wait_until(
            lambda: next((r.run_id for r in self.instance.get_runs()
                          if r.run_id not in self.known_runs), None), 60, "the run to exist")
        return self

    def reports(self) -> list[tuple[str, StreamReport]]:
        """(event kind, report) of this run on raw_events, oldest first."""
        found = []
        for fetch in (self.instance.fetch_materializations, self.instance.fetch_observations):
            for record in fetch(AssetKey("raw_events"), limit=1000).records:
                report = StreamReport.from_metadata(record.asset_event.metadata, record.timestamp)
                if report and record.run_id == self.run_id:
                    found.append((record.storage_id, type(record.asset_event).__name__, report))
        return [(kind, report) for _, kind, report in sorted(found, key=lambda f: f[0])]

    def rows_read(self) -> int:
        return sum(r.input_rows for _, r in self.reports())

    def terminate(self) -> DagsterRunStatus:
        """Mark the run for termination, as the UI's Terminate does, and wait for it to end."""
        self.instance.report_run_canceling(self.instance.get_run_by_id(self.run_id))
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the continuous job did not stop"
        return self.instance.get_run_by_id(self.run_id).status

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.terminate()


def assert_standard_metadata(instance, run_id: str, lake: DeltaLake, sent: list[Record]) -> None:
    """The run's last materialization of each table carries the keys a catch-up run's does
    (issue 13, item 7), with the counts of what was sent and the version delta-rs reads."""
    expected = {"raw_events": sum(1 for r in sent if r.kind == GOOD),
                "dead_letter_queue": sum(1 for r in sent if r.kind != GOOD)}
    for name, rows in expected.items():
        records = [r for r in instance.fetch_materializations(AssetKey(name), limit=1000).records
                   if r.run_id == run_id]
        meta = max(records, key=lambda r: r.storage_id).asset_event.metadata
        path = lake.table_path(name)
        table = delta_rs(lake, name)
        assert meta["dagster/row_count"].value == rows, name
        assert meta["delta_version"].value == table.version(), name
        assert meta["dagster/uri"].value == (path if "://" in path else f"file://{path}")
        assert meta["path"].value == path
        assert "delta_commit_time" in meta and meta["mode"].value == "continuous"
        assert {c.name for c in meta["dagster/column_schema"].value.columns} \
            == set(table.schema().to_arrow().names)


def assert_derived_checks_ran(instance, run_id: str, sent: list[Record]) -> None:
    """The run evaluated the tables' derived checks on what it wrote, so their status in the
    UI follows the stream instead of turning grey (issue 13, item 7)."""
    bad = sum(1 for r in sent if r.kind != GOOD)
    expected = {("raw_events", c) for c in ("freshness", "keys_not_null", "keys_unique",
                                            "dead_letter_ratio")} | {
        ("dead_letter_queue", "freshness"), ("dead_letter_queue", "schema")}
    for table, check in expected:
        history = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey(table), check), limit=100)
        ours = [r for r in history if r.run_id == run_id]
        assert ours, f"{table}.{check} was not evaluated by the continuous run"
        latest = max(ours, key=lambda r: r.id).event.dagster_event.event_specific_data
        if check == "dead_letter_ratio":  # 10 % sent bad, against the default 5 % allowed
            assert latest.metadata["dead_letter_rows"].value == bad
            assert latest.metadata["records"].value == len(sent)
            assert latest.passed == (bad / len(sent) <= 0.05)
        else:
            assert latest.passed, (table, check, latest.description)


def assert_health_on_every_materialization(instance, run_id: str, table: str) -> None:
    """Each materialization of the main table is followed, in the same report, by a
    stream_health verdict: the UI never shows the check grey for the latest one."""
    from dagster import DagsterEventType, EventRecordsFilter

    materialized = [r.timestamp for r in instance.get_event_records(EventRecordsFilter(
        DagsterEventType.ASSET_MATERIALIZATION, asset_key=AssetKey(table)), limit=1000)
        if r.run_id == run_id]
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey(table), "stream_health"), limit=1000)
    # Event times, not ids: check executions are numbered in a table of their own.
    verdicts = sorted(r.event.timestamp for r in history if r.run_id == run_id)
    assert materialized and verdicts, (materialized, verdicts)
    for at in materialized:
        assert any(v >= at for v in verdicts), f"{table}: no verdict after the one at {at}"
    latest = max((r for r in history if r.run_id == run_id), key=lambda r: r.id)
    assert latest.event.dagster_event.event_specific_data.passed  # no incident was raised


def test_continuous_job_reports_every_batch_stops_on_terminate_and_resumes_exactly_once(
    kafka_broker, topic_factory, spark_resource, spark, any_lake
):
    topic = topic_factory("events")
    lake = any_lake
    resources = {"spark": spark_resource, "lake": lake,
                 "stream_source": KafkaSource(bootstrap_servers=kafka_broker.bootstrap,
                                              topic_names={"events": topic})}
    connection = KafkaConnection(bootstrap_servers=kafka_broker.bootstrap)

    def send(records: list[Record]) -> list[Record]:
        records = [Record(topic, r.key, r.value, r.kind, r.event) for r in records]
        produce(records, connection)
        return records

    sent = send(list(generate_events(500, bad_ratio=0.1, seed=5, id_prefix="a")))
    with instance_for_test() as instance:
        with ContinuousRun(instance, resources) as run:
            wait_until(lambda: run.rows_read() == 500, 180, "the first 500 records")
            sent += send(list(generate_events(100, seed=6, id_prefix="b")))
            wait_until(lambda: run.rows_read() == 600, 120, "the next 100 records")
            assert run.terminate() == DagsterRunStatus.CANCELED
        # A Terminate is the expected end: the step succeeded, nothing is shown as errored.
        from dagster import DagsterEventType

        steps = {e.dagster_event.event_type for e in instance.all_logs(run.run_id)
                 if e.dagster_event is not None and e.dagster_event.is_step_event}
        assert DagsterEventType.STEP_SUCCESS in steps and DagsterEventType.STEP_FAILURE not in steps
        # ... and its end is told in words: one RUN_CANCELED, no stack trace in any event.
        logs = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
        assert [e.message for e in logs
                if e.event_type == DagsterEventType.RUN_CANCELED] == [CANCELED_MESSAGE]
        assert not [e for e in logs if getattr(e.event_specific_data, "error", None)]

        reports = [r for _, r in run.reports()]
        assert reports[0].status == "starting" and reports[-1].status == "stopped"
        # throttled reports sum to every batch, no more, no less
        assert run.rows_read() == len(sent)
        assert {kind for kind, r in run.reports() if r.input_rows} == {"AssetMaterialization"}
        dead = [r for r in reports if r.dead_letter_rows]
        assert sum(r.dead_letter_rows for r in dead) == sum(1 for r in sent if r.kind != GOOD)
        assert reports[-1].kafka_lag == 0  # everything read: nothing waits in the topic
        assert_standard_metadata(instance, run.run_id, lake, sent)
        assert_derived_checks_ran(instance, run.run_id, sent)
        assert_health_on_every_materialization(instance, run.run_id, "raw_events")

        # A second run resumes from the checkpoint: it reads only what is new.
        sent += send(list(generate_events(200, bad_ratio=0.1, seed=7, id_prefix="c")))
        with ContinuousRun(instance, resources) as second:
            wait_until(lambda: second.rows_read() == 200, 180, "the next 200 records")
            assert second.terminate() == DagsterRunStatus.CANCELED
        # counted once when the run starts, then carried forward from the commits' metrics
        assert_standard_metadata(instance, second.run_id, lake, sent)

    lake.attach(spark)
    events = spark.read.format("delta").load(lake.table_path("raw_events"))
    dead_letters = spark.read.format("delta").load(lake.table_path("dead_letter_queue"))
    positions = events.select("partition", "offset").union(
        dead_letters.select("partition", "offset"))
    assert positions.count() == positions.distinct().count() == len(sent)
    good = {r.event["event_id"] for r in sent if r.kind == GOOD}
    ids = [r.event_id for r in events.select("event_id").collect()]
    assert len(ids) == len(set(ids)) and set(ids) == good
    assert dead_letters.count() == sum(1 for r in sent if r.kind != GOOD)
