"""What a report measures (I/O): the input waiting (Kafka lag, upstream Delta versions) and
the rows each Delta commit wrote."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stream_assets.checkpoint_log import NO_BATCH, CommittedBatch, last_committed_batch
from stream_assets.lake_files import LakeFiles
from stream_assets.monitoring.lag import (
    DeltaPosition,
    Offsets,
    TopicLag,
    delta_positions,
    fold_offsets,
    parse_delta_offset,
    query_lag,
    versions_waiting,
)
from stream_assets.monitoring.metadata import (
    row_count_after,
    rows_written,
    table_schema,
    table_state,
)
from stream_assets.sinks import delta_version, history_frame, is_delta_table


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
