"""A continuous report as Dagster events: a materialization on each table that got rows, else
an observation, all carrying numeric metadata the UI can plot and the health sensor reads
back (stream_report.StreamReport), and the expectations' verdicts. Pure; the events themselves are
built as a catch-up run's are (asset_events.AssetEvents)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from dagster import AssetObservation, MetadataValue

from stream_assets.monitoring.asset_events import AssetEvents, Materialization
from stream_assets.monitoring.lag import (
    TopicLag,
    lag_by_partition,
    total_lag,
)
from stream_assets.monitoring.stream_report import StreamReport
from stream_assets.monitoring.tracker import BatchTotals
from stream_assets.tables import expectations as quality
from stream_assets.tables.expectations import DataExpectation

CONTINUOUS = AssetEvents(continuous=True)


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        value = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return value if value > 0 else None  # Spark's "no watermark yet" is the epoch


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
) -> list[Materialization | AssetObservation]:
    """Dagster events for one report: a materialization per table that changed, else an
    observation of the main table (a heartbeat, a failure, a stop). `states` holds each
    table's standard metadata after the report's commits (DeltaWrites.state)."""
    states = states or {}
    shared = {**report.to_metadata(), **batch_metadata(totals, lags, backlog)}
    if report.dead_letter_rows is not None and report.input_rows:
        shared["dead_letter_ratio"] = round(report.dead_letter_rows / report.input_rows, 6)
    description = f"{report.query} {report.status}, since the last report: {_read_text(totals)}"
    events: list[Materialization | AssetObservation] = []
    for name in tables:
        rows = written.get(name, 0)
        changed = rows > 0 or (name == main_table and report.input_rows > 0)
        meta = {**shared, "rows_written": rows}
        if changed:
            meta.update(states.get(name, {}))
            # Rows count the table's Delta commits, batches the query's progress: a batch's
            # commit can come a report before its progress does.
            events.append(CONTINUOUS.materialization(
                name, meta, f"{description}; {rows:,} rows committed to {name}"))
        elif name == main_table:
            events.append(CONTINUOUS.observation(name, meta, description))
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
    return quality.judge(totals.reports, expectations)


def failing_text(outcomes: Sequence[quality.Outcome]) -> str | None:
    """What a report says of the expectations: the failing ones, "" if all held, None if
    nothing was judged."""
    if not outcomes:
        return None
    return "; ".join(o.summary for o in outcomes if not o.passed)


def lag_total(lags: list[TopicLag] | None) -> int | None:
    return None if lags is None else total_lag(lags)
