"""Dead letters: the records a table's parser refused, with their exact bytes and the reason.

A parser (stream_assets/tables/sources.py) keeps Kafka's columns and adds `error`. Its refused
records travel through the table's query in one struct column, DEAD_LETTER, beside the table's
own columns: the sink writes the rows without it to the table and the rows with it to the
dead-letter table, from the same micro-batch under the same batch id, so a record lands in
exactly one of the two, once. Pure functions of DataFrames; the writes live in sinks.py.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from stream_assets.spark_types import ddl

DEAD_LETTER = "__dead_letter"
ERROR = "error"
# Kafka's record columns a parser must keep; the table's rows drop them (its transform sees the
# parsed fields and the record's position).
RECORD_COLUMNS = ("key", "value")

SCHEMA = StructType(
    [
        # Always valid UTF-8 (undecodable bytes replaced), so every Delta reader can open it.
        StructField("raw_value", StringType(), True),
        StructField("error", StringType(), False),
        StructField("error_time", TimestampType(), False),
        # Null only for rows a `drop` expectation refused after a transform, which have no
        # single Kafka record behind them.
        StructField("topic", StringType(), True),
        StructField("partition", IntegerType(), True),
        StructField("offset", LongType(), True),
        # The exact bytes: raw_value is lossy for bytes that are not UTF-8.
        StructField("raw_bytes", BinaryType(), True),
        StructField("key", BinaryType(), True),
        # The table whose parser refused the record.
        StructField("refused_by", StringType(), False),
        # Set by a re-drive (stream_assets/tables/redrive.py), null until then. Tables written
        # before these columns existed gain them in place (ALTER TABLE ADD COLUMNS).
        StructField("redrive_plan", LongType(), True),
        StructField("redriven_at", TimestampType(), True),
        StructField("redriven_version", LongType(), True),
        # Kafka's timestamp of the record and its type (0 CreateTime, 1 LogAppendTime), kept
        # when the parser keeps them under these names (a parser's `timestamp` may be the
        # record's own field, as raw_events' is), so a re-drive gives the parser Kafka's
        # `timestamp` and `timestampType` again. Null in letters written before them.
        StructField("kafka_timestamp", TimestampType(), True),
        StructField("kafka_timestamp_type", IntegerType(), True),
    ]
)
# The columns a re-drive sets: null in every letter a query writes.
REDRIVE_PLAN, REDRIVEN_AT, REDRIVEN_VERSION = REDRIVE_COLUMNS = (
    "redrive_plan", "redriven_at", "redriven_version")
# Kafka's record columns a letter keeps when the parser kept them under the letter's names
# (`F.col("timestamp").alias("kafka_timestamp")`): Kafka's name -> the letter's (and parser's).
KAFKA_TIME_COLUMNS = {"timestamp": "kafka_timestamp", "timestampType": "kafka_timestamp_type"}


def description(table: str) -> str:
    """The dead-letter table's own description in the catalog."""
    return (f"What {table} refused, each once: the record's exact bytes and Kafka position (a "
            f"row a drop expectation refused after a transform: the row as JSON), the reason "
            f"(`error`) and when. Written in the same micro-batch as {table}, so each record "
            f"lands in exactly one of the two.")


COLUMN_DESCRIPTIONS = {
    "raw_value": "The record's value as text (bytes that are not UTF-8 replaced by U+FFFD); "
    "for a row a drop expectation refused after a transform, the row as JSON.",
    "error": "Why the table refused the record: its parser's reason or an expectation's name.",
    "error_time": "When the micro-batch that refused it ran.",
    "topic": "Kafka topic of the record.",
    "partition": "Kafka partition of the record.",
    "offset": "Kafka offset of the record: (topic, partition, offset) is unique.",
    "raw_bytes": "The record's value, byte for byte.",
    "key": "The record's key, byte for byte.",
    "refused_by": "The table whose parser refused the record.",
    "redrive_plan": "Set when a re-drive chose the record because it now passes: the version "
    "of this table the re-drive planned from (its transaction version on the table).",
    "redriven_at": "When a re-drive appended the record to the table (null: not re-driven).",
    "redriven_version": "The table's Delta version that holds the re-driven record.",
    "kafka_timestamp": "Kafka's timestamp of the record, when the table's parser keeps it as "
    "`kafka_timestamp` (null otherwise, and in letters written before this column).",
    "kafka_timestamp_type": "Kafka's timestamp type of the record (0 CreateTime, 1 "
    "LogAppendTime), when the parser keeps it as `kafka_timestamp_type`.",
}


