"""What a report measures (I/O): the input waiting (Kafka lag, upstream Delta versions). What
the commits wrote is delta_writes.py's."""

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
from stream_assets.sinks import delta_version


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
