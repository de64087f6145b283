"""Sensors against a real Dagster instance: alerts from reports, failed runs, catch-up requests.

The continuous job's reports are stored the way the job stores them (asset events of a
STARTED run tagged continuous); no Spark or broker is needed.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from typing import Any

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetObservation,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    job,
    op,
)
from dagster._core.events import AssetObservationData, DagsterEvent
from dagster._core.events.log import EventLogEntry

from stream_assets.continuous_runs import CONTINUOUS, MODE_TAG
from stream_assets.delta_log import delta_log_version
from stream_assets.jobs import JOB_NAME
from stream_assets.lake_files import LOCAL_FILES
from stream_assets.monitoring.catch_up_sensor import (
    TABLE_MISSING,
    build_catch_up_sensor,
    input_positions,
    plan_catch_up,
)
from stream_assets.monitoring.problems import HealthThresholds
from stream_assets.monitoring.sensors import build_health_sensor, build_run_failure_sensor
from stream_assets.monitoring.stream_report import Status, StreamReport
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.alerting import AlertSink
from stream_assets.tables.catalog import TABLES

pytest_plugins = ["stream_assets_tests.dagster_dev"]


@pytest.fixture
def instance():
    with instance_for_test() as instance:
        yield instance


def start_run(instance: DagsterInstance, tables: list[str] | None = None) -> DagsterRun:
    config: dict[str, Any] = {"ops": {"run_streams": {"config": {"tables": tables or []}}}}
    return instance.add_run(DagsterRun(
        job_name=JOB_NAME, run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED,
        tags={MODE_TAG: CONTINUOUS}, run_config=config,
    ))


def store_report(instance: DagsterInstance, run: DagsterRun, table: str = "raw_events",
                 **fields: Any) -> None:
    report = StreamReport(query=table, reported_at=time.time(),
                          **{"status": Status.RUNNING, "last_batch_at": time.time(),
                             "kafka_lag": 0, **fields})
    observation = AssetObservation(AssetKey(table), metadata=report.to_metadata())
    instance.store_event(EventLogEntry(
        error_info=None, level="debug", user_message="", run_id=run.run_id,
        timestamp=time.time(),
        dagster_event=DagsterEvent(DagsterEventType.ASSET_OBSERVATION.value, JOB_NAME,
                                   event_specific_data=AssetObservationData(observation)),
    ))


class Ticks:
    """Evaluates the health sensor like the daemon does: cursor carried from tick to tick."""

    def __init__(self, instance: DagsterInstance, url: str) -> None:
        self.instance = instance
        self.cursor: str | None = None
        self.sensor = build_health_sensor(TABLES, HealthThresholds(), minimum_interval_seconds=5)
        self.sink = AlertSink(webhook_url=url)

    def tick(self):
        context = build_sensor_context(instance=self.instance, cursor=self.cursor,
                                       resources={"alerting": self.sink})
        result = self.sensor(context)
        self.cursor = result.cursor
        return result


def texts(receiver, since: int) -> list[str]:
    return [m["text"] for m in receiver.received()[since:]]


def test_failed_stream_alerts_once_then_resolves_once(instance, alert_receiver):
    ticks, before = Ticks(instance, alert_receiver.url), len(alert_receiver.received())
    assert ticks.tick().skip_reason is not None  # nothing running
    run = start_run(instance)
    store_report(instance, run)
    ticks.tick()
    store_report(instance, run, status=Status.FAILED, error="IOException: Mkdirs failed",
                 consecutive_failures=1)
    first = ticks.tick()
    store_report(instance, run, status=Status.FAILED, error="IOException: Mkdirs failed",
                 consecutive_failures=2)
    ticks.tick()
    ticks.tick()
    assert texts(alert_receiver, before) == [":red_circle: raw_events: query failed"]
    [evaluation] = first.asset_events
    assert isinstance(evaluation, AssetCheckEvaluation) and not evaluation.passed
    assert "Mkdirs failed" in evaluation.description

    store_report(instance, run, status=Status.RUNNING)
    resolved = ticks.tick()
    ticks.tick()
    assert texts(alert_receiver, before)[1:] == [
        ":large_green_circle: raw_events: query failed - resolved"]
    assert resolved.asset_events[0].passed


def test_alert_refused_by_the_webhook_is_delivered_on_a_later_tick_exactly_once(
    instance, alert_receiver
):
    ticks, before = Ticks(instance, alert_receiver.url), len(alert_receiver.received())
    run = start_run(instance)
    store_report(instance, run, status=Status.FAILED, error="boom")
    alert_receiver.refuse = 1
    ticks.tick()
    assert texts(alert_receiver, before) == []
    ticks.tick()
    ticks.tick()
    assert texts(alert_receiver, before) == [":red_circle: raw_events: query failed"]


def test_terminating_the_run_resolves_the_open_incident(instance, alert_receiver):
    ticks, before = Ticks(instance, alert_receiver.url), len(alert_receiver.received())
    run = start_run(instance)
    store_report(instance, run, status=Status.FAILED, error="boom")
    ticks.tick()
    instance.report_run_canceled(instance.get_run_by_id(run.run_id))
    ticks.tick()
    assert len(texts(alert_receiver, before)) == 2
    assert "no longer running (CANCELED)" in alert_receiver.received()[-1]["blocks"][1][
        "text"]["text"]


def test_a_continuous_run_that_never_reports_is_stalled(instance, alert_receiver):
    ticks = Ticks(instance, alert_receiver.url)
    ticks.sensor = build_health_sensor(TABLES, HealthThresholds(silent_after_s=0.5))
    start_run(instance)
    time.sleep(1)
    result = ticks.tick()
    assert result.asset_events and "no report" in result.asset_events[0].description


def test_a_delta_sourced_stream_stuck_while_upstream_versions_wait_names_its_upstream(
    instance, alert_receiver
):
    ticks, before = Ticks(instance, alert_receiver.url), len(alert_receiver.received())
    ticks.sensor = build_health_sensor(TABLES, HealthThresholds(stall_after_s=30))
    run = start_run(instance, ["event_counts"])
    store_report(instance, run, "event_counts", kafka_lag=None, upstream_versions_waiting=3,
                 last_batch_at=time.time() - 90)
    ticks.tick()
    [message] = alert_receiver.received()[before:]
    assert message["text"] == ":large_orange_circle: event_counts: stream stalled"
    assert re.fullmatch(r"```no batch completed for 9\d s while 3 upstream raw_events versions "
                        r"wait```", message["blocks"][1]["text"]["text"])


def test_failed_run_of_a_streaming_job_alerts(instance, alert_receiver):
    @op
    def explode():
        raise RuntimeError("the broker went away")

    @job(name="broken_streaming_job")
    def broken():
        explode()

    result = broken.execute_in_process(instance=instance, raise_on_error=False)
    run = instance.get_run_by_id(result.run_id)
    failure = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.RUN_FAILURE).records[0]
    before = len(alert_receiver.received())
    sensor = build_run_failure_sensor()
    context = build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failure.event_log_entry.dagster_event,
        dagster_instance=instance, dagster_run=run,
        resources={"alerting": AlertSink(webhook_url=alert_receiver.url)},
    )
    sensor(context.for_run_failure())
    [message] = alert_receiver.received()[before:]
    assert message["text"] == (
        ":red_circle: run of broken_streaming_job failed (broken_streaming_job)")
    assert "the broker went away" in message["blocks"][1]["text"]["text"]


class FakeSource(KafkaSource):
    """Broker offsets as the test says (the catch-up decision, not Kafka, is under test)."""

    latest: dict[str, int] = {}

    def offsets(self, topic: str) -> dict[str, tuple[int, int]]:
        return {"0": (0, self.latest.get(topic, 0))}


def test_catch_up_plan_requests_tables_whose_input_moved_and_nobody_writes():
    now = {"raw_events": {"kafka:events": 10}, "event_counts": {"delta:raw_events": 3},
           "sessions": None}
    assert plan_catch_up(now, {}, busy=()) == ["raw_events", "event_counts"]
    seen = {"raw_events": {"kafka:events": 10}, "event_counts": {"delta:raw_events": 2}}
    assert plan_catch_up(now, seen, busy=()) == ["event_counts"]
    assert plan_catch_up(now, seen, busy={"event_counts"}) == []
    assert plan_catch_up({"raw_events": {"kafka:events": 0}}, {}, busy=()) == []
    # Not there yet is no input: an empty topic requests nothing.
    assert plan_catch_up({"raw_events": {"kafka:events": 0, TABLE_MISSING: 1}}, {},
                         busy=()) == []


def test_catch_up_sensor_rebuilds_a_table_a_full_refresh_deleted(instance, tmp_path):
    lake = DeltaLake(tables_root=str(tmp_path / "t"), checkpoints_root=str(tmp_path / "c"))
    counts = next(t for t in TABLES if t.name == "event_counts")
    log = tmp_path / "t" / "raw_events" / "_delta_log"
    log.mkdir(parents=True)
    (log / f"{0:020d}.json").write_text("{}")
    own = tmp_path / "t" / "event_counts" / "_delta_log"
    own.mkdir(parents=True)
    (own / f"{0:020d}.json").write_text("{}")
    seen = {"event_counts": input_positions(counts, {}, lake)}
    assert seen == {"event_counts": {"delta:raw_events": 0}}
    # raw_events refreshed and rebuilt to the same version; event_counts reset with it.
    shutil.rmtree(own.parent)
    now = {"event_counts": input_positions(counts, {}, lake)}
    assert plan_catch_up(now, seen, busy=()) == ["event_counts"]


def test_catch_up_sensor_requests_a_materialization_when_offsets_move(instance, tmp_path):
    lake = DeltaLake(tables_root=str(tmp_path / "t"), checkpoints_root=str(tmp_path / "c"))
    sensor = build_catch_up_sensor(TABLES)

    def tick(cursor, latest):
        context = build_sensor_context(
            instance=instance, cursor=cursor,
            resources={"stream_source": FakeSource(latest=latest), "lake": lake})
        return sensor(context)

    first = tick(None, {"events": 5})
    assert [r.asset_selection for r in first.run_requests] == [
        [AssetKey("raw_events"), AssetKey("dead_letter_queue")]]
    again = tick(first.cursor, {"events": 5})
    assert not again.run_requests
    moved = tick(again.cursor, {"events": 9})
    assert len(moved.run_requests) == 1
    start_run(instance, ["raw_events"])  # the continuous job writes it: no catch-up
    assert not tick(moved.cursor, {"events": 20}).run_requests


def test_delta_version_is_read_from_the_log_without_spark(tmp_path):
    log = tmp_path / "t" / "_delta_log"
    log.mkdir(parents=True)
    assert delta_log_version(str(tmp_path / "t"), LOCAL_FILES) is None
    for v in (0, 1, 12):
        (log / f"{v:020d}.json").write_text("{}")
    (log / f"{10:020d}.checkpoint.parquet").write_text("")
    assert delta_log_version(str(tmp_path / "t"), LOCAL_FILES) == 12
    # A store the lake's files do not know is left to Spark.
    assert delta_log_version("hdfs://namenode/t", LOCAL_FILES) is None


def test_a_table_dropping_more_late_rows_than_it_declares_alerts_once(instance, alert_receiver):
    ticks, before = Ticks(instance, alert_receiver.url), len(alert_receiver.received())
    run = start_run(instance, ["event_counts"])
    store_report(instance, run, "event_counts", kafka_lag=None, upstream_versions_waiting=0,
                 late_rows=31_790)
    ticks.tick()
    ticks.tick()
    [message] = alert_receiver.received()[before:]
    assert message["text"] == ":large_orange_circle: event_counts: late rows dropped"
    assert "dropped 31,790 late rows in the last 10.0 min (alert above 1,000)" in (
        message["blocks"][1]["text"]["text"])


def test_late_rows_of_a_report_replaced_before_the_tick_still_count(instance, alert_receiver):
    """Reports come every event_interval_s, the sensor every few seconds more: the batch that
    dropped the rows and the quiet report after it can both land between two ticks."""
    ticks, before = Ticks(instance, alert_receiver.url), len(alert_receiver.received())
    run = start_run(instance, ["event_counts"])
    for late in (1_100, 0):
        store_report(instance, run, "event_counts", kafka_lag=None, upstream_versions_waiting=0,
                     late_rows=late)
    ticks.tick()
    ticks.tick()  # seen again: counted once
    [message] = alert_receiver.received()[before:]
    assert message["text"] == ":large_orange_circle: event_counts: late rows dropped"
    assert "dropped 1,100 late rows" in message["blocks"][1]["text"]["text"]


def test_each_tick_writes_its_summary_to_the_tick_log(instance, alert_receiver):
    """What the UI's "View logs" of a tick shows: the instance's captured tick log."""
    ticks = Ticks(instance, alert_receiver.url)
    store_report(instance, start_run(instance, ["raw_events"]))
    context = build_sensor_context(instance_ref=instance.get_ref(),
                                   resources={"alerting": ticks.sink},
                                   repository_name="stream_assets",
                                   sensor_name=ticks.sensor.name)
    with context:
        ticks.sensor(context)
    log = instance.compute_log_manager.get_log_data(context.log_key).stderr.decode()
    messages = [json.loads(line)["msg"] for line in log.splitlines()]
    summary = "1 running stream(s), 0 open incident(s); 0 new alert(s), 0 delivered, 0 queued"
    assert any(m.endswith(summary) for m in messages), messages
