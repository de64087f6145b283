"""What the continuous job reports on each query every few seconds: a `StreamReport`, carried
as the metadata of an asset event, which the health sensor reads back (monitoring/health.py).
Pure: no Dagster instance, Spark or network."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from dagster import MetadataValue

REPORT_MARKER = "stream_status"


class Status(StrEnum):
    """What a query is doing, as the continuous job reports it."""

    STARTING = "starting"
    RUNNING = "running"
    IDLE = "idle"
    WAITING = "waiting"  # for an upstream table to exist
    FAILED = "failed"  # failed, and not yet recovered (restarts included)
    STOPPED = "stopped"


def _value(raw: Any) -> Any:
    return getattr(raw, "value", raw)


@dataclass(frozen=True)
class StreamReport:
    """One query's state at one moment, and what it did since the previous report."""

    query: str
    status: str
    reported_at: float
    batches: int = 0
    input_rows: int = 0
    input_rows_per_second: float = 0.0
    processed_rows_per_second: float = 0.0
    behind_batches: int = 0
    last_batch_id: int | None = None
    last_batch_at: float | None = None
    started_at: float | None = None
    # The last moment nothing was waiting (an idle trigger, or a report that measured no
    # lag): a stall is counted from there, not from a batch long before the input arrived.
    caught_up_at: float | None = None
    kafka_lag: int | None = None
    # Versions of the upstream Delta table(s) committed but not yet processed (Delta sources).
    upstream_versions_waiting: int | None = None
    dead_letter_rows: int | None = None
    # Expectations whose share of violating rows passed their threshold in the batches since
    # the previous report ("" when every one held, None when the table declares none).
    failing_expectations: str | None = None
    consecutive_failures: int = 0
    error: str | None = None
    # What the continuous job's own probe of the query's Kafka sources found: a broker that does
    # not answer (or lacks a topic), and since when. Spark itself waits minutes before it fails
    # a query whose broker is away; the probe says so within seconds.
    source_unreachable: str | None = None
    source_unreachable_since: float | None = None
    # Rows the query's watermarks dropped as late in the report's batches (Spark's
    # numRowsDroppedByWatermark: for an aggregation, rows already pre-aggregated per group).
    late_rows: int = 0

    _TIMES = ("last_batch_at", "started_at", "caught_up_at", "source_unreachable_since")

    def to_metadata(self) -> dict[str, Any]:
        """Dagster metadata: numbers stay numbers (plottable), times are timestamps."""
        meta: dict[str, Any] = {REPORT_MARKER: str(self.status)}
        for name, value in asdict(self).items():
            if name in ("status", "reported_at") or value is None:
                continue
            meta[name] = MetadataValue.timestamp(float(value)) if name in self._TIMES else value
        return meta

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, Any], reported_at: float
    ) -> StreamReport | None:
        """The report in an event's metadata, None if the event carries none."""
        if REPORT_MARKER not in metadata:
            return None
        values = {k: _value(v) for k, v in metadata.items()}
        known = {f for f in cls.__dataclass_fields__ if f not in ("status", "reported_at")}
        kwargs = {k: v for k, v in values.items() if k in known}
        try:
            return cls(status=str(values[REPORT_MARKER]), reported_at=reported_at, **kwargs)
        except TypeError:
            return None
