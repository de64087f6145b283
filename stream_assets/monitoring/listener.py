"""Spark's streaming query events, queued as plain data for the continuous job.

`QueryEventListener` is the StreamingQueryListener: Spark calls it on its listener thread
(started, progress, idle, terminated) and it only queues plain dicts, so it never blocks a
query. The continuous job drains the queue into one `StreamTracker` per query (tracker.py),
turns each report into Dagster events (report_events.py) with what measures.py measured.
"""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass
from typing import Any

from pyspark.sql.streaming.listener import StreamingQueryListener

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
