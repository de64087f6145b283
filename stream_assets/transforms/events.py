"""Parse Kafka records into events, and say exactly why a record is not one.

Kafka-shaped DataFrame in, DataFrame out; the same for batch and streaming. The only effect
is registering the project's JVM parser in the DataFrame's session. Each record gets either a
parsed event or an `error`, never both, so a sink can split them without loss.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from stream_assets import schemas
from stream_assets.records.functions import register_function
from stream_assets.records.reasons import (
    EMPTY_VALUE,
    NOT_UTF8,
    NULL_VALUE,
)

REQUIRED_STRINGS = ("event_id", "timestamp")
OPTIONAL_STRINGS = ("event_type", "user_id")

# The demo's own reasons (the shared ones are in records/reasons.py); its README lists them.
# The generic parser says "not a JSON object": this text predates it and users filter on it.
NOT_OBJECT = "JSON value is not an object"
BAD_TIMESTAMP = "unparseable timestamp"
TIMESTAMP_RANGE = "timestamp out of range (years 0001-9999)"
# raw_events is partitioned by event_type, so it names a folder: Spark does not escape NUL,
# turns "" into null, and a name over 255 bytes (escaping triples some characters) cannot be
# created. One such record would stop the table, replayed and failing on every retry.
EVENT_TYPE_MAX_BYTES = 80
UNUSABLE_EVENT_TYPE = (
    f"unusable event_type: empty, a control character or over {EVENT_TYPE_MAX_BYTES} bytes"
)
# Spark accepts years up to 294247, but ISO-8601, Python and most readers stop at 9999.
_LATEST = "9999-12-31 23:59:59.999999"
_EARLIEST = "0001-01-01 00:00:00"


# The project's parser on the JVM (jvm/udf/.../ParseEvent.java), built by `stream-assets setup`
# into the `udf` jars that every SparkSession of the project loads (resources/spark.py).
PARSER_FUNCTION = "stream_assets_parse_event"
PARSER_CLASS = "io.github.streamassets.udf.ParseEvent"
# The row ParseEvent builds, field for field.
_PARSER_TYPE = (
    "struct<event_id:string,event_type:string,user_id:string,timestamp:string,"
    "properties:map<string,string>,error:string>"
)
_PARSED = "__parsed"
_TIMESTAMP = "__timestamp"


def register_parser(spark: SparkSession) -> None:
    """Register the JVM parser in this session; MissingJars says how to get it there."""
    register_function(spark, PARSER_FUNCTION, PARSER_CLASS, _PARSER_TYPE, "the event parser")


def parse_events(kafka: DataFrame) -> DataFrame:
    """Kafka records -> event columns + Kafka position + `error` (null for good events).

    Strict on types: a field that must be a string and holds a number is an error rather than
    silently becoming "123", because a producer sending numbers is a bug someone should see.
    """
    # One strict pass on the JVM reads the fields and gives every verdict that needs the JSON
    # (ParseEvent.java says what counts as JSON). Spark's own strict parser (try_parse_json)
    # gave the same verdicts at 0.4x the speed of a plain from_json parse: it builds a Jackson
    # factory per record, and a VARIANT gives up a string only through a Cast per value
    # (docs/benchmarks.md, bench/parse_cost.py). The checks below need no JSON.
    register_parser(kafka.sparkSession)
    parsed = kafka.select(
        "*", F.call_function(PARSER_FUNCTION, F.col("value")).alias(_PARSED))

    def field(name: str) -> Column:
        return F.col(f"{_PARSED}.{name}")

    # Naive timestamps are read in the session time zone, which the Spark resource pins to UTC.
    # Spark also casts a bare time ("12:00") to *today* at that time, which would make a replay
    # produce another value, so an ISO-8601 date must come first.
    ts_text = field("timestamp")
    stamped = parsed.select(
        "*",
        F.when(ts_text.rlike(r"^[+-]?\d{4,}-\d{2}-\d{2}"), ts_text.try_cast("timestamp"))
        .alias(_TIMESTAMP),
    )
    timestamp = F.col(_TIMESTAMP)
    # The first that holds, in this order, is the record's error.
    checks: list[tuple[Column, Column]] = [
        (F.col("value").isNull(), F.lit(NULL_VALUE)),
        (F.length(F.col("value")) == 0, F.lit(EMPTY_VALUE)),
        (~F.is_valid_utf8(F.col("value")), F.lit(NOT_UTF8)),
        # INVALID_JSON ... the properties' type, as ParseEvent.java gives them.
        (field("error").isNotNull(), field("error")),
        (timestamp.isNull(), F.lit(BAD_TIMESTAMP)),
        (
            (timestamp < F.lit(_EARLIEST).cast("timestamp"))
            | (timestamp > F.lit(_LATEST).cast("timestamp")),
            F.lit(TIMESTAMP_RANGE),
        ),
    ]
    error: Column = F.lit(None).cast("string")
    for condition, message in reversed(checks):
        error = F.when(condition, message).otherwise(error)

    return stamped.select(
        field("event_id").alias("event_id"),
        field("event_type").alias("event_type"),
        field("user_id").alias("user_id"),
        timestamp.alias("timestamp"),
        field("properties").alias("properties"),
        "topic",
        "partition",
        "offset",
        F.col("value").alias("raw_bytes"),
        "key",
        error.alias("error"),
    )


def valid_events(parsed: DataFrame, ingested_at: Column | None = None) -> DataFrame:
    """The raw_events rows of a parsed batch."""
    return parsed.where(F.col("error").isNull()).select(
        *[F.col(f.name) for f in schemas.RAW_EVENTS.fields if f.name != "ingested_at"],
        (ingested_at if ingested_at is not None else F.current_timestamp()).alias("ingested_at"),
    )


def dead_letters(parsed: DataFrame, error_time: Column | None = None) -> DataFrame:
    """The dead_letter_queue rows of a parsed batch: the record as it came, and why."""
    return parsed.where(F.col("error").isNotNull()).select(
        F.col("raw_bytes").cast("string").alias("raw_value"),
        "error",
        (error_time if error_time is not None else F.current_timestamp()).alias("error_time"),
        "topic",
        "partition",
        "offset",
        "raw_bytes",
        "key",
    )
