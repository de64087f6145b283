"""Asset checks derived from each table declaration.

Every table a query writes gets `freshness`, `small_files` (too many small files: the
maintenance job compacts them) and, when its schema is declared, `schema`; the
query's main table gets `keys_not_null` (its declared keys), `keys_unique` (where the keys
identify a row: MERGE keys, or `unique_keys` on the declaration) and, when the table is its
parser's output with dead letters beside it, `dead_letter_ratio`, which reads both Delta
tables. Each check warns or fails as its `Expectation` says (WARN or ERROR), and
can block downstream materializations.

One multi-asset check per query: one step, one Spark session for all of a query's checks,
started only for checks that cannot be told from the Delta logs, the previous verdicts and the
materializations' row counts (`without_spark`); both key checks share one pass over the table.

The checks' configuration lives in check_config.py, their verdicts (pure functions of a
table's rows, schema and commits) in check_evaluations.py, the verdicts told without Spark in
check_reuse.py; this module plans them from a declaration, reads the tables and reports to
Dagster, through the events both modes report (asset_events.AssetEvents).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    MetadataValue,
    multi_asset_check,
)

# Dagster does not export the status of a check's execution; the event log storage is the
# only place that says which past evaluations completed.
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from stream_assets.monitoring.asset_events import AssetEvents, CheckEvent, asset_key
from stream_assets.monitoring.check_config import (
    DEAD_LETTER_RATIO,
    FRESHNESS,
    KEYS_NOT_NULL,
    KEYS_UNIQUE,
    SCHEMA,
    SMALL_FILES,
    ChecksConfig,
    DeadLetterExpectation,
    Expectation,
    FreshnessExpectation,
    SchemaExpectation,
    SmallFilesExpectation,
)
from stream_assets.monitoring.check_evaluations import (
    Outcome,
    check_dead_letter_ratio,
    check_freshness,
    check_keys,
    check_keys_not_null,
    check_keys_unique,
    check_schema,
    check_small_files,
)
from stream_assets.monitoring.check_reuse import VERSIONS_KEY, versions_read, without_spark
from stream_assets.sinks import is_delta_table, sql_path
from stream_assets.tables.dead_letters import REDRIVEN_VERSION
from stream_assets.tables.declaration import StreamingTable

RESOURCE_KEYS = {"spark", "lake"}



# -- what is checked, derived from the declaration -------------------------------------------

def declared_schema(table: StreamingTable, name: str) -> StructType | None:
    """The declared schema of one of the query's tables (its `schema`, or the dead letters')."""
    return table.schema_of(name)


def unique_keys(table: StreamingTable) -> tuple[str, ...]:
    """The columns that must identify a row of the main table, () if none must."""
    return table.row_keys_unique


def required_keys(table: StreamingTable, config: ChecksConfig) -> tuple[str, ...]:
    """The key columns that must never be null.

    All declared keys but those allowed to be null: by `nullable_keys` on the declaration, by
    the config, or by a declared schema that marks the column nullable.
    """
    allowed = set(config.nullable_keys.get(table.name, ())) | set(table.nullable_keys)
    declared = declared_schema(table, table.name)
    if declared is not None:
        allowed |= {f.name for f in declared.fields if f.nullable}
    return tuple(k for k in table.keys if k not in allowed)


def has_dead_letter_ratio(table: StreamingTable) -> bool:
    """Whether the table's rows and dead letters add up to the records read: only when the
    table is its parser's output (a join or an aggregation writes other numbers of rows)."""
    return table.dead_letter_table is not None and table.transform is None


def planned_checks(
    table: StreamingTable, config: ChecksConfig
) -> list[tuple[str, str, Expectation, str]]:
    """(table, check name, expectation, description) for every check the declaration implies."""
    planned: list[tuple[str, str, Expectation, str]] = []
    fresh = config.freshness
    for name in table.tables:
        planned.append((name, FRESHNESS, fresh,
                        f"The last Delta commit is at most {fresh.max_age_minutes:g} minutes old."))
        if declared_schema(table, name) is not None:
            planned.append((name, SCHEMA, config.schema_matches,
                            "Columns and types are those declared on the table."))
        small = config.small_files
        planned.append((name, SMALL_FILES, small,
                        f"At most {small.max_files} live files, or an average file of "
                        f"{small.min_average_mb:g} MB or more."))
    if required_keys(table, config):
        keys = ", ".join(required_keys(table, config))
        planned.append((table.name, KEYS_NOT_NULL, config.keys_not_null,
                        f"No row has a null in its key columns ({keys})."))
    if unique_keys(table):
        planned.append((table.name, KEYS_UNIQUE, config.keys_unique,
                        f"No two rows share ({', '.join(unique_keys(table))})."))
    if has_dead_letter_ratio(table):
        dl = config.dead_letter_ratio
        planned.append((table.name, DEAD_LETTER_RATIO, dl,
                        f"At most {dl.max_ratio:.1%} of the records read land in "
                        f"{table.dead_letter_table}."))
    return [p for p in planned if p[2].enabled]


