"""Kafka consumer lag of a streaming query, measured rather than guessed.

Lag per topic-partition is the broker's latest offset minus the offset the query will read
next, i.e. the `endOffset` Spark reports for the query's last completed batch. Both sides are
measured: the broker's offsets by a client call (`KafkaCompatibleSource.offsets`), the query's
from its progress report. Pure functions over plain dicts, testable without Kafka or Spark.
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
