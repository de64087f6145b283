"""Input waiting for a streaming query, measured rather than guessed.

Kafka: lag per topic-partition is the broker's latest offset minus the offset the query will
read next, i.e. the `endOffset` Spark reports for the query's last completed batch. Both sides
are measured: the broker's offsets by a client call (`KafkaCompatibleSource.offsets`), the
query's from its progress report.

Delta: an upstream table's backlog is the number of its committed versions the query has not
fully processed: the table's latest version against the Delta source's `endOffset`
(`DeltaSourceOffset`: `reservoirVersion`, `index`, `isStartingVersion`).

Pure functions over plain dicts, testable without Kafka, Delta or Spark.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# {topic: {partition: offset}}, partitions as strings like Spark's JSON.
Offsets = dict[str, dict[str, int]]


def parse_offsets(raw: Any) -> Offsets:
    """A Kafka source's offsets as Spark reports them (JSON text or dict) -> {topic: {p: o}}."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    if not isinstance(raw, Mapping):
        return {}
    parsed: Offsets = {}
    for topic, parts in raw.items():
        if isinstance(parts, Mapping):
            parsed[str(topic)] = {str(p): int(o) for p, o in parts.items()}
    return parsed


def fold_offsets(lines: Iterable[str]) -> Offsets:
    """The Kafka offsets of several source lines of a checkpoint, merged by topic."""
    offsets: Offsets = {}
    for line in lines:
        for topic, parts in parse_offsets(line).items():
            offsets.setdefault(topic, {}).update(parts)
    return offsets


def processed_offsets(progress: Mapping[str, Any] | None) -> Offsets:
    """Where the query resumes reading: its Kafka sources' end offsets in one progress report."""
    offsets: Offsets = {}
    for source in (progress or {}).get("sources", []) or []:
        if not str(source.get("description", "")).startswith("KafkaV2"):
            continue
        for topic, parts in parse_offsets(source.get("endOffset")).items():
            offsets.setdefault(topic, {}).update(parts)
    return offsets


@dataclass(frozen=True)
class TopicLag:
    """Records the broker holds that the query has not processed yet, per partition."""

    topic: str
    partitions: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.partitions.values())


def topic_lag(
    topic: str,
    broker: Mapping[str, tuple[int, int]],
    processed: Mapping[str, int] | None,
) -> TopicLag:
    """Lag of one topic from the broker's (earliest, latest) per partition and the query's
    next offsets.

    A partition the query has not read yet (a new checkpoint, or a partition added since)
    lags by everything the broker still holds in it, i.e. as if it starts at the earliest
    offset. Retention can make the query's offset older than the earliest one; the records
    it can still read are counted, never a negative number.
    """
    processed = processed or {}
    lags: dict[str, int] = {}
    for partition, (earliest, latest) in broker.items():
        position = processed.get(str(partition))
        start = earliest if position is None else max(position, earliest)
        lags[str(partition)] = max(0, int(latest) - int(start))
    return TopicLag(topic, dict(sorted(lags.items(), key=lambda item: int(item[0]))))


def query_lag(
    broker: Mapping[str, Mapping[str, tuple[int, int]]], processed: Offsets
) -> list[TopicLag]:
    """Lag of every topic a query reads: `broker` is {topic: {partition: (earliest, latest)}}."""
    return [topic_lag(topic, parts, processed.get(topic)) for topic, parts in broker.items()]


def total_lag(lags: Iterable[TopicLag]) -> int:
    return sum(lag.total for lag in lags)


def lag_by_partition(lags: Iterable[TopicLag]) -> dict[str, dict[str, int]]:
    """For metadata: {topic: {partition: lag}}."""
    return {lag.topic: dict(lag.partitions) for lag in lags}


# -- Delta sources ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DeltaPosition:
    """Where a Delta streaming source stands: Delta's `DeltaSourceOffset`.

    `index` -1 means "before the first file of `version`": every older version is done and
    nothing of `version` has been read (Delta moves an offset to (v + 1, -1) once it has read
    the last file of v). An index of 0 or more points into `version`, which is then only
    partly read: a rate limit (maxFilesPerTrigger, maxBytesPerTrigger) split it. With
    `initial_snapshot` the query is still reading the table as of `version` (its first start)
    rather than that version's changes.
    """

    version: int
    index: int = -1
    initial_snapshot: bool = False


def parse_delta_offset(raw: Any) -> DeltaPosition | None:
    """A Delta source's offset as Spark reports it (JSON text or dict); None if it is not one."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, Mapping) or "reservoirVersion" not in raw:
        return None
    try:
        return DeltaPosition(
            version=int(raw["reservoirVersion"]),
            index=int(raw.get("index", -1)),
            initial_snapshot=bool(raw.get("isStartingVersion", False)),
        )
    except (TypeError, ValueError):
        return None


def _plain_path(path: str) -> str:
    for prefix in ("file://", "file:"):
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    return path.rstrip("/")


def delta_positions(
    progress: Mapping[str, Any] | None, paths: Mapping[str, str]
) -> dict[str, DeltaPosition]:
    """Where the query stands in each upstream table ({table: path}), from one progress report.

    Spark describes a Delta source as `DeltaSource[<path>]`; a source whose path matches no
    table is attributed to the only table when there is just one (a path Spark spelled
    differently, e.g. through a symlink).
    """
    found: list[tuple[str, DeltaPosition]] = []
    for source in (progress or {}).get("sources", []) or []:
        position = parse_delta_offset(source.get("endOffset"))
        if position is None:
            continue
        description = str(source.get("description", ""))
        inner = description[description.find("[") + 1:description.rfind("]")]
        found.append((_plain_path(inner), position))
    by_path = {_plain_path(path): table for table, path in paths.items()}
    positions: dict[str, DeltaPosition] = {}
    for path, position in found:
        table = by_path.get(path)
        if table is None and len(found) == 1 and len(paths) == 1:
            table = next(iter(paths))
        if table is not None:
            positions[table] = position
    return positions


def versions_waiting(position: DeltaPosition | None, latest: int | None) -> int | None:
    """Upstream versions committed but not (fully) processed by the query; None if unknown.

    From (v, -1) versions v..latest wait; from (v, i >= 0) version v is partly read, so it
    still waits with the ones after it, and the same holds for a partly read initial
    snapshot of v. A query with no position yet (a new checkpoint) has everything ahead:
    versions 0..latest. A table that does not exist (latest None) is not judged.
    """
    if latest is None:
        return None
    if position is None:
        return latest + 1
    return max(0, latest - position.version + 1)
