"""What a StreamingTable declaration refuses when it is made: each rule names the table, the
field and what to change (DeclarationError), so a code location with a wrong table fails to
load saying so. declaration.py calls them from StreamingTable.__post_init__.
"""

import inspect
import re
from collections.abc import Mapping
from typing import Any

from dagster import FreshnessPolicy
from pyspark.sql.types import BinaryType, StructField, StructType

from stream_assets.errors import DeclarationError
from stream_assets.tables import dead_letters, expectation_sql
from stream_assets.tables.expectations import DataExpectation
from stream_assets.tables.maintenance import Maintenance
from stream_assets.tables.sources import Source
from stream_assets.tables.writes import Sink

# Every rule takes the StreamingTable being made as `table` (typed Any: declaration.py calls
# this module, which does not import it back).
Declaration = Any

# The checks derived for every table (stream_assets/monitoring/checks.py, sensors.py): an
# expectation's check may not take their names.
RESERVED_CHECK_NAMES = frozenset(
    {"freshness", "schema", "keys_not_null", "keys_unique", "dead_letter_ratio", "stream_health",
     "small_files"}
)
# Table names are folder names and Dagster asset keys.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def refuse(table: Declaration, field_name: str, problem: str) -> None:
    raise DeclarationError(f"table {table.name!r}, field {field_name!r}: {problem}")


def validate(table: Declaration) -> None:
    if not isinstance(table.name, str) or not NAME.fullmatch(table.name):
        refuse(table, "name", "must be letters, digits and underscores, not starting with a "
               "digit (it names a folder and an asset)")
    if not table.sources:
        refuse(table, "sources", "declare at least one source, e.g. "
               "{'events': kafka_topic('events')}")
    for input_name, source in table.sources.items():
        if not isinstance(source, Source):
            refuse(table, "sources", f"{input_name!r} is {source!r}, not a source "
                   "(kafka_topic, upstream or static)")
    if not any(s.streaming for s in table.sources.values()):
        refuse(table, "sources", "needs at least one streaming source (kafka_topic or "
               "upstream); static tables only join a stream")
    if not isinstance(table.sink, Sink):
        refuse(table, "sink", f"{table.sink!r} is not a sink (DeltaAppend or DeltaMerge)")
    validate_transform(table)
    validate_columns(table)
    validate_expectations(table)
    if table.dead_letters is not None and not table.parsed_sources and not table.drops_rows:
        refuse(table, "dead_letters", "no source has a parser and no expectation drops "
               "rows, so nothing can be refused; give a kafka_topic a parser, add an "
               "expect_or_drop, or remove dead_letters")
    if table.dead_letter_table is not None and not NAME.fullmatch(table.dead_letter_table):
        refuse(table, "dead_letters", "must be letters, digits and underscores")
    late = table.late_rows_alert
    if late is not None and (isinstance(late, bool) or not isinstance(late, int) or late < 0):
        refuse(table, "late_rows_alert", f"must be a number of rows (0 or more) or None, "
               f"not {late!r}")
    if table.freshness is not None and not isinstance(table.freshness, FreshnessPolicy):
        refuse(table, "freshness", f"{table.freshness!r} is not a FreshnessPolicy, e.g. "
               "FreshnessPolicy.time_window(fail_window=timedelta(hours=2)), or None")
    validate_properties(table)
    validate_maintenance(table)
    if table.sink.needs_keys and not table.keys:
        refuse(table, "keys", f"{type(table.sink).__name__} upserts on the table's keys; "
               "declare them")


def validate_properties(table: Declaration) -> None:
    if not isinstance(table.table_properties, Mapping):
        refuse(table, "table_properties", "must be a mapping of Delta table properties to "
               "strings, e.g. {'delta.dataSkippingStatsColumns': 'event_id'}")
    for key, value in table.table_properties.items():
        # Delta keeps a writer's `delta.*` options as the new table's properties, and
        # ignores any other key there (writes.py); other metadata belongs in `tags`.
        if not isinstance(key, str) or not key.startswith("delta."):
            refuse(table, "table_properties", f"{key!r} is not a Delta table property "
                   "(they start with 'delta.'); put other metadata in tags")
        if not isinstance(value, str):
            refuse(table, "table_properties", f"{key}: {value!r} must be a string, as "
                   "Delta stores it, e.g. 'true' or '30 days'")


