"""A streaming table, declared once: every fact about it in one place.

Its Dagster asset, streaming query, checkpoint, dead letters, checks and metadata are all
derived from this declaration (docs/architecture.md). A declaration that cannot work (a
transform whose parameters do not match the sources, keys that are not columns, ...) is
refused when it is made, so a code location with a wrong table fails to load with a message
naming the table and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from dagster import AssetKey, FreshnessPolicy
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter
from pyspark.sql.types import StructType

from stream_assets.errors import DeclarationError
from stream_assets.monitoring.asset_events import asset_key
from stream_assets.tables import dead_letters
from stream_assets.tables import declaration_rules as rules
from stream_assets.tables import expectations as quality
from stream_assets.tables.expectations import DataExpectation
from stream_assets.tables.maintenance import DEFAULT_MAINTENANCE, Maintenance
from stream_assets.tables.sources import DEFAULT_KAFKA_RESOURCE, Source
from stream_assets.tables.writes import DeltaAppend, Sink, WriteTarget, split_writer

# A query's concurrency pool is this prefix and its name (StreamingTable.pool).
POOL_PREFIX = "stream_assets."
# A stream whose table has not changed for half an hour is worth a look, for an hour is stale:
# the UI shows it (Dagster's freshness daemon evaluates it), whatever mode writes the table.
DEFAULT_FRESHNESS = FreshnessPolicy.time_window(
    fail_window=timedelta(hours=1), warn_window=timedelta(minutes=30))


@dataclass(frozen=True, eq=False)
class StreamingTable:
    """One streaming Delta table, and the dead-letter table beside it when it has one.

    `sources` names each input: `transform` is called with one keyword argument per source
    (streaming DataFrames for streaming sources, a batch DataFrame for a static table) and
    returns the rows to write. Without a transform the table is its one source's rows, parsed
    by the source's parser when it has one. Records a parser refuses land in `dead_letters`
    (default `<name>_dead_letters`) with the reason, in the same micro-batch, exactly once.
    `sink` says how the rows are written (DeltaAppend, the default, or DeltaMerge on `keys`);
    `partition_by` names the Delta table's partition columns.

    `keys` identify a row (MERGE keys for DeltaMerge); `unique_keys` says whether they must
    be unique (default: where the sink makes them so), `nullable_keys` which may be null.
    `schema` is the table's declared schema (column names and types), which its `schema` asset
    check compares with the Delta table (without a transform, a kafka_topic with a record
    schema declares it); `column_descriptions` show in the UI's column table.
    `expectations` are rules about its rows, judged in every micro-batch (`expect`, ...);
    their SQL is checked here, against `schema` when there is one. A table that reads a
    kafka_topic with a record schema also gets the `rescued_data` rule (schema drift).
    `freshness` is the table's Dagster freshness policy (default: warn after 30 minutes
    without a materialization, stale after an hour; None: no policy). `table_properties` are
    Delta table properties of the table (`delta.*`, e.g. `delta.dataSkippingStatsColumns`):
    set when the table is created, and set again before a run when they differ.
    `late_rows_alert`: in a continuous run, the health sensor alerts once when the table's
    watermarks drop more than this many rows as late within 10 minutes (None: no alert; the
    count is in every materialization's `rows_dropped_by_watermark` either way).
    `maintenance` says how the `maintain_tables` job compacts and vacuums the table and its
    dead letters (tables/maintenance.py; the defaults keep a streaming table healthy).
    `trigger_interval` is the processing-time trigger of the continuous job (a catch-up run
    reads everything new and stops); `description`, `group`, `owners` and `tags` are its
    Dagster asset's.
    """

    name: str
    sources: Mapping[str, Source]
    transform: Callable[..., DataFrame] | None = None
    sink: Sink = field(default_factory=DeltaAppend)
    description: str = ""
    keys: tuple[str, ...] = ()
    schema: StructType | None = None
    unique_keys: bool | tuple[str, ...] | None = None
    nullable_keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    trigger_interval: str = "5 seconds"
    dead_letters: str | None = None
    expectations: tuple[DataExpectation, ...] = ()
    column_descriptions: Mapping[str, str] = field(default_factory=dict)
    group: str = "streaming"
    owners: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    table_properties: Mapping[str, str] = field(default_factory=dict)
    freshness: FreshnessPolicy | None = DEFAULT_FRESHNESS
    late_rows_alert: int | None = None
    maintenance: Maintenance = DEFAULT_MAINTENANCE

    def __post_init__(self) -> None:
        for name in ("keys", "nullable_keys", "partition_by", "owners", "expectations"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, tuple | list):
                rules.refuse(self, name, f"must be a tuple of strings, not {value!r}")
            object.__setattr__(self, name, tuple(value))
        if isinstance(self.unique_keys, list):
            object.__setattr__(self, "unique_keys", tuple(self.unique_keys))
        object.__setattr__(self, "sources", dict(self.sources))
        if isinstance(self.table_properties, Mapping):
            object.__setattr__(self, "table_properties", dict(self.table_properties))
        rules.validate(self)
        if self.transform is None:
            # A topic whose records are declared gives the table its columns (the schema check,
            # keys and partitions are then checked against them like a declared schema) and
            # its rules (rescued data), unless the declaration names a rule the same.
            (source,) = self.sources.values()
            own = {e.name for e in self.expectations}
            object.__setattr__(self, "expectations", (
                *self.expectations, *(r for r in source.rules if r.name not in own)))
            if self.schema is None:
                object.__setattr__(self, "schema", source.columns)
                rules.validate_columns(self)
        rules.validate_conditions(self)

    # -- what follows from the declaration ----------------------------------------------------

    @property
    def drops_rows(self) -> bool:
        """Whether an expectation sends violating rows to the dead letters."""
        return any(e.action == "drop" for e in self.expectations)

    @property
    def parsed_sources(self) -> dict[str, Source]:
        return {n: s for n, s in self.sources.items() if s.parser is not None}

    @property
    def dead_letter_table(self) -> str | None:
        if not self.parsed_sources and not self.drops_rows:
            return None
        return self.dead_letters or f"{self.name}_dead_letters"

    @property
    def property_pairs(self) -> tuple[tuple[str, str], ...]:
        """`table_properties` as sorted (key, value) pairs, as the writes take them."""
        return tuple(sorted(self.table_properties.items()))

    @property
    def managed_properties(self) -> tuple[tuple[str, str], ...]:
        """Every table property the query's start sets: the declared ones and those of its
        maintenance (log retention), as sorted pairs. Only `property_pairs` go with the
        writes, so a maintenance setting never changes how batches are written."""
        return tuple(sorted({**self.table_properties, **self.maintenance.properties}.items()))

    @property
    def tables(self) -> tuple[str, ...]:
        """Every table the query writes: its own, then its dead letters."""
        dead = self.dead_letter_table
        return (self.name, dead) if dead else (self.name,)

    @property
    def asset_key(self) -> AssetKey:
        """The Dagster asset of the query's own table (every report and check names it)."""
        return asset_key(self.name)

    @property
    def asset_keys(self) -> tuple[AssetKey, ...]:
        """The assets of every table the query writes, in the order of `tables`."""
        return tuple(asset_key(name) for name in self.tables)

    @property
    def pool(self) -> str:
        """The Dagster concurrency pool of the query: one writer of its tables at a time.

        Every writer takes a slot of it (the catch-up asset, the continuous job), and the
        instance's pools have limit 1 (deploy/dagster.yaml), so the storage shared by every
        machine keeps two runs from writing one checkpoint (docs/guarantees.md). Derived from
        the name only, so the asset, the job and the docs agree; a table name is letters,
        digits and underscores, so the pool is one segment of the UI's pool page URL.
        """
        return f"{POOL_PREFIX}{self.name}"

    @property
    def kafka_topics(self) -> tuple[str, ...]:
        return tuple(t for s in self.sources.values() for t in s.kafka_topics)

    @property
    def kafka_topics_by_resource(self) -> dict[str, tuple[str, ...]]:
        """The Kafka topics, grouped by the key of the resource each is read through."""
        groups: dict[str, tuple[str, ...]] = {}
        for source in self.sources.values():
            if source.kafka_topics:
                key = source.resource or DEFAULT_KAFKA_RESOURCE
                groups[key] = (*groups.get(key, ()), *source.kafka_topics)
        return groups

    @property
    def upstream_tables(self) -> tuple[str, ...]:
        return tuple(t for s in self.sources.values() for t in s.upstream_tables)

    @property
    def static(self) -> tuple[str, ...]:
        """Tables joined as static (batch) DataFrames: no offsets, read per micro-batch."""
        return tuple(t for s in self.sources.values() for t in s.static_tables)

    @property
    def dependencies(self) -> tuple[AssetKey, ...]:
        return tuple(s.asset_key for s in self.sources.values())

    @property
    def row_keys_unique(self) -> tuple[str, ...]:
        """The columns that must identify a row, () if none must."""
        if self.unique_keys is True:
            return self.keys
        if self.unique_keys is False:
            return ()
        if self.unique_keys:
            return tuple(self.unique_keys)
        return self.keys if self.sink.upserts else ()

    def schema_of(self, table: str) -> StructType | None:
        """The declared schema of one of the tables the query writes."""
        if table == self.dead_letter_table:
            return dead_letters.SCHEMA
        return self.schema if table == self.name else None

    def descriptions_of(self, table: str) -> Mapping[str, str]:
        if table == self.dead_letter_table:
            return dead_letters.COLUMN_DESCRIPTIONS
        return self.column_descriptions if table == self.name else {}

    # -- the query -----------------------------------------------------------------------------

    def build_stream(self, inputs: Mapping[str, DataFrame]) -> DataFrame:
        """The rows the query writes, from one DataFrame per source (by name).

        Pure: the same for streaming and batch DataFrames, so it is unit-tested on batches.
        Refused records ride along in the dead-letter column (see dead_letters.py), and each
        expectation's verdict in a flag column the sink drops (see expectations.py).
        """
        if self.transform is None:
            (input_name, source), = self.sources.items()
            frame = inputs[input_name]
            if source.parser is None:
                return self._judge(frame)
            parsed = self._parse(input_name, source, frame)
            if self.expectations:
                # Judged before routing, so a dropped row keeps its exact Kafka bytes.
                error = F.col(dead_letters.ERROR)
                parsed = quality.judged(parsed, self.expectations, error.isNull())
                parsed = parsed.withColumn(dead_letters.ERROR, F.coalesce(
                    error, quality.first_drop_reason(self.expectations)))
            return dead_letters.routed(parsed, self.name)
        usable: dict[str, DataFrame] = {}
        refused: list[DataFrame] = []
        for input_name, source in self.sources.items():
            frame = inputs[input_name]
            if source.parser is None:
                usable[input_name] = frame
                continue
            parsed = self._parse(input_name, source, frame)
            usable[input_name] = dead_letters.usable(parsed)
            refused.append(dead_letters.refused(parsed, self.name))
        output = self.transform(**usable)
        if not isinstance(output, DataFrame):
            raise DeclarationError(
                f"table {self.name!r}, field 'transform': returned {type(output).__name__}, "
                "not a DataFrame"
            )
        output = self._judge(output)
        return dead_letters.with_refused(output, refused) if refused else output

    def _judge(self, rows: DataFrame) -> DataFrame:
        """Flag each row with its verdicts, and route rows a `drop` expectation refuses."""
        if not self.expectations:
            return rows
        flagged = quality.judged(rows, self.expectations)
        if not self.drops_rows:
            return flagged
        reason = quality.first_drop_reason(self.expectations)
        letter = dead_letters.expectation_letter(rows, reason, self.name)
        return flagged.withColumn(dead_letters.DEAD_LETTER, F.when(reason.isNotNull(), letter))

    def _parse(self, input_name: str, source: Source, frame: DataFrame) -> DataFrame:
        assert source.parser is not None
        parsed = source.parser(frame)
        missing = dead_letters.missing_parser_columns(parsed)
        if missing:
            raise DeclarationError(
                f"table {self.name!r}, source {input_name!r}: its parser must keep Kafka's "
                f"key, value, topic, partition and offset columns and add `error`; it lacks "
                f"{', '.join(missing)}"
            )
        return parsed

    def writer(self, stream: DataFrame, paths: Mapping[str, str]) -> DataStreamWriter:
        """The writeStream of the query (without its name, trigger and checkpoint)."""
        target = WriteTarget(self.name, self.name, paths[self.name], self.keys,
                             self.partition_by, self.property_pairs)
        dead = self.dead_letter_table
        if dead is None and not self.expectations:
            return self.sink.stream_writer(stream, target)
        letters = WriteTarget(self.name, dead, paths[dead]) if dead else None
        return stream.writeStream.outputMode(self.sink.output_mode).foreachBatch(
            split_writer(self.sink, target, letters, self.expectations)
        )


def describe(table: StreamingTable) -> dict[str, Any]:
    """The declaration as plain values, for asset metadata."""
    return {
        "query": table.name,
        "keys": ", ".join(table.keys) or "-",
        "sources": ", ".join(f"{n}: {s.asset_key.to_user_string()}"
                             for n, s in table.sources.items()),
    }
