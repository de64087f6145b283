"""Whether a table's query has anything to read, told without starting it (issue 15).

A catch-up run with nothing new used to pay a SparkSession, a query start and a Delta history
read to find that out. The answer is in three places that need no Spark: the checkpoint's last
committed batch (the source offsets it ends at), the broker's latest offsets, and each
upstream Delta table's latest version in its `_delta_log`. Only a sure "nothing new" skips the
query: anything that cannot be told (a store read only through Spark, a batch planned but not
committed, a table missing under its checkpoint, two Delta sources whose offset lines cannot
be told apart) starts it, and the query, its checkpoint guard and Spark decide as before.

Commits that change no data (a compaction's, a VACUUM's: `delta_log.changes_data`) are no input:
Delta's streaming source skips them, so a query behind only by those has nothing to read.

Skipping is exact for stateful tables too: with no new input Spark would run no batch either
(an `availableNow` run ends after the no-data batch that follows a watermark move, and a
restarted query runs none before new data arrives), so no window closes and no state expires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_assets.checkpoint_log import last_committed_batch
from stream_assets.delta_log import delta_log_version, quiet_versions
from stream_assets.lake_files import LakeFiles
from stream_assets.monitoring.lag import (
    Offsets,
    fold_offsets,
    parse_delta_offset,
    query_lag,
    total_lag,
    versions_waiting,
)
from stream_assets.resources.kafka import BrokerLook


@dataclass(frozen=True)
class InputCheck:
    """The verdict and what it compared, for the materialization's metadata."""

    new: bool
    reason: str
    positions: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {"query_started": self.new, "query_started_because" if self.new
                else "query_skipped_because": self.reason}


def outside_broker_range(broker: Mapping[str, Mapping[str, tuple[int, int]]],
                         processed: Offsets) -> str | None:
    """The first topic-partition whose committed offset the broker no longer spans."""
    for topic, parts in broker.items():
        for partition, (earliest, latest) in parts.items():
            position = processed.get(topic, {}).get(str(partition))
            if position is not None and not earliest <= position <= latest:
                return f"{topic}/{partition}"
    return None


def pending_input(
    checkpoint: str,
    table_paths: Mapping[str, str],
    kafka: Sequence[tuple[BrokerLook, tuple[str, ...]]],
    upstream_paths: Mapping[str, str],
    files: LakeFiles,
) -> InputCheck:
    """Whether the query at `checkpoint` would read anything now.

    `table_paths` are the tables the query writes, `kafka` its topics grouped by the resource
    they are read through (the run's look at each broker: the same positions for every table
    of the run), `upstream_paths` the Delta tables it reads as streams.
    """
    batch = last_committed_batch(checkpoint, files)
    if isinstance(batch, str):
        return InputCheck(True, batch)
    if batch.newest_planned > batch.batch_id:
        return InputCheck(True, f"batch {batch.newest_planned} was planned and not committed: "
                          "the query finishes it")
    missing = [name for name, path in table_paths.items()
               if delta_log_version(path, files) is None]
    if missing:
        return InputCheck(True, f"{', '.join(missing)} has no Delta log to compare with")
    positions: dict[str, Any] = {"checkpoint_batch": batch.batch_id}
    waiting: list[str] = []

    processed = fold_offsets(batch.source_lines)
    for source, topics in kafka:
        broker = {source.topic_name(t): source.offsets(t) for t in topics}
        moved = outside_broker_range(broker, processed)
        if moved:
            # Expired records or a recreated topic: Spark's data-loss check decides, not us.
            return InputCheck(True, f"the checkpoint's offsets of {moved} are outside what the "
                              "broker holds")
        for lag in query_lag(broker, processed):
            positions.setdefault("kafka_lag", {})[lag.topic] = lag.total
            if total_lag([lag]):
                waiting.append(f"{lag.total} records wait in {lag.topic}")

    delta = [p for p in map(parse_delta_offset, batch.source_lines) if p is not None]
    if upstream_paths:
        if len(delta) != 1 or len(upstream_paths) != 1:
            # Offset lines do not name their table: with one Delta source there is no doubt.
            return InputCheck(True, "more than one Delta source: their positions cannot be "
                              "told apart in the checkpoint")
        [(name, path)] = upstream_paths.items()
        latest = delta_log_version(path, files)
        if latest is None:
            return InputCheck(True, f"{name} has no Delta log to compare with")
        behind = versions_waiting(delta[0], latest)
        positions["upstream_latest_version"] = {name: latest}
        position = delta[0]
        if behind and position.index < 0 and not position.initial_snapshot and quiet_versions(
                path, latest - behind + 1, latest, files):
            # Compactions and VACUUMs of the upstream table since: Delta's streaming source
            # skips commits that change no data, so the query would read nothing.
            positions["upstream_versions_without_data"] = {name: behind}
            behind = 0
        positions["upstream_versions_waiting"] = {name: behind}
        if behind:
            waiting.append(f"{behind} {name} version(s) wait")
    if waiting:
        return InputCheck(True, "; ".join(waiting), positions)
    return InputCheck(False, f"nothing new since batch {batch.batch_id}: every source is "
                      "at the position the checkpoint committed", positions)
