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


# Working columns of parse_events; the prefix keeps them apart from Kafka's columns.
_STRINGS = (*REQUIRED_STRINGS, *OPTIONAL_STRINGS)
_FIELDS = (*_STRINGS, "properties")
_DOC = "__doc"
_INVALID = "__invalid_json"
_PARTS = "__fields"
_PROPS_OK = "__properties_ok"
_TIMESTAMP = "__timestamp"
# The event's fields as they come, each kept as a VARIANT so its JSON type can be checked.
_PARTS_TYPE = "struct<" + ", ".join(f"{name} variant" for name in _FIELDS) + ">"
# schema_of_variant of an object whose values are all strings: OBJECT<k: STRING, ...>, each
# key bare when it is a plain identifier and otherwise in backticks, a backtick in it doubled.
# A key cannot hide a type: a bare key holds no ':' and a quoted one ends at its only single
# backtick, so the text matches exactly when every value is a JSON string (null is VOID).
_KEY = r"(\w+|`([^`]|``)*`)"
_OBJECT_OF_STRINGS = rf"^OBJECT<({_KEY}: STRING(, {_KEY}: STRING)*)?>$"


def _kind(name: str) -> str:
    return f"__type_{name}"


def _text(name: str) -> str:
    return f"__text_{name}"


def missing(field: str) -> str:
    return f"missing {field}"


def wrong_type(field: str, expected: str) -> str:
    return f"wrong type: {field} must be {expected}"


def _json_type(variant: Column) -> Column:
    # schema_of_variant names scalars STRING, BIGINT, DOUBLE, DECIMAL(p,s), BOOLEAN, and VOID
    # for JSON null; only the top level is inspected because fields are extracted first.
    return F.schema_of_variant(variant)


def _present(value: Column) -> Column:
    return value.isNotNull() & ~F.is_variant_null(value)


def _part(name: str) -> Column:
    return F.col(_PARTS)[name]


def parse_events(kafka: DataFrame) -> DataFrame:
    """Kafka records -> event columns + Kafka position + `error` (null for good events).

    Strict on types: a field that must be a string and holds a number is an error rather than
    silently becoming "123", because a producer sending numbers is a bug someone should see.
    """
    # One parse, Spark's VARIANT parser: it is strict (duplicate keys, single quotes, NaN, a
    # byte-order mark are invalid JSON) and keeps each value's JSON type, so it gives every
    # verdict. The values are read from the one struct of per-field VARIANTs below; reading
    # each from the whole document (`$.event_id`) cost as much again, and a second parse with
    # from_json for the strings cost more than these extractions do (bench/parse_cost.py,
    # docs/benchmarks.md). What the parse itself costs is inside Spark: VariantBuilder
    # builds a Jackson JsonFactory per record in Spark 4.2 (docs/benchmarks.md).
    #
    # Projections, each naming what the next one reads several times: Spark does not merge a
    # projection into the next when that would evaluate an expression twice, and everything
    # after the parse runs as one generated stage.
    text = F.col("value").cast("string")
    parsed = kafka.select("*", F.try_parse_json(text).alias(_DOC))
    # One pass over the object's fields; the cast to a struct also fails for anything but an
    # object, so a null here (of a parsed document) means "not an object".
    parts = parsed.select(
        "*",
        F.col(_DOC).isNull().alias(_INVALID),
        F.try_variant_get(F.col(_DOC), "$", _PARTS_TYPE).alias(_PARTS),
    ).drop(_DOC)
    typed = parts.select(
        "*", *[_json_type(_part(name)).alias(_kind(name)) for name in _STRINGS]
    )

    def is_string(name: str) -> Column:
        return F.col(_kind(name)) == F.lit("STRING")

    def string_value(name: str) -> Column:
        return F.try_variant_get(_part(name), "$", "string")

    props = _part("properties")
    stringly = typed.select(
        "*",
        *[string_value(name).alias(_text(name)) for name in _STRINGS],
        F.when(_present(props), _json_type(props).rlike(_OBJECT_OF_STRINGS))
        .alias(_PROPS_OK),
    )
    # Naive timestamps are read in the session time zone, which the Spark resource pins to UTC.
    # Spark also casts a bare time ("12:00") to *today* at that time, which would make a replay
    # produce another value, so an ISO-8601 date must come first.
    ts_text = F.col(_text("timestamp"))
    stamped = stringly.select(
        "*",
        F.when(ts_text.rlike(r"^[+-]?\d{4,}-\d{2}-\d{2}"), ts_text.try_cast("timestamp"))
        .alias(_TIMESTAMP),
    )

    def present(name: str) -> Column:
        return _present(_part(name))

    checks: list[tuple[Column, str]] = [
        (F.col("value").isNull(), NULL_VALUE),
        (F.length(F.col("value")) == 0, EMPTY_VALUE),
        (~F.is_valid_utf8(F.col("value")), NOT_UTF8),
        (F.col(_INVALID), INVALID_JSON),
        (F.col(_PARTS).isNull(), NOT_OBJECT),
    ]
    for name in REQUIRED_STRINGS:
        checks.append((~present(name), missing(name)))
        checks.append((~is_string(name), wrong_type(name, "a string")))
    for name in OPTIONAL_STRINGS:
        checks.append((present(name) & ~is_string(name), wrong_type(name, "a string")))
    event_type = F.col(_text("event_type"))
    checks.append(
        (
            (F.octet_length(event_type) == 0)
            | event_type.rlike(r"[\x00-\x1f\x7f]")
            | (F.octet_length(event_type) > EVENT_TYPE_MAX_BYTES),
            UNUSABLE_EVENT_TYPE,
        )
    )
    checks.append(
        (present("properties") & ~F.col(_PROPS_OK),
         wrong_type("properties", "an object of strings"))
    )
    timestamp = F.col(_TIMESTAMP)
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

    return stamped.select(
        F.col(_text("event_id")).alias("event_id"),
        F.col(_text("event_type")).alias("event_type"),
        F.col(_text("user_id")).alias("user_id"),
        timestamp.alias("timestamp"),
        F.try_variant_get(props, "$", "map<string,string>").alias("properties"),
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
