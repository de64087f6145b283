"""One query of a continuous run, as the Supervisor keeps it: its table, its report tracker,
its running query and what its restarts and reports remember between two loops."""

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql.streaming import StreamingQuery

from stream_assets.monitoring.delta_writes import DeltaWrites
from stream_assets.monitoring.tracker import StreamTracker
from stream_assets.tables.declaration import StreamingTable


@dataclass
class Stream:
    table: StreamingTable
    tracker: StreamTracker
    query: StreamingQuery | None = None
    run_id: str | None = None
    writes: DeltaWrites | None = None
    retry_at: float = 0.0
    backoff_s: float = 0.0
    ever_started: bool = False
    stopping: bool = False
    inactive_since: float | None = None
    unchecked: bool = False  # wrote since its derived checks last ran
    checked_at: float = float("-inf")
    extra: dict[str, Any] = field(default_factory=dict)
