"""A streaming table, declared once: what it reads, how it transforms, where it writes.

Everything repetitive is derived from the declaration: checkpoint and table paths, the
writeStream call, the Dagster asset, its metadata and its checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dagster import AssetKey
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter

from stream_assets import sinks


@dataclass(frozen=True)
class KafkaTopic:
    """A topic of the configured stream source (Kafka or Event Hubs)."""

    topic: str

    @property
    def asset_key(self) -> AssetKey:
        return AssetKey(["kafka", self.topic])


@dataclass(frozen=True)
class Upstream:
    """Another table of this project, read as a Delta streaming source."""

    table: str

    @property
    def asset_key(self) -> AssetKey:
        return AssetKey(self.table)


Source = KafkaTopic | Upstream


def kafka_topic(topic: str) -> KafkaTopic:
    return KafkaTopic(topic)


def upstream(table: str) -> Upstream:
    return Upstream(table)


@dataclass(frozen=True)
class SinkTarget:
    """What a sink needs to know at start: the query's name and where each table lives."""

    query: str
    paths: dict[str, str]


class Sink:
    """Base of the ways a query writes Delta. `extra_tables` are written besides the main one."""

    output_mode: str = "append"
    extra_tables: tuple[str, ...] = ()

    def attach(self, stream: DataFrame, table: str, target: SinkTarget) -> DataStreamWriter:
        raise NotImplementedError


@dataclass(frozen=True)
class DeltaAppend(Sink):
    """Delta's own streaming sink: exactly-once through the checkpoint and Delta's log."""

    partition_by: tuple[str, ...] = ()
    output_mode: str = "append"

    def attach(self, stream: DataFrame, table: str, target: SinkTarget) -> DataStreamWriter:
        writer = stream.writeStream.format("delta").outputMode(self.output_mode)
        if self.partition_by:
            writer = writer.partitionBy(*self.partition_by)
        return writer.option("path", target.paths[table])


@dataclass(frozen=True)
class DeltaMerge(Sink):
    """Upsert each micro-batch on `keys` (idempotent per batch), stamping `updated_at`."""

    keys: tuple[str, ...]
    output_mode: str = "update"
    stamp_column: str | None = "updated_at"

    def attach(self, stream: DataFrame, table: str, target: SinkTarget) -> DataStreamWriter:
        path, keys, stamp, query = target.paths[table], self.keys, self.stamp_column, target.query

        def write(batch: DataFrame, batch_id: int) -> None:
            if stamp:
                batch = batch.withColumn(stamp, F.lit(datetime.now(UTC)))
            sinks.merge_once(batch, path, query, table, batch_id, keys)

        return stream.writeStream.outputMode(self.output_mode).foreachBatch(write)


@dataclass(frozen=True)
class WithDeadLetters(Sink):
    """Rows with an `error` go to the dead-letter table, the rest to the main table."""

    dead_letter_table: str
    partition_by: tuple[str, ...] = ()

    @property
    def extra_tables(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.dead_letter_table,)

    def attach(self, stream: DataFrame, table: str, target: SinkTarget) -> DataStreamWriter:
        write = sinks.split_events_writer(
            target.query,
            target.paths[table],
            target.paths[self.dead_letter_table],
            table,
            self.dead_letter_table,
            self.partition_by,
        )
        return stream.writeStream.outputMode("append").foreachBatch(write)


@dataclass(frozen=True)
class StreamingTable:
    """One streaming Delta table (and the tables its sink also writes).

    `transform` gets one streaming DataFrame per source, then one batch DataFrame per
    `static` table, in order, and returns the rows to write.
    """

    name: str
    sources: tuple[Source, ...]
    transform: Callable[..., DataFrame]
    sink: Sink
    description: str
    static: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    trigger_interval: str = "5 seconds"
    group: str = "streaming"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.name, *self.sink.extra_tables)

    @property
    def kafka_topics(self) -> tuple[str, ...]:
        return tuple(s.topic for s in self.sources if isinstance(s, KafkaTopic))

    @property
    def upstream_tables(self) -> tuple[str, ...]:
        return tuple(s.table for s in self.sources if isinstance(s, Upstream))

    @property
    def dependencies(self) -> tuple[AssetKey, ...]:
        return (*(s.asset_key for s in self.sources), *(AssetKey(t) for t in self.static))
