"""Progress reports -> throttled, accumulated Dagster events (no Spark needed)."""

from __future__ import annotations

import json

from dagster import AssetMaterialization, AssetObservation

from stream_assets.lake_files import LOCAL_FILES
from stream_assets.monitoring.lag import TopicLag
from stream_assets.monitoring.measures import checkpoint_offsets, measure_backlog
from stream_assets.monitoring.metadata import table_state
from stream_assets.monitoring.report_events import stream_events
from stream_assets.monitoring.stream_report import Status, StreamReport
from stream_assets.monitoring.tracker import BatchTotals, StreamTracker


def progress(batch_id: int, rows: int, *, input_rate: float = 100.0, processed_rate: float = 200.0,
             duration_ms: int = 500, dropped: int = 0, state_rows: int = 0,
             watermark: str = "2026-01-01T00:10:00.000Z") -> dict:
    return {
        "id": "q", "runId": "r", "name": "raw_events", "batchId": batch_id,
        "numInputRows": rows, "inputRowsPerSecond": input_rate,
        "processedRowsPerSecond": processed_rate,
        "durationMs": {"triggerExecution": duration_ms},
        "eventTime": {"watermark": watermark},
        "stateOperators": [{"numRowsTotal": state_rows, "numRowsDroppedByWatermark": dropped,
                            "memoryUsedBytes": 1024}],
        "sources": [{"description": "KafkaV2[Subscribe[events]]",
                     "endOffset": json.dumps({"events": {"0": 10 * (batch_id + 1)}})}],
    }


def test_first_report_goes_out_at_once_then_at_most_one_per_interval():
    tracker = StreamTracker("raw_events", started_at=0)
    assert tracker.due(0, interval_s=10, heartbeat_s=60)
    tracker.take(0)
    tracker.on_progress(progress(0, 50), now=1)
    assert not tracker.due(5, 10, 60)
    assert tracker.due(10, 10, 60)


def test_batches_between_reports_are_summed_into_one():
    tracker = StreamTracker("raw_events", started_at=0)
    tracker.take(0)
    for i, rows in enumerate([10, 20, 30]):
        tracker.on_progress(progress(i, rows, dropped=1, duration_ms=100 * (i + 1)), now=i + 1)
    report, totals = tracker.take(10, kafka_lag=7, dead_letter_rows=3)
    assert (report.batches, report.input_rows, report.kafka_lag) == (3, 60, 7)
    assert report.status == Status.RUNNING and report.last_batch_id == 2
    assert totals.rows_dropped_by_watermark == 3 and totals.batch_duration_ms_max == 300
    assert report.late_rows == 3
    # 60 rows took 0.6 s of processing and arrived over 0.6 s at 100 rows/s
    assert report.processed_rows_per_second == 100.0
    assert report.input_rows_per_second == 100.0
    nothing, _ = tracker.take(20)
    assert (nothing.batches, nothing.input_rows) == (0, 0)


def test_idle_query_reports_only_at_the_heartbeat():
    tracker = StreamTracker("raw_events", started_at=0)
    tracker.take(0)
    tracker.on_idle(5)
    assert not tracker.due(30, 10, 60)
    assert tracker.due(60, 10, 60)
    assert tracker.take(60)[0].status == Status.IDLE


def test_a_source_going_away_and_coming_back_is_reported_at_once_each_time():
    tracker = StreamTracker("raw_events", started_at=0)
    tracker.take(0)
    tracker.on_source(None, now=5)
    assert not tracker.due(6, 10, 60)
    tracker.on_source("no Kafka broker answered", now=12)
    assert tracker.due(12, 10, 60)
    away, _ = tracker.take(12)
    assert (away.source_unreachable, away.source_unreachable_since) == (
        "no Kafka broker answered", 12)
    tracker.on_source("no Kafka broker answered", now=22)  # still away: nothing new to say
    assert not tracker.due(23, 10, 60)
    assert tracker.take(30)[0].source_unreachable_since == 12
    tracker.on_source(None, now=40)
    assert tracker.due(40, 10, 60)
    back, _ = tracker.take(40)
    assert (back.source_unreachable, back.source_unreachable_since) == (None, None)


def test_failure_is_reported_at_once_and_stays_failed_across_restarts_until_a_batch_succeeds():
    tracker = StreamTracker("raw_events", started_at=0)
    tracker.take(0)
    tracker.on_failed("IOException: disk full", now=1)
    assert tracker.due(1.5, 10, 60)
    report, _ = tracker.take(2)
    assert (report.status, report.error, report.consecutive_failures) == (
        "failed", "IOException: disk full", 1)
    tracker.on_started(5)  # restarted: still failed until it proves otherwise
    tracker.on_failed("IOException: disk full", now=6)
    assert tracker.take(6)[0].consecutive_failures == 2
    tracker.on_started(10)
    tracker.on_progress(progress(7, 5), now=11)
    assert tracker.due(11, 10, 60)  # recovery is news too
    report, _ = tracker.take(11)
    assert (report.status, report.error, report.consecutive_failures) == ("running", None, 0)


