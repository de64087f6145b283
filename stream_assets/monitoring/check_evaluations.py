"""The derived checks' verdicts: pure functions of a table's rows, schema and commits.

Each takes what it judges (a DataFrame over a Delta table, a schema, counts) and returns an
`Outcome`; reading the tables and reporting to Dagster stay in checks.py.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce
from typing import Any

from dagster import MetadataValue
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from stream_assets.monitoring.check_config import KEYS_NOT_NULL, KEYS_UNIQUE
from stream_assets.sinks import history_frame


@dataclass(frozen=True)
class Outcome:
    passed: bool
    description: str
    metadata: dict[str, Any]


def check_freshness(spark: SparkSession, path: str, max_age_minutes: float,
                    now: float | None = None) -> Outcome:
    last = (
        history_frame(spark, path, 1)
        .select(F.col("timestamp").cast("double").alias("t"), "version").first()
    )
    return freshness_outcome(last["version"], last["t"], max_age_minutes, now)


def freshness_outcome(version: int, committed: float, max_age_minutes: float,
                      now: float | None = None) -> Outcome:
    age = ((now or time.time()) - committed) / 60
    return Outcome(
        age <= max_age_minutes,
        f"last commit (version {version}) {age:.1f} minutes ago; allowed {max_age_minutes:g}",
        {"age_minutes": round(age, 2), "max_age_minutes": max_age_minutes,
         "last_commit": MetadataValue.timestamp(committed), "delta_version": version},
    )


def check_schema(actual: StructType, declared: StructType, allow_extra: bool) -> Outcome:
    have = {f.name: f.dataType.simpleString() for f in actual.fields}
    want = {f.name: f.dataType.simpleString() for f in declared.fields}
    missing = [n for n in want if n not in have]
    changed = [f"{n}: {want[n]} declared, {have[n]} found"
               for n in want if n in have and have[n] != want[n]]
    extra = [n for n in have if n not in want]
    problems = missing + changed + ([] if allow_extra else extra)
    if not problems:
        description = "columns and types as declared" + (
            f" (plus {', '.join(extra)})" if extra else "")
    else:
        description = "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else [])
            + changed
            + ([f"undeclared {', '.join(extra)}"] if extra and not allow_extra else [])
        )
    return Outcome(not problems, description, {
        "missing_columns": ", ".join(missing) or "-",
        "changed_columns": "; ".join(changed) or "-",
        "extra_columns": ", ".join(extra) or "-",
    })


def check_keys_not_null(frame: DataFrame, keys: Iterable[str]) -> Outcome:
    keys = list(keys)
    # Two counts instead of one pass: Delta answers the first from its log's file statistics,
    # and for the second reads only files whose statistics count a null in a key column (data
    # skipping), none on a healthy table; so the check does not grow with the table.
    return _not_null_outcome(keys, frame.count(), frame.where(_any_null(keys)).count())


def check_keys_unique(frame: DataFrame, keys: Iterable[str], sample: int = 5) -> Outcome:
    keys = list(keys)
    duplicates = frame.groupBy(*keys).count().where(F.col("count") > 1)
    stats = duplicates.select(
        F.count(F.lit(1)).alias("keys"), F.coalesce(F.sum("count"), F.lit(0)).alias("rows")
    ).first()
    return _unique_outcome(keys, duplicates, stats["keys"], stats["rows"], sample)


def check_keys(frame: DataFrame, required: Iterable[str], unique: Iterable[str],
               sample: int = 5) -> dict[str, Outcome]:
    """`keys_not_null` and `keys_unique` from one pass over the table, when the required keys
    are among the unique ones: the rows grouped by the unique keys tell both."""
    required, unique = list(required), list(unique)
    assert set(required) <= set(unique), (required, unique)
    groups = frame.groupBy(*unique).count()
    duplicate = F.col("count") > 1
    stats = groups.select(
        F.coalesce(F.sum("count"), F.lit(0)).alias("rows"),
        F.coalesce(F.sum(F.when(_any_null(required), F.col("count"))), F.lit(0)).alias("nulls"),
        F.count(F.when(duplicate, 1)).alias("keys"),
        F.coalesce(F.sum(F.when(duplicate, F.col("count"))), F.lit(0)).alias("duplicated"),
    ).first()
    return {
        KEYS_NOT_NULL: _not_null_outcome(required, stats["rows"], stats["nulls"]),
        KEYS_UNIQUE: _unique_outcome(unique, groups.where(duplicate), stats["keys"],
                                     stats["duplicated"], sample),
    }


def _any_null(keys: list[str]) -> Column:
    return reduce(lambda a, b: a | b, [F.col(k).isNull() for k in keys])


def _not_null_outcome(keys: list[str], rows: int, nulls: int) -> Outcome:
    return Outcome(
        nulls == 0,
        f"{nulls} of {rows} rows have a null in ({', '.join(keys)})",
        {"rows": rows, "rows_with_null_keys": nulls},
    )


def _unique_outcome(keys: list[str], duplicates: DataFrame, duplicate_keys: int, rows: int,
                    sample: int) -> Outcome:
    examples = [r.asDict() for r in duplicates.limit(sample).collect()] if duplicate_keys else []
    return Outcome(
        duplicate_keys == 0,
        f"{duplicate_keys} key value(s) of ({', '.join(keys)}) appear more than once",
        {"duplicate_keys": duplicate_keys, "rows_with_duplicate_keys": rows,
         "examples": MetadataValue.json([{k: str(v) for k, v in e.items()} for e in examples])},
    )


def check_dead_letter_ratio(good_rows: int, dead_rows: int, max_ratio: float) -> Outcome:
    total = good_rows + dead_rows
    ratio = dead_rows / total if total else 0.0
    return Outcome(
        ratio <= max_ratio,
        f"{dead_rows} of {total} records dead-lettered ({ratio:.2%}); allowed {max_ratio:.2%}",
        {"dead_letter_ratio": round(ratio, 6), "dead_letter_rows": dead_rows,
         "records": total, "max_ratio": max_ratio},
    )


def check_small_files(live_files: int, table_bytes: int, max_files: int,
                      min_average_mb: float) -> Outcome:
    """Too many small files: more than `max_files` live files averaging under the size."""
    average = table_bytes / live_files if live_files else 0.0
    small = live_files > max_files and average < min_average_mb * 1024 * 1024
    return Outcome(
        not small,
        f"{live_files} live files averaging {average / 1024 / 1024:.2f} MB"
        + (f": more than {max_files} under {min_average_mb:g} MB; run the maintain_tables "
           "job (or check its schedule) to compact them" if small else ""),
        {"live_files": live_files, "average_file_bytes": int(average),
         "max_files": max_files, "min_average_mb": min_average_mb},
    )
