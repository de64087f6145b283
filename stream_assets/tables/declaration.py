"""A streaming table, declared once: every fact about it in one place.

Its Dagster asset, streaming query, checkpoint, dead letters, checks and metadata are all
derived from this declaration (docs/architecture.md). A declaration that cannot work (a
transform whose parameters do not match the sources, keys that are not columns, ...) is
refused when it is made, so a code location with a wrong table fails to load with a message
naming the table and the field.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from dagster import AssetKey, FreshnessPolicy
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter
from pyspark.sql.types import BinaryType, StructField, StructType

from stream_assets.errors import DeclarationError
from stream_assets.monitoring.asset_events import asset_key
from stream_assets.tables import dead_letters, expectation_sql
from stream_assets.tables import expectations as quality
from stream_assets.tables.expectations import DataExpectation
from stream_assets.tables.maintenance import DEFAULT_MAINTENANCE, Maintenance
from stream_assets.tables.sources import DEFAULT_KAFKA_RESOURCE, Source
from stream_assets.tables.writes import DeltaAppend, Sink, WriteTarget, split_writer

# The checks derived for every table (stream_assets/monitoring/checks.py, sensors.py): an
# expectation's check may not take their names.
RESERVED_CHECK_NAMES = frozenset(
    {"freshness", "schema", "keys_not_null", "keys_unique", "dead_letter_ratio", "stream_health",
     "small_files"}
)
# A query's concurrency pool is this prefix and its name (StreamingTable.pool).
POOL_PREFIX = "stream_assets."
# Table names are folder names and Dagster asset keys.
# A stream whose table has not changed for half an hour is worth a look, for an hour is stale:
# the UI shows it (Dagster's freshness daemon evaluates it), whatever mode writes the table.
DEFAULT_FRESHNESS = FreshnessPolicy.time_window(
    fail_window=timedelta(hours=1), warn_window=timedelta(minutes=30))

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
                self._refuse(name, f"must be a tuple of strings, not {value!r}")
            object.__setattr__(self, name, tuple(value))
        if isinstance(self.unique_keys, list):
            object.__setattr__(self, "unique_keys", tuple(self.unique_keys))
        object.__setattr__(self, "sources", dict(self.sources))
        if isinstance(self.table_properties, Mapping):
            object.__setattr__(self, "table_properties", dict(self.table_properties))
        self._validate()
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
                self._validate_columns()
        self._validate_conditions()

    # -- what is refused at load --------------------------------------------------------------

    def _refuse(self, field_name: str, problem: str) -> None:
        raise DeclarationError(f"table {self.name!r}, field {field_name!r}: {problem}")

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            self._refuse("name", "must be letters, digits and underscores, not starting with a "
                         "digit (it names a folder and an asset)")
        if not self.sources:
            self._refuse("sources", "declare at least one source, e.g. "
                         "{'events': kafka_topic('events')}")
        for input_name, source in self.sources.items():
            if not isinstance(source, Source):
                self._refuse("sources", f"{input_name!r} is {source!r}, not a source "
                             "(kafka_topic, upstream or static)")
        if not any(s.streaming for s in self.sources.values()):
            self._refuse("sources", "needs at least one streaming source (kafka_topic or "
                         "upstream); static tables only join a stream")
        if not isinstance(self.sink, Sink):
            self._refuse("sink", f"{self.sink!r} is not a sink (DeltaAppend or DeltaMerge)")
        self._validate_transform()
        self._validate_columns()
        self._validate_expectations()
        if self.dead_letters is not None and not self.parsed_sources and not self._drops:
            self._refuse("dead_letters", "no source has a parser and no expectation drops "
                         "rows, so nothing can be refused; give a kafka_topic a parser, add an "
                         "expect_or_drop, or remove dead_letters")
        if self.dead_letter_table is not None and not _NAME.fullmatch(self.dead_letter_table):
            self._refuse("dead_letters", "must be letters, digits and underscores")
        late = self.late_rows_alert
        if late is not None and (isinstance(late, bool) or not isinstance(late, int) or late < 0):
            self._refuse("late_rows_alert", f"must be a number of rows (0 or more) or None, "
                         f"not {late!r}")
        if self.freshness is not None and not isinstance(self.freshness, FreshnessPolicy):
            self._refuse("freshness", f"{self.freshness!r} is not a FreshnessPolicy, e.g. "
                         "FreshnessPolicy.time_window(fail_window=timedelta(hours=2)), or None")
        self._validate_properties()
        self._validate_maintenance()
        if self.sink.needs_keys and not self.keys:
            self._refuse("keys", f"{type(self.sink).__name__} upserts on the table's keys; "
                         "declare them")

    def _validate_properties(self) -> None:
        if not isinstance(self.table_properties, Mapping):
            self._refuse("table_properties", "must be a mapping of Delta table properties to "
                         "strings, e.g. {'delta.dataSkippingStatsColumns': 'event_id'}")
        for key, value in self.table_properties.items():
            # Delta keeps a writer's `delta.*` options as the new table's properties, and
            # ignores any other key there (writes.py); other metadata belongs in `tags`.
            if not isinstance(key, str) or not key.startswith("delta."):
                self._refuse("table_properties", f"{key!r} is not a Delta table property "
                             "(they start with 'delta.'); put other metadata in tags")
            if not isinstance(value, str):
                self._refuse("table_properties", f"{key}: {value!r} must be a string, as "
                             "Delta stores it, e.g. 'true' or '30 days'")

    def _validate_maintenance(self) -> None:
        if not isinstance(self.maintenance, Maintenance):
            self._refuse("maintenance", f"{self.maintenance!r} is not a Maintenance, e.g. "
                         "Maintenance(zorder_by=('user_id',))")
        columns = set(self.schema.fieldNames()) if isinstance(self.schema, StructType) else None
        for problem in self.maintenance.problems(columns, self.partition_by):
            self._refuse("maintenance", problem)
        both = sorted(set(self.maintenance.properties) & set(self.table_properties))
        if both:
            self._refuse("maintenance", f"{', '.join(both)} is also in table_properties; "
                         "declare it in one place")

    def _validate_expectations(self) -> None:
        names = [e.name for e in self.expectations]
        for e in self.expectations:
            if not isinstance(e, DataExpectation):
                self._refuse("expectations", f"{e!r} is not an expectation (expect, "
                             "expect_or_drop or expect_or_fail)")
        taken = sorted(set(names) & RESERVED_CHECK_NAMES)
        if taken:
            self._refuse("expectations", f"{', '.join(taken)} is the name of a check every "
                         "table gets; name the expectation otherwise")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            self._refuse("expectations", f"{', '.join(twice)} declared twice: a name is an "
                         "asset check")

    def _validate_conditions(self) -> None:
        """Each rule parses as Spark SQL and, where the table's columns are known, names them."""
        columns = self._judged_columns
        for e in self.expectations:
            problem = expectation_sql.problem(e.condition, columns)
            if problem:
                raise DeclarationError(f"table {self.name!r}, expectation {e.name!r}: "
                                       f"{e.condition!r} {problem}")

    @property
    def _judged_columns(self) -> StructType | None:
        """The columns an expectation sees, None when only the query knows them.

        Without a transform, rules judge the parser's rows before they are routed, so Kafka's
        `key` and `value` are there too (build_stream).
        """
        if self.schema is None:
            return None
        if self.transform is not None or not self.parsed_sources:
            return self.schema
        names = {n.lower() for n in self.schema.fieldNames()}
        record = [StructField(n, BinaryType()) for n in dead_letters.RECORD_COLUMNS
                  if n not in names]
        return StructType([*self.schema.fields, *record])

    @property
    def _drops(self) -> bool:
        return any(e.action == "drop" for e in self.expectations)

    def _validate_transform(self) -> None:
        if self.transform is None:
            if len(self.sources) != 1:
                self._refuse("transform", "a table with several sources needs a transform "
                             "that combines them")
            return
        if not callable(self.transform):
            self._refuse("transform", f"{self.transform!r} is not callable")
        try:
            parameters = inspect.signature(self.transform).parameters.values()
        except (TypeError, ValueError):
            return  # a builtin or C function: nothing to compare
        named = {p.name for p in parameters
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        required = {p.name for p in parameters
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                    and p.default is p.empty}
        takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters)
        inputs = set(self.sources)
        missing = sorted(required - inputs)
        extra = [] if takes_any else sorted(inputs - named)
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"parameter(s) {', '.join(missing)} have no source")
            if extra:
                problems.append(f"source(s) {', '.join(extra)} match no parameter")
            self._refuse("transform", f"{getattr(self.transform, '__name__', 'it')} is called "
                         f"with one keyword argument per source ({', '.join(self.sources)}): "
                         + "; ".join(problems))

    def _validate_columns(self) -> None:
        if self.schema is not None and not isinstance(self.schema, StructType):
            self._refuse("schema", "must be a pyspark StructType")
        nullable = set(self.nullable_keys) - set(self.keys)
        if nullable:
            self._refuse("nullable_keys", f"{', '.join(sorted(nullable))} not among the keys")
        unique = self.unique_keys if isinstance(self.unique_keys, tuple) else ()
        if self.schema is None:
            return
        columns = set(self.schema.fieldNames())
        for field_name, names in (("keys", self.keys), ("partition_by", self.partition_by),
                                  ("unique_keys", unique),
                                  ("column_descriptions", tuple(self.column_descriptions))):
            unknown = [n for n in names if n not in columns]
            if unknown:
                self._refuse(field_name, f"{', '.join(unknown)} not in the schema "
                             f"({', '.join(self.schema.fieldNames())})")

    # -- what follows from the declaration ----------------------------------------------------

    @property
    def parsed_sources(self) -> dict[str, Source]:
        return {n: s for n, s in self.sources.items() if s.parser is not None}

    @property
    def dead_letter_table(self) -> str | None:
        if not self.parsed_sources and not self._drops:
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
        if not self._drops:
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
