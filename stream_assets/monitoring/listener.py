"""Spark's streaming query events -> throttled Dagster events on each table's asset.

`QueryEventListener` is the StreamingQueryListener: Spark calls it on its listener thread
(started, progress, idle, terminated) and it only queues plain dicts, so it never blocks a
query. The continuous job drains the queue into one `StreamTracker` per query, a pure
accumulator that decides when a report is due (at most one per `interval_s`, a heartbeat
every `heartbeat_s`, failures at once) and sums what happened in between. `stream_events`
turns a report into Dagster events: an AssetMaterialization on each table that got rows,
else an AssetObservation, all carrying numeric metadata the UI can plot and the health
sensor reads back (see health.StreamReport).
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    MetadataValue,
)
from pyspark.sql.streaming.listener import StreamingQueryListener

from stream_assets.checkpoint_log import NO_BATCH, CommittedBatch, last_committed_batch
from stream_assets.lake_files import LakeFiles
from stream_assets.monitoring.health import Status, StreamReport
from stream_assets.monitoring.lag import (
    DeltaPosition,
    Offsets,
    TopicLag,
    delta_positions,
    fold_offsets,
    lag_by_partition,
    parse_delta_offset,
    query_lag,
    total_lag,
    versions_waiting,
)
from stream_assets.monitoring.metadata import (
    row_count_after,
    rows_written,
    table_schema,
    table_state,
)
from stream_assets.sinks import delta_version, history_frame, is_delta_table
from stream_assets.tables import expectations as quality
from stream_assets.tables.expectations import DataExpectation

STARTED, PROGRESS, IDLE, TERMINATED = "started", "progress", "idle", "terminated"


@dataclass(frozen=True)
class QueryEvent:
    """One lifecycle event of a query, as plain data."""

    kind: str
    query_id: str
    run_id: str
    at: float
    name: str | None = None
    progress: dict[str, Any] | None = None
    error: str | None = None


class QueryEventListener(StreamingQueryListener):
    """Queues every query's lifecycle events for the job's loop; does no work of its own."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[QueryEvent] = queue.SimpleQueue()
        self.errors = 0

    def _put(self, make) -> None:
        try:
            self._events.put(make())
        except Exception:  # never let a listener error reach Spark's listener bus
            self.errors += 1

    def onQueryStarted(self, event) -> None:
        self._put(lambda: QueryEvent(STARTED, str(event.id), str(event.runId), time.time(),
                                     name=event.name))

    def onQueryProgress(self, event) -> None:
        def make() -> QueryEvent:
            progress = json.loads(event.progress.json)
            return QueryEvent(PROGRESS, str(progress["id"]), str(progress["runId"]), time.time(),
                              name=progress.get("name"), progress=progress)

        self._put(make)

    def onQueryIdle(self, event) -> None:
        self._put(lambda: QueryEvent(IDLE, str(event.id), str(event.runId), time.time()))

    def onQueryTerminated(self, event) -> None:
        self._put(lambda: QueryEvent(TERMINATED, str(event.id), str(event.runId), time.time(),
                                     error=event.exception))

    def drain(self) -> list[QueryEvent]:
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        value = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return value if value > 0 else None  # Spark's "no watermark yet" is the epoch