def test_an_idle_trigger_or_a_report_measuring_nothing_waiting_means_caught_up():
    tracker = StreamTracker("raw_events", started_at=0)
    for i in range(3):
        tracker.on_progress(progress(i, 10, input_rate=500.0, processed_rate=100.0), now=i + 1)
    assert tracker.behind_streak == 3
    report, _ = tracker.take(5, kafka_lag=30)
    assert report.caught_up_at is None and report.behind_batches == 3
    tracker.on_idle(now=6)
    report, _ = tracker.take(7, kafka_lag=30)  # records arrived after the idle trigger
    assert report.caught_up_at == 6 and report.behind_batches == 0
    report, _ = tracker.take(8, kafka_lag=0)
    assert report.caught_up_at == 8
    report, _ = tracker.take(9)  # nothing measured: nothing learnt
    assert report.caught_up_at == 8


def test_behind_streak_counts_consecutive_batches_slower_than_their_input():
    tracker = StreamTracker("raw_events", started_at=0)
    for i in range(3):
        tracker.on_progress(progress(i, 100, input_rate=500, processed_rate=100), now=i)
    assert tracker.behind_streak == 3
    tracker.on_progress(progress(3, 0), now=4)  # an empty batch says nothing
    assert tracker.behind_streak == 3
    tracker.on_progress(progress(4, 100, input_rate=50, processed_rate=100), now=5)
    assert tracker.behind_streak == 0


def test_events_materialize_tables_that_changed_with_plottable_metadata():
    totals = BatchTotals()
    totals.add(progress(4, 100, dropped=2, state_rows=9))
    report = StreamReport("raw_events", "running", 10.0, batches=1, input_rows=100,
                          input_rows_per_second=100.0, processed_rows_per_second=200.0,
                          kafka_lag=5, dead_letter_rows=10, last_batch_id=4, last_batch_at=9.0)
    lags = [TopicLag("events", {"0": 5, "1": 0})]
    events = stream_events("raw_events", ("raw_events", "dead_letter_queue"), report, totals,
                           {"raw_events": 90, "dead_letter_queue": 10}, lags)
    assert [type(e) for e in events] == [AssetMaterialization, AssetMaterialization]
    meta = events[0].metadata
    for key in ("input_rows", "input_rows_per_second", "processed_rows_per_second",
                "batch_duration_ms", "watermark", "state_rows", "rows_dropped_by_watermark",
                "kafka_lag", "kafka_lag_by_partition", "dead_letter_ratio", "rows_written"):
        assert key in meta, key
    assert meta["rows_written"].value == 90 and events[1].metadata["rows_written"].value == 10
    assert meta["kafka_lag_by_partition"].value == {"events": {"0": 5, "1": 0}}
    assert meta["dead_letter_ratio"].value == 0.1
    assert meta["watermark"].value == 1767226200.0


def test_materializations_carry_each_tables_standard_metadata_and_observations_do_not():
    states = {"raw_events": table_state("/lake/raw_events", 7, 1234, 1767226200.0)}
    report = StreamReport("raw_events", "running", 10.0, batches=1, input_rows=5)
    totals = BatchTotals()
    totals.add(progress(7, 5))
    [event] = stream_events("raw_events", ("raw_events",), report, totals, {"raw_events": 5},
                            None, None, states)
    assert isinstance(event, AssetMaterialization)
    assert event.metadata["dagster/row_count"].value == 1234
    assert event.metadata["delta_version"].value == 7
    assert event.metadata["dagster/uri"].value == "file:///lake/raw_events"
    idle = StreamReport("raw_events", "idle", 20.0, kafka_lag=0)
    [heartbeat] = stream_events("raw_events", ("raw_events",), idle, BatchTotals(),
                                {"raw_events": 0}, None, None, states)
    # an observation says nothing changed: it carries no count the Plots would mistake for one
    assert isinstance(heartbeat, AssetObservation) and "dagster/row_count" not in heartbeat.metadata


def test_a_report_without_rows_is_an_observation_of_the_main_table_only():
    report = StreamReport("raw_events", "idle", 10.0, kafka_lag=0)
    events = stream_events("raw_events", ("raw_events", "dead_letter_queue"), report,
                           BatchTotals(), {"raw_events": 0, "dead_letter_queue": 0}, None)
    assert len(events) == 1 and isinstance(events[0], AssetObservation)
    assert events[0].metadata["stream_status"].value == "idle"