def missing_parser_columns(parsed: DataFrame) -> list[str]:
    """The columns a parser must keep or add that `parsed` lacks."""
    needed = (*RECORD_COLUMNS, "topic", "partition", "offset", ERROR)
    return [c for c in needed if c not in parsed.columns]


def _letter(table: str, columns: list[str]) -> Column:
    """The dead letter of a parsed record; `columns` are the parser's output columns."""
    value = F.col("value")
    return F.struct(
        F.make_valid_utf8(value.cast("string")).alias("raw_value"),
        F.col(ERROR).alias("error"),
        # A micro-batch's current_timestamp is one instant for all its rows, in both tables.
        F.current_timestamp().alias("error_time"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        value.alias("raw_bytes"),
        F.col("key"),
        F.lit(table).alias("refused_by"),
        *_not_redriven(),
        *_kafka_time(columns),
    )


def _kafka_time(columns: list[str]) -> list[Column]:
    """Kafka's timestamp and its type, from the parser's output when it kept them."""
    return [(F.col(name) if name in columns else F.lit(None))
            .cast(ddl(SCHEMA[name].dataType)).alias(name)
            for name in KAFKA_TIME_COLUMNS.values()]


def _not_redriven() -> list[Column]:
    return [F.lit(None).cast(ddl(SCHEMA[name].dataType)).alias(name) for name in REDRIVE_COLUMNS]


def usable(parsed: DataFrame) -> DataFrame:
    """The records a parser accepted, without `error` and Kafka's key and value."""
    return parsed.where(F.col(ERROR).isNull()).drop(ERROR, *RECORD_COLUMNS)


def refused(parsed: DataFrame, table: str) -> DataFrame:
    """The records a parser refused, each as one DEAD_LETTER struct."""
    return parsed.where(F.col(ERROR).isNotNull()).select(
        _letter(table, parsed.columns).alias(DEAD_LETTER))


def routed(parsed: DataFrame, table: str) -> DataFrame:
    """Every record in one pass: the table's columns, and DEAD_LETTER set on refused ones.

    For a table that is its parser's output: one read and one parse of each record, where a
    union of `usable` and `refused` would read and parse the input twice.
    """
    kept = [c for c in parsed.columns if c not in (ERROR, *RECORD_COLUMNS)]
    return parsed.select(
        *kept, F.when(F.col(ERROR).isNotNull(), _letter(table, parsed.columns))
        .alias(DEAD_LETTER)
    )


def with_refused(output: DataFrame, refused_frames: list[DataFrame]) -> DataFrame:
    """A transform's output with the dead letters of its inputs, in the same micro-batch.

    Each input with a parser is read twice (once for its usable rows, once for its refused
    ones): a stateful transform (a join, an aggregation) cannot carry refused rows through.
    """
    out = output
    if DEAD_LETTER not in out.columns:
        # As DDL, not the StructType: over Spark Connect its strings would become collated
        # ones in the dead-letter table, which delta-rs cannot open (spark_types.py).
        out = out.withColumn(DEAD_LETTER, F.lit(None).cast(ddl(SCHEMA)))
    for frame in refused_frames:
        out = out.unionByName(frame, allowMissingColumns=True)
    return out


def expectation_letter(rows: DataFrame, reason: Column, table: str) -> Column:
    """The dead letter of a row a `drop` expectation refused after a transform: the row as JSON,
    and its Kafka position when it carries one."""
    def position(name: str, kind: str) -> Column:
        return F.col(name) if name in rows.columns else F.lit(None).cast(kind)

    return F.struct(
        F.to_json(F.struct(*[F.col(c) for c in rows.columns if not c.startswith("__")]))
        .alias("raw_value"),
        reason.alias("error"),
        F.current_timestamp().alias("error_time"),
        position("topic", "string").cast("string").alias("topic"),
        position("partition", "int").cast("int").alias("partition"),
        position("offset", "long").cast("long").alias("offset"),
        F.lit(None).cast("binary").alias("raw_bytes"),
        F.lit(None).cast("binary").alias("key"),
        F.lit(table).alias("refused_by"),
        *_not_redriven(),
        *_kafka_time([]),
    )


def table_rows(batch: DataFrame) -> DataFrame:
    return batch.where(F.col(DEAD_LETTER).isNull()).drop(DEAD_LETTER)


def letters(batch: DataFrame) -> DataFrame:
    return batch.where(F.col(DEAD_LETTER).isNotNull()).select(f"{DEAD_LETTER}.*")