@dataclass
class BatchTotals:
    """What the batches since the previous report did, summed."""

    batches: int = 0
    input_rows: int = 0
    rows_dropped_by_watermark: int = 0
    batch_duration_ms: int = 0
    batch_duration_ms_max: int = 0
    first_batch_id: int | None = None
    last_batch_id: int | None = None
    _input_seconds: float = 0.0
    _processing_seconds: float = 0.0
    latest: dict[str, Any] | None = None
    # The progress reports themselves, for what only some tables observe (expectations).
    reports: list[dict[str, Any]] = field(default_factory=list)

    def add(self, progress: Mapping[str, Any]) -> None:
        rows = int(progress.get("numInputRows") or 0)
        duration = int((progress.get("durationMs") or {}).get("triggerExecution") or 0)
        batch_id = progress.get("batchId")
        self.batches += 1
        self.input_rows += rows
        self.batch_duration_ms = duration
        self.batch_duration_ms_max = max(self.batch_duration_ms_max, duration)
        if batch_id is not None:
            if self.first_batch_id is None:
                self.first_batch_id = int(batch_id)
            self.last_batch_id = int(batch_id)
        for op in progress.get("stateOperators") or []:
            self.rows_dropped_by_watermark += int(op.get("numRowsDroppedByWatermark") or 0)
        input_rate = float(progress.get("inputRowsPerSecond") or 0.0)
        if rows and input_rate > 0:
            self._input_seconds += rows / input_rate
        self._processing_seconds += duration / 1000
        self.latest = dict(progress)
        self.reports.append(self.latest)

    @property
    def input_rows_per_second(self) -> float:
        """Rows over the time they took to arrive, as Spark measures it per batch."""
        return self.input_rows / self._input_seconds if self._input_seconds else 0.0

    @property
    def processed_rows_per_second(self) -> float:
        return self.input_rows / self._processing_seconds if self._processing_seconds else 0.0


def behind(progress: Mapping[str, Any]) -> bool | None:
    """Whether a batch fell behind (input faster than processing); None if it read nothing."""
    if not int(progress.get("numInputRows") or 0):
        return None
    return float(progress.get("inputRowsPerSecond") or 0.0) > float(
        progress.get("processedRowsPerSecond") or 0.0
    )


@dataclass
class StreamTracker:
    """One query's state between reports; pure (fed with times and progress dicts)."""

    query: str
    started_at: float
    status: str = Status.STARTING
    last_batch_at: float | None = None
    last_batch_id: int | None = None
    latest_progress: dict[str, Any] | None = None
    caught_up_at: float | None = None
    behind_streak: int = 0
    failures: int = 0
    error: str | None = None
    last_report_at: float | None = None
    urgent: bool = True  # the first report (starting) goes out at once
    totals: BatchTotals = field(default_factory=BatchTotals)
    source_error: str | None = None  # the last probe of the sources, None: they answered
    source_error_since: float | None = None

    def on_started(self, now: float) -> None:
        self.started_at = now
        if self.status != Status.FAILED:
            self.status = Status.STARTING

    def on_progress(self, progress: Mapping[str, Any], now: float) -> None:
        self.totals.add(progress)
        self.latest_progress = dict(progress)
        self.last_batch_at = now
        if progress.get("batchId") is not None:
            self.last_batch_id = int(progress["batchId"])
        verdict = behind(progress)
        if verdict is not None:
            self.behind_streak = self.behind_streak + 1 if verdict else 0
        self._healthy(Status.RUNNING if int(progress.get("numInputRows") or 0) else Status.IDLE)

    def on_idle(self, now: float) -> None:
        # Spark calls a query idle when a trigger found nothing to read: it has caught up,
        # so it is neither behind nor stalled on input that was waiting before.
        self.caught_up_at = now
        self.behind_streak = 0
        self._healthy(Status.IDLE)

    def _healthy(self, status: str) -> None:
        if self.failures:
            self.urgent = True  # recovered: say so without waiting for the interval
        self.failures = 0
        self.error = None
        self.status = status

    def on_failed(self, error: str, now: float) -> None:
        self.failures += 1
        self.error = error
        self.status = Status.FAILED
        self.urgent = True

    def on_waiting(self, reason: str) -> None:
        if self.status != Status.WAITING:
            self.urgent = True
        self.status = Status.WAITING
        self.error = reason

    def on_source(self, error: str | None, now: float) -> None:
        """What a probe of the query's sources found (None: every one answered). An outage,
        and its end, are reported at once."""
        if (error is None) != (self.source_error is None):
            self.urgent = True
            self.source_error_since = now if error is not None else None
        self.source_error = error

    def on_stopped(self, now: float) -> None:
        self.status = Status.STOPPED
        self.urgent = True

    def due(self, now: float, interval_s: float, heartbeat_s: float) -> bool:
        """Whether a report should go out now: throttled, but failures and firsts at once."""
        if self.urgent or self.last_report_at is None:
            return True
        elapsed = now - self.last_report_at
        return (self.totals.batches > 0 and elapsed >= interval_s) or elapsed >= heartbeat_s

    def take(
        self,
        now: float,
        kafka_lag: int | None = None,
        dead_letter_rows: int | None = None,
        upstream_versions_waiting: int | None = None,
        failing_expectations: str | None = None,
    ) -> tuple[StreamReport, BatchTotals]:
        """The report for this moment and the batches it covers; starts a new interval."""
        totals, self.totals = self.totals, BatchTotals()
        self.last_report_at = now
        self.urgent = False
        measured = [w for w in (kafka_lag, upstream_versions_waiting) if w is not None]
        if measured and not any(measured):
            self.caught_up_at = now
        report = StreamReport(
            query=self.query,
            status=str(self.status),
            reported_at=now,
            batches=totals.batches,
            input_rows=totals.input_rows,
            input_rows_per_second=round(totals.input_rows_per_second, 3),
            processed_rows_per_second=round(totals.processed_rows_per_second, 3),
            behind_batches=self.behind_streak,
            last_batch_id=self.last_batch_id,
            last_batch_at=self.last_batch_at,
            started_at=self.started_at,
            caught_up_at=self.caught_up_at,
            kafka_lag=kafka_lag,
            upstream_versions_waiting=upstream_versions_waiting,
            dead_letter_rows=dead_letter_rows,
            failing_expectations=failing_expectations,
            consecutive_failures=self.failures,
            error=self.error if self.status in (Status.FAILED, Status.WAITING) else None,
            source_unreachable=self.source_error,
            source_unreachable_since=self.source_error_since,
        )
        return report, totals


