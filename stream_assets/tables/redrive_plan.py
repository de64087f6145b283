"""What a re-drive would do, from DataFrames alone: which dead letters, and what becomes of each.

A re-drive takes a table's dead letters that no re-drive chose yet, rebuilds the Kafka rows
they came from (their kept bytes, key and position), and runs them through the table's
current declaration (`StreamingTable.build_stream`: its parser or record schema, then its
expectations). Each letter then either passes (a table row with its original topic,
partition and offset) or still fails, with the reason the declaration gives now. Pure
functions of DataFrames, so they work on a batch as on a table; the writes, their order and
their exactly-once live in redrive.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stream_assets.spark_types import ddl
from stream_assets.tables import dead_letters
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.expectations import without_flags

POSITION = ("topic", "partition", "offset")
# The reason column of an outcome: null when the letter now passes.
NOW = "now_error"


def app_id(table: str) -> str:
    """The Delta transaction app id of a table's re-drives: its own, never a query's
    (`stream_assets/<query>/<table>`), so neither skips the other's versions."""
    return f"redrive:{table}"


def commit_note(table: str, plan: int) -> str:
    """The userMetadata of the append a re-drive makes (DESCRIBE HISTORY shows it)."""
    return f"stream_assets redrive of {table}: dead letters planned at version {plan}"


def refusal(table: StreamingTable) -> str | None:
    """Why the table's dead letters cannot be re-driven, None when they can."""
    if table.dead_letter_table is None:
        return f"{table.name} has no dead letters (no source has a parser)"
    if table.transform is not None:
        return (f"{table.name}'s rows come from a transform of its sources, so one dead "
                "letter is no row of it (a join or an aggregation needs the other inputs); "
                "rebuild it with a full refresh instead")
    (source,) = table.sources.values()
    if source.parser is None:
        return (f"{table.name}'s dead letters are rows a drop expectation refused, which keep "
                "no Kafka bytes to parse again")
    return None


@dataclass(frozen=True)
class Selection:
    """Which dead letters to re-drive: by reason (`error`, exactly) and by when they were
    refused (`error_time`, from inclusive, until exclusive); empty means all."""

    reasons: tuple[str, ...] = ()
    refused_since: datetime | None = None
    refused_until: datetime | None = None

    def describe(self) -> str:
        parts = []
        if self.reasons:
            parts.append("reasons " + ", ".join(repr(r) for r in self.reasons))
        if self.refused_since is not None:
            parts.append(f"refused since {self.refused_since.isoformat()}")
        if self.refused_until is not None:
            parts.append(f"refused until {self.refused_until.isoformat()}")
        return "; ".join(parts) or "every dead letter not re-driven yet"


def with_marks(letters: DataFrame) -> DataFrame:
    """The dead letters with every column of today's schema (the re-drive's marks, Kafka's
    timestamp), null where the table was written before the column existed."""
    missing = [f for f in dead_letters.SCHEMA.fields if f.name not in letters.columns]
    for column in missing:
        letters = letters.withColumn(column.name, F.lit(None).cast(ddl(column.dataType)))
    return letters


def candidates(letters: DataFrame, table: str, selection: Selection) -> DataFrame:
    """The letters a re-drive may take: refused by `table`, with a Kafka position, never
    chosen by a re-drive, and matching `selection`."""
    chosen = with_marks(letters).where(
        (F.col("refused_by") == table) & F.col("offset").isNotNull()
        & F.col(dead_letters.REDRIVE_PLAN).isNull())
    if selection.reasons:
        chosen = chosen.where(F.col("error").isin(list(selection.reasons)))
    if selection.refused_since is not None:
        chosen = chosen.where(F.col("error_time") >= F.lit(selection.refused_since))
    if selection.refused_until is not None:
        chosen = chosen.where(F.col("error_time") < F.lit(selection.refused_until))
    return chosen


def pending(letters: DataFrame, table: str) -> DataFrame:
    """Letters a re-drive chose but did not mark as written: it was interrupted."""
    return with_marks(letters).where(
        (F.col("refused_by") == table) & F.col(dead_letters.REDRIVE_PLAN).isNotNull()
        & F.col(dead_letters.REDRIVEN_VERSION).isNull())


def kafka_records(letters: DataFrame) -> DataFrame:
    """The Kafka rows the letters came from, as the topic's source gives them to a parser.

    Dead letters keep the value's exact bytes, the key and the position, and Kafka's
    timestamp when the parser kept it (as `kafka_timestamp`); a letter without one gives the
    parser a null `timestamp`."""
    return with_marks(letters).select(
        F.col("key"),
        F.col("raw_bytes").alias("value"),
        *POSITION,
        *[F.col(name).alias(kafka)
          for kafka, name in dead_letters.KAFKA_TIME_COLUMNS.items()],
    )


@dataclass(frozen=True)
class Reparsed:
    """The letters through the current declaration: the rows to write (`flagged` with each
    expectation's verdict, as a `fail` rule judges them), and every letter's outcome (its
    position, its reason then, the reason now or null when it passes)."""

    flagged: DataFrame
    outcomes: DataFrame
    expectations: tuple = ()

    @property
    def rows(self) -> DataFrame:
        return without_flags(self.flagged, self.expectations)


def reparse(table: StreamingTable, letters: DataFrame) -> Reparsed:
    """Run the letters' Kafka rows through the table's current declaration."""
    (input_name,) = table.sources
    built = table.build_stream({input_name: kafka_records(letters)})
    flagged = dead_letters.table_rows(built)
    failing = dead_letters.letters(built).select(*POSITION, F.col("error").alias(NOW))
    passing = flagged.select(*POSITION, F.lit(None).cast("string").alias(NOW))
    now = passing.unionByName(failing)
    outcomes = letters.select(*POSITION, "error", "raw_value").join(now, list(POSITION))
    return Reparsed(flagged, outcomes, table.expectations)


@dataclass
class ReasonCount:
    """One reason the letters were refused for, and what a re-drive does with them."""

    reason: str
    redriven: int = 0
    # The reason each still-failing letter gets now, with how many.
    still_failing: dict[str, int] = field(default_factory=dict)
    sample: str | None = None

    @property
    def failing(self) -> int:
        return sum(self.still_failing.values())


def count_by_reason(outcomes: DataFrame, sample_chars: int = 200) -> list[ReasonCount]:
    """Per reason the letters had: how many pass now, how many still fail (by their reason
    now), and one letter's value as a sample; most letters first."""
    grouped = outcomes.groupBy("error", NOW).agg(
        F.count(F.lit(1)).alias("n"),
        F.min(F.substring("raw_value", 1, sample_chars)).alias("sample"),
    ).collect()
    counts: dict[str, ReasonCount] = {}
    for row in grouped:
        entry = counts.setdefault(row["error"], ReasonCount(row["error"]))
        if row[NOW] is None:
            entry.redriven += row["n"]
        else:
            entry.still_failing[row[NOW]] = entry.still_failing.get(row[NOW], 0) + row["n"]
        if entry.sample is None or (row["sample"] or "") < entry.sample:
            entry.sample = row["sample"]
    return sorted(counts.values(), key=lambda c: (-(c.redriven + c.failing), c.reason))


def still_failing(counts: Sequence[ReasonCount]) -> dict[str, int]:
    """How many letters still fail, by the reason the declaration gives now."""
    total: dict[str, int] = {}
    for entry in counts:
        for reason, n in entry.still_failing.items():
            total[reason] = total.get(reason, 0) + n
    return dict(sorted(total.items(), key=lambda item: (-item[1], item[0])))