# -- reading the tables -------------------------------------------------------------------------

def _missing(path: str, table: StreamingTable) -> Outcome:
    return Outcome(False, f"no Delta table at {path} yet; materialize {table.name} first",
                   {"path": MetadataValue.path(path)})



def evaluate(
    spark: SparkSession, lake: Any, table: StreamingTable, name: str, check: str,
    expectation: Expectation, config: ChecksConfig | None = None,
) -> Outcome:
    """Run one planned check against the Delta tables."""
    lake.attach(spark)
    path = lake.table_path(name)
    if not is_delta_table(spark, path):
        return _missing(path, table)
    if check == FRESHNESS:
        assert isinstance(expectation, FreshnessExpectation)
        return check_freshness(spark, path, expectation.max_age_minutes)
    if check == SMALL_FILES:
        assert isinstance(expectation, SmallFilesExpectation)
        detail = spark.sql(f"DESCRIBE DETAIL {sql_path(path)}").first()
        return check_small_files(int(detail["numFiles"] or 0), int(detail["sizeInBytes"] or 0),
                                 expectation.max_files, expectation.min_average_mb)
    frame = spark.read.format("delta").load(path)
    if check == SCHEMA:
        assert isinstance(expectation, SchemaExpectation)
        declared = declared_schema(table, name)
        assert declared is not None
        return check_schema(frame.schema, declared, expectation.allow_extra_columns)
    if check == KEYS_NOT_NULL:
        return check_keys_not_null(frame, required_keys(table, config or ChecksConfig()))
    if check == KEYS_UNIQUE:
        return check_keys_unique(frame, unique_keys(table))
    if check == DEAD_LETTER_RATIO:
        assert isinstance(expectation, DeadLetterExpectation)
        assert table.dead_letter_table is not None
        dead_path = lake.table_path(table.dead_letter_table)
        dead = 0
        if is_delta_table(spark, dead_path):
            letters = spark.read.format("delta").load(dead_path)
            if REDRIVEN_VERSION in letters.columns:
                # A re-driven letter is a row of the table now: counted there, not twice.
                letters = letters.where(F.col(REDRIVEN_VERSION).isNull())
            dead = letters.count()
        return check_dead_letter_ratio(frame.count(), dead, expectation.max_ratio)
    raise ValueError(f"unknown check {check!r}")


def evaluate_planned(
    spark: SparkSession, lake: Any, table: StreamingTable,
    planned: Iterable[tuple[str, str, Expectation]], config: ChecksConfig | None = None,
) -> Iterator[tuple[str, str, Expectation, Outcome]]:
    """`evaluate_recording_versions` for each (table, check, expectation), in order; when both
    key checks of the query's table are among them, one pass over it tells both."""
    config = config or ChecksConfig()
    planned = list(planned)
    required, unique = required_keys(table, config), unique_keys(table)
    key_checks = {KEYS_NOT_NULL, KEYS_UNIQUE}
    together = key_checks <= {c for n, c, _ in planned if n == table.name} \
        and set(required) <= set(unique)
    keys: dict[str, Outcome] = {}
    for name, check, expectation in planned:
        if together and name == table.name and check in key_checks:
            keys = keys or key_outcomes(spark, lake, table, required, unique)
            yield name, check, expectation, keys[check]
        else:
            yield name, check, expectation, evaluate_recording_versions(
                spark, lake, table, name, check, expectation, config)


def key_outcomes(spark: SparkSession, lake: Any, table: StreamingTable,
                 required: tuple[str, ...], unique: tuple[str, ...]) -> dict[str, Outcome]:
    """Both key checks of the query's table from one pass, with the versions read (taken
    first, as in `evaluate_recording_versions`)."""
    versions = versions_read(lake, table.name, KEYS_UNIQUE)
    lake.attach(spark)
    path = lake.table_path(table.name)
    if not is_delta_table(spark, path):
        return {check: _missing(path, table) for check in (KEYS_NOT_NULL, KEYS_UNIQUE)}
    outcomes = check_keys(spark.read.format("delta").load(path), required, unique)
    if None not in versions.values():
        for outcome in outcomes.values():
            outcome.metadata[VERSIONS_KEY] = MetadataValue.json(versions)
    return outcomes


