"""One query's state between two reports: a pure accumulator (fed with times and progress
dicts) that decides when a report is due (at most one per `interval_s`, a heartbeat every
`heartbeat_s`, failures and source outages at once) and sums what happened in between."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream_assets.monitoring.stream_report import Status, StreamReport


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
        self.urgent = True  # the asset shows its query started (and its backlog) at once
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
            late_rows=totals.rows_dropped_by_watermark,
        )
        return report, totals
