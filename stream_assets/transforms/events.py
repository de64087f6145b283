"""Parse Kafka records into events, and say exactly why a record is not one.

Pure: Kafka-shaped DataFrame in, DataFrame out; the same for batch and streaming. Each record
gets either a parsed event or an `error`, never both, so a sink can split them without loss.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stream_assets import schemas

REQUIRED_STRINGS = ("event_id", "timestamp")
OPTIONAL_STRINGS = ("event_type", "user_id")

# Error texts are part of the contract: alerts, checks and users filter on them.
NULL_VALUE = "null value (tombstone)"
EMPTY_VALUE = "empty value"
NOT_UTF8 = "value is not valid UTF-8"
INVALID_JSON = "invalid JSON"
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


def missing(field: str) -> str:
    return f"missing {field}"


def wrong_type(field: str, expected: str) -> str:
    return f"wrong type: {field} must be {expected}"


def _json_type(variant: Column) -> Column:
    # schema_of_variant names scalars STRING, BIGINT, DOUBLE, DECIMAL(p,s), BOOLEAN, and VOID
    # for JSON null; only the top level is inspected because fields are extracted first.
    return F.schema_of_variant(variant)


def _field(doc: Column, name: str) -> Column:
    return F.try_variant_get(doc, f"$.{name}", "variant")


def _present(value: Column) -> Column:
    return value.isNotNull() & ~F.is_variant_null(value)


def parse_events(kafka: DataFrame) -> DataFrame:
    """Kafka records -> event columns + Kafka position + `error` (null for good events).

    Strict on types: a field that must be a string and holds a number is an error rather than
    silently becoming "123", because a producer sending numbers is a bug someone should see.
    """
    text = F.col("value").cast("string")
    doc = F.try_parse_json(text)
    fields = {name: _field(doc, name) for name in (*REQUIRED_STRINGS, *OPTIONAL_STRINGS)}
    properties = _field(doc, "properties")
    props_map = F.try_variant_get(properties, "$", "map<string,variant>")
    # Naive timestamps are read in the session time zone, which the Spark resource pins to UTC.
    # Spark also casts a bare time ("12:00") to *today* at that time, which would make a replay
    # produce another value, so an ISO-8601 date must come first.
    ts_text = F.try_variant_get(fields["timestamp"], "$", "string")
    timestamp = F.when(
        ts_text.rlike(r"^[+-]?\d{4,}-\d{2}-\d{2}"), ts_text.try_cast("timestamp")
    )

    def is_string(value: Column) -> Column:
        return _json_type(value) == F.lit("STRING")

    checks: list[tuple[Column, str]] = [
        (F.col("value").isNull(), NULL_VALUE),
        (F.length(F.col("value")) == 0, EMPTY_VALUE),
        (~F.is_valid_utf8(F.col("value")), NOT_UTF8),
        (doc.isNull(), INVALID_JSON),
        (F.try_variant_get(doc, "$", "map<string,variant>").isNull(), NOT_OBJECT),
    ]
    for name in REQUIRED_STRINGS:
        checks.append((~_present(fields[name]), missing(name)))
        checks.append((~is_string(fields[name]), wrong_type(name, "a string")))
    for name in OPTIONAL_STRINGS:
        checks.append(
            (_present(fields[name]) & ~is_string(fields[name]), wrong_type(name, "a string"))
        )
    event_type = F.try_variant_get(fields["event_type"], "$", "string")
    checks.append(
        (
            (F.octet_length(event_type) == 0)
            | event_type.rlike(r"[\x00-\x1f\x7f]")
            | (F.octet_length(event_type) > EVENT_TYPE_MAX_BYTES),
            UNUSABLE_EVENT_TYPE,
        )
    )
    checks.append(
        (
            _present(properties)
            & (
                props_map.isNull()
                | ~F.forall(F.map_values(props_map), lambda v: _json_type(v) == F.lit("STRING"))
            ),
            wrong_type("properties", "an object of strings"),
        )
    )
    checks.append((timestamp.isNull(), BAD_TIMESTAMP))
    checks.append(
        (
            (timestamp < F.lit(_EARLIEST).cast("timestamp"))
            | (timestamp > F.lit(_LATEST).cast("timestamp")),
            TIMESTAMP_RANGE,
        )
    )

    error: Column = F.lit(None).cast("string")
    for condition, message in reversed(checks):
        error = F.when(condition, F.lit(message)).otherwise(error)

    strings = {
        name: F.try_variant_get(fields[name], "$", "string").alias(name)
        for name in (*REQUIRED_STRINGS, *OPTIONAL_STRINGS)
    }
    return kafka.select(
        strings["event_id"],
        strings["event_type"],
        strings["user_id"],
        timestamp.alias("timestamp"),
        F.try_variant_get(properties, "$", "map<string,string>").alias("properties"),
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
