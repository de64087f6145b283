"""What a streaming table reads: Kafka topics, other tables as Delta streams, static tables.

Each kind of source carries its own behaviour (its asset key, how to read it, what its
checkpoint offsets mean, which resource it reads through), so a new kind of source is one class
here and nothing else in the package tests for kinds. docs/architecture.md shows where each is
used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dagster import AssetKey, AssetSpec
from pyspark.sql import DataFrame
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

from stream_assets.errors import DeclarationError, StreamFailed
from stream_assets.monitoring.asset_events import asset_key
from stream_assets.records.checks import TextCheck, YearRange
from stream_assets.records.ddl import parse_schema
from stream_assets.records.json_records import (
    RESCUED,
    JsonRecords,
    WrongTypes,
    with_required,
)
from stream_assets.sinks import is_delta_table
from stream_assets.tables import expectation_sql
from stream_assets.tables.expectations import DataExpectation, RescuedFields

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from stream_assets.resources.kafka import KafkaCompatibleSource
    from stream_assets.resources.lake import DeltaLake

Parser = Callable[[DataFrame], DataFrame]
"""A function that turns a topic's Kafka rows into the table's rows: `kafka_topic(parser=...)`.

It keeps Kafka's `key`, `value`, `topic`, `partition` and `offset` columns and adds `error`:
null for a usable record, else the reason it is not one (the record then lands in the table's
dead letters, exactly once). A pure DataFrame function, tested like a transform;
`kafka_topic(schema=...)` builds one for JSON records.
"""

DEFAULT_KAFKA_RESOURCE = "stream_source"
# Where a record was in Kafka: what every parser keeps for the table's rows.
KAFKA_POSITION = StructType([
    StructField("topic", StringType(), False),
    StructField("partition", IntegerType(), False),
    StructField("offset", LongType(), False),
])


@dataclass(frozen=True)
class ReadContext:
    """What a source needs to read: the session, the lake and the run's resources by key."""

    spark: SparkSession
    lake: DeltaLake
    resources: Mapping[str, Any]
    # Which table is reading, for error messages.
    reader: str
    # The most Kafka records a micro-batch reads when the source resource sets no cap (the
    # continuous job bounds its batches so a backlog does not hold back its first report).
    kafka_batch_limit: int | None = None

    def kafka(self, key: str) -> KafkaCompatibleSource:
        try:
            return self.resources[key]
        except KeyError:
            raise StreamFailed(
                f"{self.reader} reads Kafka through the resource {key!r}, which the Definitions "
                f"do not bind; add it to the resources passed to build_definitions"
            ) from None


class Source:
    """Base of the kinds of source: `KafkaTopic`, `DeltaStream`, `StaticTable`, made by
    `kafka_topic`, `upstream` and `static`. Streaming sources feed the query; static ones are
    read once per micro-batch (a stream-static join). A new kind of source is a subclass
    (docs/architecture.md, "Add a kind of source")."""

    streaming: bool = True
    # Kafka topics (logical names) and upstream tables this source reads, for lag, lineage and
    # the catch-up sensor: a source that reads neither leaves them empty.
    kafka_topics: tuple[str, ...] = ()
    upstream_tables: tuple[str, ...] = ()
    static_tables: tuple[str, ...] = ()
    parser: Parser | None = None
    resource: str | None = None

    @property
    def asset_key(self) -> AssetKey:
        raise NotImplementedError

    def external_spec(self) -> AssetSpec | None:
        """The asset of what this source reads when it lives outside the project (a topic),
        None when it is one of the project's own tables."""
        return None

    def read(self, ctx: ReadContext) -> DataFrame:
        raise NotImplementedError

    def fingerprint(self, ctx: ReadContext) -> str | None:
        """What this source's checkpoint offsets mean (a new value makes old offsets foreign);
        None for a source that has no offsets."""
        raise NotImplementedError

    @property
    def columns(self) -> StructType | None:
        """The rows a table that only reads this source gets, when the declaration says."""
        return None

    @property
    def rules(self) -> tuple[DataExpectation, ...]:
        """Expectations every table that only reads this source gets."""
        return ()


@dataclass(frozen=True)
class KafkaTopic(Source):
    """A Kafka topic (or the Event Hub its resource maps it to).

    `topic` is the logical name: the resource's `topic_names` can map it to a broker-side topic.
    `parser` makes dead letters possible: without one, the table receives Kafka's rows as they
    are. `resource` names the Dagster resource (a KafkaSource or EventHubsSource) it reads
    through, so one project can read several clusters.
    """

    topic: str
    parser: Parser | None = None
    resource: str = DEFAULT_KAFKA_RESOURCE

    @property
    def kafka_topics(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.topic,)

    @property
    def asset_key(self) -> AssetKey:
        return AssetKey(["kafka", self.topic])

    def external_spec(self) -> AssetSpec | None:
        return AssetSpec(
            key=self.asset_key,
            description=f"Kafka topic `{self.topic}` (or the Event Hub that the "
            f"`{self.resource}` resource maps it to).",
            group_name="sources",
            kinds={"kafka"},
        )

    def read(self, ctx: ReadContext) -> DataFrame:
        return ctx.kafka(self.resource).read_stream(ctx.spark, self.topic,
                                                    ctx.kafka_batch_limit)

    def fingerprint(self, ctx: ReadContext) -> str:
        return f"kafka:{self.topic}"

    @property
    def columns(self) -> StructType | None:
        """With a declared record schema: the typed fields, `_rescued_data` and the record's
        position."""
        if not isinstance(self.parser, JsonRecords):
            return None
        return StructType([*self.parser.columns.fields, *KAFKA_POSITION.fields])

    @property
    def rules(self) -> tuple[DataExpectation, ...]:
        """With a declared record schema: the `rescued_data` check (schema drift)."""
        if not isinstance(self.parser, JsonRecords):
            return ()
        return (RescuedFields.of(RESCUED),)