def test_upstream_backlog_is_reported_with_its_per_table_detail():
    tracker = StreamTracker("event_counts", started_at=0)
    report, totals = tracker.take(10, upstream_versions_waiting=3)
    assert report.upstream_versions_waiting == 3 and report.kafka_lag is None
    [event] = stream_events("event_counts", ("event_counts",), report, totals,
                            {"event_counts": 0}, None, {"raw_events": 3})
    assert event.metadata["upstream_versions_waiting"].value == 3
    assert event.metadata["upstream_versions_waiting_by_table"].value == {"raw_events": 3}


def delta_table(path, versions: int) -> str:
    """A Delta log with versions 0..versions-1 (only the file names matter here)."""
    log = path / "_delta_log"
    log.mkdir(parents=True)
    for v in range(versions):
        (log / f"{v:020d}.json").write_text("{}")
    return str(path)


def delta_progress(path: str, version: int, index: int = -1) -> dict:
    return {"sources": [{"description": f"DeltaSource[file:{path}]", "endOffset": {
        "sourceVersion": 1, "reservoirId": "x", "reservoirVersion": version, "index": index,
        "isStartingVersion": False}}]}


def test_backlog_compares_the_query_position_with_the_upstream_log(tmp_path):
    raw = delta_table(tmp_path / "raw_events", versions=6)  # latest version 5
    paths = {"raw_events": raw}
    checkpoint = str(tmp_path / "checkpoint")

    def backlog(paths, progress):
        return measure_backlog(None, paths, progress, checkpoint, LOCAL_FILES)

    assert backlog(paths, delta_progress(raw, 6)) == {"raw_events": 0}
    assert backlog(paths, delta_progress(raw, 3)) == {"raw_events": 3}
    # a new query (no checkpoint, no progress) has every version ahead of it
    assert backlog(paths, None) == {"raw_events": 6}
    # an upstream table that does not exist yet is not judged
    assert backlog({"raw_events": str(tmp_path / "none")}, None) == {}


def test_backlog_of_a_restarted_query_comes_from_its_last_committed_batch(tmp_path):
    raw = delta_table(tmp_path / "raw_events", versions=10)
    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "commits").mkdir()
    for batch, version in ((0, 4), (1, 7)):
        (checkpoint / "offsets" / str(batch)).write_text(
            "v1\n{}\n" + json.dumps({"sourceVersion": 1, "reservoirId": "x",
                                      "reservoirVersion": version, "index": -1,
                                      "isStartingVersion": False}) + "\n")
    (checkpoint / "commits" / "0").write_text("v1\n{}")  # batch 1 planned, not committed
    assert measure_backlog(None, {"raw_events": raw}, None, str(checkpoint), LOCAL_FILES) == {
        "raw_events": 6}  # versions 4..9


def test_checkpoint_offsets_are_those_of_the_last_committed_batch(tmp_path):
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    for batch, offset in ((0, 10), (1, 25), (2, 40)):
        (tmp_path / "offsets" / str(batch)).write_text(
            "v1\n" + json.dumps({"batchWatermarkMs": 0}) + "\n"
            + json.dumps({"events": {"0": offset, "1": offset + 1}}) + "\n")
    (tmp_path / "commits" / "0").write_text("v1\n{}")
    (tmp_path / "commits" / "1").write_text("v1\n{}")  # batch 2 planned, not committed
    assert checkpoint_offsets(str(tmp_path), LOCAL_FILES) == {"events": {"0": 25, "1": 26}}
    assert checkpoint_offsets(str(tmp_path / "missing"), LOCAL_FILES) == {}


def test_event_texts_say_what_each_figure_counts():
    tracker = StreamTracker("event_counts", started_at=0)
    tracker.take(0)
    tracker.on_progress(progress(3, 40_000, dropped=31_790), now=1)
    tracker.on_progress(progress(4, 2_016), now=2)
    report, totals = tracker.take(10)
    [event] = stream_events("event_counts", ["event_counts"], report, totals,
                            {"event_counts": 0}, None)
    assert event.description == (
        "event_counts running, since the last report: batches 3-4 read 42,016 rows, 31,790 of "
        "them dropped as late (behind the watermark); 0 rows committed to event_counts")
    report, totals = tracker.take(20)
    [event] = stream_events("event_counts", ["event_counts"], report, totals,
                            {"event_counts": 120}, None)
    assert event.description == ("event_counts running, since the last report: no batch "
                                 "completed; 120 rows committed to event_counts")