def validate_maintenance(table: Declaration) -> None:
    if not isinstance(table.maintenance, Maintenance):
        refuse(table, "maintenance", f"{table.maintenance!r} is not a Maintenance, e.g. "
               "Maintenance(zorder_by=('user_id',))")
    columns = set(table.schema.fieldNames()) if isinstance(table.schema, StructType) else None
    for problem in table.maintenance.problems(columns, table.partition_by):
        refuse(table, "maintenance", problem)
    both = sorted(set(table.maintenance.properties) & set(table.table_properties))
    if both:
        refuse(table, "maintenance", f"{', '.join(both)} is also in table_properties; "
               "declare it in one place")


def validate_expectations(table: Declaration) -> None:
    names = [e.name for e in table.expectations]
    for e in table.expectations:
        if not isinstance(e, DataExpectation):
            refuse(table, "expectations", f"{e!r} is not an expectation (expect, "
                   "expect_or_drop or expect_or_fail)")
    taken = sorted(set(names) & RESERVED_CHECK_NAMES)
    if taken:
        refuse(table, "expectations", f"{', '.join(taken)} is the name of a check every "
               "table gets; name the expectation otherwise")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        refuse(table, "expectations", f"{', '.join(twice)} declared twice: a name is an "
               "asset check")


def validate_conditions(table: Declaration) -> None:
    """Each rule parses as Spark SQL and, where the table's columns are known, names them."""
    columns = judged_columns(table)
    for e in table.expectations:
        problem = expectation_sql.problem(e.condition, columns)
        if problem:
            raise DeclarationError(f"table {table.name!r}, expectation {e.name!r}: "
                                   f"{e.condition!r} {problem}")


def judged_columns(table: Declaration) -> StructType | None:
    """The columns an expectation sees, None when only the query knows them.

    Without a transform, rules judge the parser's rows before they are routed, so Kafka's
    `key` and `value` are there too (build_stream).
    """
    if table.schema is None:
        return None
    if table.transform is not None or not table.parsed_sources:
        return table.schema
    names = {n.lower() for n in table.schema.fieldNames()}
    record = [StructField(n, BinaryType()) for n in dead_letters.RECORD_COLUMNS
              if n not in names]
    return StructType([*table.schema.fields, *record])


def validate_transform(table: Declaration) -> None:
    if table.transform is None:
        if len(table.sources) != 1:
            refuse(table, "transform", "a table with several sources needs a transform "
                   "that combines them")
        return
    if not callable(table.transform):
        refuse(table, "transform", f"{table.transform!r} is not callable")
    try:
        parameters = inspect.signature(table.transform).parameters.values()
    except (TypeError, ValueError):
        return  # a builtin or C function: nothing to compare
    named = {p.name for p in parameters
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = {p.name for p in parameters
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.default is p.empty}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters)
    inputs = set(table.sources)
    missing = sorted(required - inputs)
    extra = [] if takes_any else sorted(inputs - named)
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"parameter(s) {', '.join(missing)} have no source")
        if extra:
            problems.append(f"source(s) {', '.join(extra)} match no parameter")
        refuse(table, "transform", f"{getattr(table.transform, '__name__', 'it')} is called "
               f"with one keyword argument per source ({', '.join(table.sources)}): "
               + "; ".join(problems))


def validate_columns(table: Declaration) -> None:
    if table.schema is not None and not isinstance(table.schema, StructType):
        refuse(table, "schema", "must be a pyspark StructType")
    nullable = set(table.nullable_keys) - set(table.keys)
    if nullable:
        refuse(table, "nullable_keys", f"{', '.join(sorted(nullable))} not among the keys")
    unique = table.unique_keys if isinstance(table.unique_keys, tuple) else ()
    if table.schema is None:
        return
    columns = set(table.schema.fieldNames())
    for field_name, names in (("keys", table.keys), ("partition_by", table.partition_by),
                              ("unique_keys", unique),
                              ("column_descriptions", tuple(table.column_descriptions))):
        unknown = [n for n in names if n not in columns]
        if unknown:
            refuse(table, field_name, f"{', '.join(unknown)} not in the schema "
                   f"({', '.join(table.schema.fieldNames())})")