@dataclass(frozen=True)
class _ProjectTable(Source):
    """A Delta table of the project: its asset is the table's, its path the lake's."""

    table: str

    @property
    def asset_key(self) -> AssetKey:
        return asset_key(self.table)

    def _path(self, ctx: ReadContext, reading: str, advice: str) -> str:
        path = ctx.lake.table_path(self.table)
        if not is_delta_table(ctx.spark, path):
            raise StreamFailed(f"{ctx.reader} {reading} {self.table}, which has no Delta table "
                               f"at {path} yet; materialize {self.table} first{advice}")
        return path


@dataclass(frozen=True)
class DeltaStream(_ProjectTable):
    """Another table of the project, read as a Delta streaming source: `upstream(table)`.

    Each micro-batch reads the table's new commits once (Delta's streaming source keeps its
    place in the reading table's checkpoint). The table must be materialized first.
    """

    @property
    def upstream_tables(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.table,)

    def read(self, ctx: ReadContext) -> DataFrame:
        path = self._path(ctx, "reads", " (the UI's 'Materialize all' runs them in order)")
        return ctx.spark.readStream.format("delta").load(path)

    def fingerprint(self, ctx: ReadContext) -> str:
        return f"delta:{self.table}"


@dataclass(frozen=True)
class StaticTable(_ProjectTable):
    """A Delta table joined to the stream at its latest version in each micro-batch:
    `static(table)`.

    It has no offsets: a new version of it is read by the next batch, and does not start one.
    docs/dimensions.md shows how such a table is written and joined.
    """

    streaming: ClassVar[bool] = False

    @property
    def static_tables(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.table,)

    def read(self, ctx: ReadContext) -> DataFrame:
        return ctx.spark.read.format("delta").load(self._path(ctx, "joins", ""))

    def fingerprint(self, ctx: ReadContext) -> str | None:
        return None


def kafka_topic(topic: str, parser: Parser | None = None,
                resource: str = DEFAULT_KAFKA_RESOURCE, *,
                schema: StructType | str | None = None, required: Sequence[str] = (),
                wrong_types: WrongTypes = "dead_letter",
                format: Literal["json"] = "json",
                rules: Mapping[str, str | TextCheck | YearRange] | None = None) -> KafkaTopic:
    """A Kafka topic a table reads, through the resource named `resource`.

    Declare what its records hold with `schema` (a StructType, or a DDL string such as
    "payment_id STRING, amount DECIMAL(12,2), items ARRAY<STRUCT<sku: STRING, qty: INT>>"):
    each record is read into those typed columns plus `_rescued_data` (whatever did not fit),
    or refused into the table's dead letters with a reason that names the field
    (stream_assets/records/json_records.py). `required` names fields ("customer.id") that
    must be present; `wrong_types="rescue"` keeps a record whose optional field has the wrong
    type, that field null and its value rescued. `rules` maps a reason to a Spark SQL condition
    about the record's fields ({"missing order_id": "order_id <> ''"}): a record the schema
    accepts but whose condition is not true is refused with the first such reason, before any
    table sees it. A condition may be a field check the parser judges while it reads the
    record, at no cost of its own ({"unusable name": TextCheck("name", max_bytes=80)};
    stream_assets.records.checks). A `parser` of your own reads a format the project does not
    know; without either, the table receives Kafka's rows as they are.
    """
    if schema is not None:
        if parser is not None:
            raise DeclarationError(f"kafka_topic({topic!r}): give a schema or a parser, not both")
        if format != "json":
            raise DeclarationError(f"kafka_topic({topic!r}): record format {format!r} is not "
                                   "supported; 'json' is (a parser of your own reads others)")
        if rules is not None and not isinstance(rules, Mapping):
            raise DeclarationError(f"kafka_topic({topic!r}): rules map a reason to a Spark SQL "
                                   "condition, e.g. {\"missing order_id\": \"order_id <> ''\"}")
        declared = parse_schema(schema) if isinstance(schema, str) else schema
        parser = JsonRecords(with_required(declared, required), wrong_types,
                             tuple((rules or {}).items()))
        for reason, condition in parser.rules:
            if not isinstance(condition, str):
                continue  # a field check: JsonRecords checked its field and type
            problem = expectation_sql.problem(condition, parser.columns)
            if problem:
                raise DeclarationError(f"kafka_topic({topic!r}), rule {reason!r}: "
                                       f"{condition!r} {problem}")
    elif required or rules:
        raise DeclarationError(f"kafka_topic({topic!r}): `required` and `rules` are about the "
                               "fields of a schema; declare the schema too")
    return KafkaTopic(topic, parser, resource)


def upstream(table: str) -> DeltaStream:
    """Another table of the project, read as a stream: each micro-batch gets its new rows.

    `table` is a table declared in the same `build_definitions` (a dead-letter table too); it
    becomes this table's upstream asset, and a full refresh of it resets this table as well.
    """
    return DeltaStream(table)


def static(table: str) -> StaticTable:
    """A batch Delta table joined to the stream, read at its latest version in each
    micro-batch (a stream-static join); a new version shows from the next batch on, and rows
    already written keep what they were joined with.

    `table` is the name of an asset passed to `build_definitions(assets=...)` (or a declared
    table), stored at the lake's `table_path(table)`. docs/dimensions.md shows one.
    """
    return StaticTable(table)