@dataclass(frozen=True)
class TableChecks:
    """The derived checks of one query, runnable outside their own step: the continuous job
    evaluates them on its own session, so that a table it keeps materializing does not show
    its checks as "not executed" (issue 13, item 7)."""

    table: StreamingTable
    config: ChecksConfig

    def evaluations(self, spark: SparkSession, lake: Any) -> list[CheckEvent]:
        planned = [(name, check, exp) for name, check, exp, _ in
                   planned_checks(self.table, self.config)]
        return [check_event(AssetEvents(continuous=True), *found)
                for found in evaluate_planned(spark, lake, self.table, planned, self.config)]


def check_event(events: AssetEvents, name: str, check: str, expectation: Expectation,
                outcome: Outcome) -> CheckEvent:
    """A derived check's verdict as either mode reports it (asset_events.AssetEvents)."""
    return events.check(name, check, outcome.passed, expectation.severity,
                        outcome.description, outcome.metadata)


def table_checks(
    tables: Iterable[StreamingTable],
    config: ChecksConfig | None = None,
    per_table: Mapping[str, ChecksConfig] | None = None,
) -> dict[str, TableChecks]:
    """Each query's derived checks, by query name, with the config build_all_checks uses."""
    per_table = per_table or {}
    return {t.name: TableChecks(t, per_table.get(t.name, config) or ChecksConfig())
            for t in tables}


def evaluate_recording_versions(
    spark: SparkSession, lake: Any, table: StreamingTable, name: str, check: str,
    expectation: Expectation, config: ChecksConfig | None = None,
) -> Outcome:
    """`evaluate`, with the versions it read in the metadata (taken first: a commit during
    the evaluation can only make the recorded versions older than what was read, never
    newer, so a later run never reuses a verdict for a table it did not see)."""
    versions = versions_read(lake, name, check, table.dead_letter_table) \
        if check != FRESHNESS else {}
    outcome = evaluate(spark, lake, table, name, check, expectation, config)
    if versions and None not in versions.values():
        outcome.metadata[VERSIONS_KEY] = MetadataValue.json(versions)
    return outcome


def build_checks(
    table: StreamingTable, config: ChecksConfig | None = None
) -> AssetChecksDefinition:
    """All checks of one declared query, as one multi-asset check (one step, one session)."""
    config = config or ChecksConfig()
    planned = planned_checks(table, config)
    by_key = {AssetCheckKey(asset_key(name), check): (name, check, exp)
              for name, check, exp, _ in planned}
    specs = [
        AssetCheckSpec(check, asset=asset_key(name), description=text, blocking=exp.blocking,
                       metadata={"severity": exp.severity})
        for name, check, exp, text in planned
    ]

    @multi_asset_check(
        name=f"{table.name}_checks",
        specs=specs,
        can_subset=True,
        required_resource_keys=RESOURCE_KEYS,
        description=f"Checks derived from the {table.name} declaration.",
    )
    def _checks(context) -> Iterator[AssetCheckResult]:  # AssetCheckExecutionContext
        lake = context.resources.lake
        result = partial(check_event, AssetEvents())

        to_read = []
        for key in sorted(context.selected_asset_check_keys, key=lambda k: k.to_user_string()):
            name, check, expectation = by_key[key]
            outcome = without_spark(context.instance, lake, name, check, expectation,
                                    table.dead_letter_table)
            if outcome is None:
                to_read.append((name, check, expectation))
            else:
                yield result(name, check, expectation, outcome)
        # The session starts only for checks that must read a table: a run over tables
        # that did not change answers from the logs and the previous results.
        if to_read:
            spark = context.resources.spark.spark_session
            for found in evaluate_planned(spark, lake, table, to_read, config):
                yield result(*found)

    return _checks


def build_all_checks(
    tables: Iterable[StreamingTable],
    config: ChecksConfig | None = None,
    per_table: Mapping[str, ChecksConfig] | None = None,
) -> list[AssetChecksDefinition]:
    """Checks for every declaration; `per_table` overrides the config of named queries."""
    per_table = per_table or {}
    return [build_checks(t, per_table.get(t.name, config)) for t in tables]