def batch_metadata(
    totals: BatchTotals,
    lags: list[TopicLag] | None,
    backlog: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The per-batch figures beyond the report: durations, watermark, state, lag detail."""
    meta: dict[str, Any] = {
        "batch_duration_ms": totals.batch_duration_ms,
        "batch_duration_ms_max": totals.batch_duration_ms_max,
        "rows_dropped_by_watermark": totals.rows_dropped_by_watermark,
    }
    if totals.first_batch_id is not None:
        meta["first_batch_id"] = totals.first_batch_id
    latest = totals.latest or {}
    watermark = _epoch((latest.get("eventTime") or {}).get("watermark"))
    if watermark:
        meta["watermark"] = MetadataValue.timestamp(watermark)
    operators = latest.get("stateOperators") or []
    if operators:
        meta["state_rows"] = sum(int(op.get("numRowsTotal") or 0) for op in operators)
        meta["state_memory_bytes"] = sum(int(op.get("memoryUsedBytes") or 0) for op in operators)
    if lags is not None:
        meta["kafka_lag_by_partition"] = MetadataValue.json(lag_by_partition(lags))
    if backlog is not None:
        meta["upstream_versions_waiting_by_table"] = MetadataValue.json(dict(backlog))
    return meta


def stream_events(
    main_table: str,
    tables: Iterable[str],
    report: StreamReport,
    totals: BatchTotals,
    written: Mapping[str, int],
    lags: list[TopicLag] | None,
    backlog: Mapping[str, int] | None = None,
    states: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[AssetMaterialization | AssetObservation]:
    """Dagster events for one report: a materialization per table that changed, else an
    observation of the main table (a heartbeat, a failure, a stop). `states` holds each
    table's standard metadata after the report's commits (DeltaWrites.state)."""
    states = states or {}
    shared = {**report.to_metadata(), **batch_metadata(totals, lags, backlog)}
    if report.dead_letter_rows is not None and report.input_rows:
        shared["dead_letter_ratio"] = round(report.dead_letter_rows / report.input_rows, 6)
    description = f"{report.query} {report.status}, since the last report: {_read_text(totals)}"
    events: list[AssetMaterialization | AssetObservation] = []
    for name in tables:
        rows = written.get(name, 0)
        changed = rows > 0 or (name == main_table and report.input_rows > 0)
        meta = {**shared, "rows_written": rows, "mode": "continuous"}
        if changed:
            meta.update(states.get(name, {}))
            # Rows count the table's Delta commits, batches the query's progress: a batch's
            # commit can come a report before its progress does.
            events.append(AssetMaterialization(
                AssetKey(name),
                description=f"{description}; {rows:,} rows committed to {name}",
                metadata=meta))
        elif name == main_table:
            events.append(AssetObservation(AssetKey(name), description=description,
                                           metadata=meta))
    return events


def _read_text(totals: BatchTotals) -> str:
    """What the report's batches read, in words that say what each figure counts."""
    if not totals.batches:
        return "no batch completed"
    if totals.first_batch_id is None:
        span = f"{totals.batches} batch(es)"
    elif totals.first_batch_id == totals.last_batch_id:
        span = f"batch {totals.first_batch_id}"
    else:
        span = f"batches {totals.first_batch_id}-{totals.last_batch_id}"
    text = f"{span} read {totals.input_rows:,} rows"
    if totals.rows_dropped_by_watermark:
        text += (f", {totals.rows_dropped_by_watermark:,} of them dropped as late (behind the "
                 "watermark)")
    return text


def expectation_outcomes(expectations: Sequence[DataExpectation], totals: BatchTotals
                         ) -> list[quality.Outcome]:
    """Each expectation's verdict over the batches since the previous report ([] if none ran:
    nothing to judge)."""
    if not expectations or not totals.batches:
        return []
    return quality.outcomes(quality.observed_counts(totals.reports, expectations), expectations)


def failing_text(outcomes: Sequence[quality.Outcome]) -> str | None:
    """What a report says of the expectations: the failing ones, "" if all held, None if
    nothing was judged."""
    if not outcomes:
        return None
    return "; ".join(
        f"{o.expectation.name}: {o.ratio:.1%} of {o.rows} rows violated "
        f"(allowed {o.expectation.max_violation_ratio:.2%})"
        for o in outcomes if not o.passed
    )


def expectation_evaluations(table: str, outcomes: Sequence[quality.Outcome]
                            ) -> list[AssetCheckEvaluation]:
    """The expectations' asset checks for the batches of one report, as the catch-up run's."""
    return [
        AssetCheckEvaluation(
            asset_key=AssetKey(table),
            check_name=o.expectation.name,
            passed=o.passed,
            severity=AssetCheckSeverity(o.severity),
            description=o.description,
            metadata={**o.metadata(), "mode": "continuous"},
        )
        for o in outcomes
    ]


# -- measurements (I/O): input waiting and the rows each Delta commit wrote -----------------

def _committed_source_offsets(checkpoint: str, files: LakeFiles) -> list[str] | None:
    """Each source's offset line after the checkpoint's last committed batch: [] when no
    batch was committed yet, None when that cannot be read."""
    batch = last_committed_batch(checkpoint, files)
    if isinstance(batch, CommittedBatch):
        return list(batch.source_lines)
    return [] if batch == NO_BATCH else None


def checkpoint_offsets(checkpoint: str, files: LakeFiles) -> Offsets:
    """Kafka offsets after the last committed batch of a checkpoint ({} if unknown).

    Until a restarted query completes a batch, this is where it stands.
    """
    return fold_offsets(_committed_source_offsets(checkpoint, files) or [])


def measure_backlog(
    spark, paths: Mapping[str, str], progress: Mapping[str, Any] | None, checkpoint: str,
    files: LakeFiles,
) -> dict[str, int]:
    """Versions of each upstream Delta table ({table: path}) the query has not processed.

    The query's position comes from its latest progress report, else (a restarted query
    before its first batch) from its checkpoint's last committed batch; a table whose
    position or latest version cannot be told is left out. Latest versions come from the
    lake's log listing without Spark, or from DESCRIBE HISTORY for stores only Spark reads.
    """
    positions: dict[str, DeltaPosition | None] = dict(delta_positions(progress, paths))
    if len(positions) < len(paths):
        lines = _committed_source_offsets(checkpoint, files)
        committed = [p for p in map(parse_delta_offset, lines or []) if p is not None]
        if lines == []:  # nothing processed yet: everything the tables hold waits
            positions = {table: positions.get(table) for table in paths}
        elif len(committed) == 1 and len(paths) == 1:
            # Offset lines name no table; with one Delta source there is no doubt.
            positions = {next(iter(paths)): committed[0]}
    backlog: dict[str, int] = {}
    for table, position in positions.items():
        path = paths[table]
        latest = delta_version(spark, path, files)
        waiting = versions_waiting(position, latest)
        if waiting is not None:
            backlog[table] = waiting
    return backlog


def measure_lag(source, topics: Iterable[str], processed: Offsets) -> list[TopicLag]:
    """Broker offsets now, against the query's processed offsets (broker-side topic names)."""
    broker = {source.topic_name(t): source.offsets(t) for t in topics}
    return query_lag(broker, processed)


class DeltaWrites:
    """What the new commits of each table did since the previous call: the rows they wrote,
    and the table's version, row count and commit time after them (the standard metadata of
    a materialization, as a catch-up run reports it: monitoring/metadata.py `table_state`).

    The row count is taken once, when a table is first seen, and then carried forward from
    each commit's metrics (`row_count_after`); a commit whose metrics cannot say how the count
    changed (an OPTIMIZE, a manual DELETE) makes it count the table again.
    """

    def __init__(self, spark, paths: Mapping[str, str], history_limit: int = 100) -> None:
        self.spark = spark
        self.paths = dict(paths)
        self.history_limit = history_limit
        self.versions: dict[str, int] = {}
        self.counts: dict[str, int | None] = {}
        self.commit_times: dict[str, float] = {}
        self.schemas: dict[str, Any] = {}
        for name in self.paths:
            if self._exists(name):
                latest, commits = self._history(name, 1)
                self.versions[name] = latest
                self.commit_times[name] = _commit_time(commits[0])
                self.counts[name] = self._count(name)
            else:
                self.versions[name] = -1
                self.counts[name] = 0

    def _exists(self, name: str) -> bool:
        return is_delta_table(self.spark, self.paths[name])

    def _history(self, name: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
        rows = (
            history_frame(self.spark, self.paths[name], limit)
            .select("version", "timestamp", "operation", "operationParameters",
                    "operationMetrics").collect()
        )
        commits = [r.asDict(recursive=True) for r in rows]
        return max((c["version"] for c in commits), default=-1), commits

    def _count(self, name: str) -> int:
        # Delta answers a bare count from the log's file statistics, without a scan.
        return self.spark.read.format("delta").load(self.paths[name]).count()

    def take(self) -> dict[str, int]:
        written: dict[str, int] = {}
        for name in self.paths:
            if not self._exists(name):
                written[name] = 0
                continue
            latest, commits = self._history(name, self.history_limit)
            seen = self.versions.get(name, -1)
            new = [c for c in commits if c["version"] > seen]
            written[name] = rows_written(new)
            if latest > seen:
                known = self.counts.get(name)
                count = row_count_after(new, None if seen < 0 else seen, latest,
                                        None if known is None else (seen, known))
                self.counts[name] = self._count(name) if count is None else count
                self.commit_times[name] = _commit_time(commits[0])
                self.versions[name] = latest
        return written

    def state(self, name: str, descriptions: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
        """The table's standard metadata after the commits seen so far ({} before its first)."""
        version = self.versions.get(name, -1)
        count = self.counts.get(name)
        if version < 0 or count is None:
            return {}
        meta = table_state(self.paths[name], version, count, self.commit_times[name])
        if name not in self.schemas:
            # Read once per run: a streaming write keeps the schema the query started with.
            self.schemas[name] = self.spark.read.format("delta").load(self.paths[name]).schema
        meta["dagster/column_schema"] = table_schema(self.schemas[name], descriptions)
        return meta


def _commit_time(commit: Mapping[str, Any]) -> float:
    return commit["timestamp"].timestamp()


def lag_total(lags: list[TopicLag] | None) -> int | None:
    return None if lags is None else total_lag(lags)
