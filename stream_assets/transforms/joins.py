"""Joins: ad impressions with their clicks (stream-stream), events with users (stream-static).

The impression and click topics carry UTF-8 JSON (docs/architecture.md):
impressions `{impression_id, ad_id, user_id, timestamp}`, clicks `{click_id, impression_id,
timestamp}`, timestamps as ISO-8601 strings (no offset means UTC, the session time zone). Ids
are expected as strings; Spark's JSON reader takes a number given instead as its text.
`impression_records`/`click_records` are the topics' parsers: every record with its fields and
`error`, so the table's dead letters get the refused ones. `parse_impressions`/`parse_clicks`
keep the records that parse, `rejected_impressions`/`rejected_clicks` the others: all four
come from the same private parser, so a record is always in exactly one.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from stream_assets.records.functions import register_function
from stream_assets.records.reasons import EMPTY_VALUE, NOT_UTF8, NULL_VALUE

IMPRESSION_WATERMARK = "10 minutes"
CLICK_WATERMARK = "10 minutes"
# A click is attributed to an impression when it happens within this long after it.
CLICK_ATTRIBUTION_WINDOW = "30 minutes"

# Every field is read as a string and converted afterwards: a timestamp that does not parse then
# rejects only its own record with a clear reason instead of nulling the whole struct.
_IMPRESSION_JSON = StructType(
    [StructField(name, StringType()) for name in ("impression_id", "ad_id", "user_id", "timestamp")]
)
_CLICK_JSON = StructType(
    [StructField(name, StringType()) for name in ("click_id", "impression_id", "timestamp")]
)

# The project's JVM check (jvm/udf/.../WholeJsonObject.java): the value is one strict JSON
# object with nothing after it. from_json alone would take single quotes, NaN, duplicate keys
# and text after the object.
WHOLE_OBJECT_FUNCTION = "stream_assets_whole_json_object"
WHOLE_OBJECT_CLASS = "io.github.streamassets.udf.WholeJsonObject"
NOT_AN_OBJECT = "not a JSON object"

_USER_COLUMNS = ("user_name", "user_segment", "registration_date")
_STARTS_WITH_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
_EARLIEST = "0001-01-01 00:00:00"
_LATEST = "9999-12-31 23:59:59.999999"


def _parse(
    kafka_df: DataFrame, schema: StructType, required_ids: tuple[str, ...], time_column: str
) -> DataFrame:
    """Kafka's columns, the JSON fields, the parsed time and `error` (null when usable).

    The shape of a source parser (stream_assets/tables/sources.py): Kafka's columns pass
    through, so a record that is refused reaches the dead letters with its exact bytes.
    """
    register_function(kafka_df.sparkSession, WHOLE_OBJECT_FUNCTION, WHOLE_OBJECT_CLASS,
                      "boolean", "the impressions' and clicks' JSON check")
    raw_value = F.col("value").cast("string")
    # Lenient, but it only reads values the strict check below has passed.
    data = F.from_json(raw_value, schema)
    parsed = kafka_df.select(
        *_kafka_columns(kafka_df), raw_value.alias("__raw_value"), data.alias("__data")
    ).select(
        "*",
        *[F.col(f"__data.{f.name}").alias(f.name) for f in schema.fields if f.name != "timestamp"],
        # Cast semantics: a date, then optionally 'T' or a space, a time, a fraction, an offset.
        F.try_to_timestamp(F.col("__data.timestamp")).alias(time_column),
    )
    # The first failing check names the error; empty ids are as useless as missing ones.
    # from_json turns malformed input into a struct of nulls, indistinguishable from `{}`, so
    # the JVM check decides what is a JSON object (arrays, scalars, garbage, near-JSON are not).
    # Bytes that are not UTF-8 would parse into ids holding replacement characters.
    checks: list[tuple[Column, str]] = [
        (F.col("value").isNull(), NULL_VALUE),
        (F.length(F.col("value")) == 0, EMPTY_VALUE),
        (~F.is_valid_utf8(F.col("__raw_value")), NOT_UTF8),
        (~F.call_function(WHOLE_OBJECT_FUNCTION, F.col("value")), NOT_AN_OBJECT),
    ]
    checks += [
        (F.coalesce(F.col(f"__data.{name}"), F.lit("")) == "", f"missing {name}")
        for name in required_ids
    ]
    checks += [
        (F.col("__data.timestamp").isNull(), "missing timestamp"),
        # Spark's cast also takes a bare time ("12:00") as today's date: a replay on another
        # day would give another time. A point in time here starts with its date.
        (~F.col("__data.timestamp").rlike(_STARTS_WITH_DATE), "timestamp is not ISO-8601"),
        (F.col(time_column).isNull(), "timestamp is not ISO-8601"),
        # An offset can move a year-1 or year-9999 time out of the years ISO-8601, Python and
        # most readers accept, as it does for events (stream_assets/transforms/events.py).
        ((F.col(time_column) < F.lit(_EARLIEST).cast("timestamp"))
         | (F.col(time_column) > F.lit(_LATEST).cast("timestamp")), "timestamp is not ISO-8601"),
    ]
    error: Column = F.lit(None).cast("string")
    for failed, reason in reversed(checks):
        error = F.when(failed, F.lit(reason)).otherwise(error)
    return parsed.withColumn("error", error).drop("__raw_value", "__data")


def _kafka_columns(kafka_df: DataFrame) -> list[Column]:
    # Kafka rows carry their key and position; test and file inputs may hold only some of them.
    return [F.col(name) for name in ("key", "value", "topic", "partition", "offset")
            if name in kafka_df.columns]


def _kafka_position(kafka_df: DataFrame) -> list[Column]:
    return [F.col(name) for name in ("topic", "partition", "offset") if name in kafka_df.columns]


def impression_records(kafka_df: DataFrame) -> DataFrame:
    """The impressions topic's parser: impression_id, ad_id, user_id, impression_time, `error`.

    Refused (the reason in `error`): tombstones, empty or non-UTF-8 values, values that are not
    a JSON object, and records without an impression_id or with a missing or unparseable
    timestamp. ad_id and user_id may be null.
    """
    return _parse(kafka_df, _IMPRESSION_JSON, ("impression_id",), "impression_time")


def click_records(kafka_df: DataFrame) -> DataFrame:
    """The clicks topic's parser: click_id, impression_id, click_time, `error`.

    Refused as in `impression_records`, and without a click_id or an impression_id.
    """
    return _parse(kafka_df, _CLICK_JSON, ("click_id", "impression_id"), "click_time")


def parse_impressions(kafka_df: DataFrame) -> DataFrame:
    """impression_id, ad_id, user_id, impression_time of the impression records that parse."""
    return impression_records(kafka_df).where(F.col("error").isNull()).select(
        "impression_id", "ad_id", "user_id", "impression_time"
    )


def parse_clicks(kafka_df: DataFrame) -> DataFrame:
    """click_id, impression_id, click_time of the click records that parse."""
    return click_records(kafka_df).where(F.col("error").isNull()).select(
        "click_id", "impression_id", "click_time"
    )


def rejected_impressions(kafka_df: DataFrame) -> DataFrame:
    """raw_value, error and the Kafka position (topic, partition, offset) of refused impressions."""
    return _rejected(impression_records(kafka_df), kafka_df)


def rejected_clicks(kafka_df: DataFrame) -> DataFrame:
    """raw_value, error and the Kafka position (topic, partition, offset) of refused clicks."""
    return _rejected(click_records(kafka_df), kafka_df)


def _rejected(parsed: DataFrame, kafka_df: DataFrame) -> DataFrame:
    return parsed.where(F.col("error").isNotNull()).select(
        F.col("value").cast("string").alias("raw_value"), "error", *_kafka_position(kafka_df)
    )


def impression_clicks(impressions: DataFrame, clicks: DataFrame) -> DataFrame:
    """Every impression with the clicks on it within 30 minutes, or alone when nobody clicked.

    Takes the outputs of `parse_impressions` and `parse_clicks`. Columns: impression_id, ad_id,
    user_id, impression_time, click_id, click_time, was_clicked.

    A left outer join on impression_id with impression_time <= click_time <= impression_time +
    30 minutes: a click outside that range does not match (and is not reported). An impression
    clicked twice gives two rows; one never clicked gives one row with null click columns and
    was_clicked false. In a stream that row is emitted only once the watermark passes
    impression_time + 30 minutes, because until then a click could still arrive; the watermark
    is the slower input's latest time minus 10 minutes (Spark's default `min` policy).
    Inputs are not de-duplicated: a replayed impression or click gives another row.
    """
    i = impressions.withWatermark("impression_time", IMPRESSION_WATERMARK).alias("i")
    c = clicks.withWatermark("click_time", CLICK_WATERMARK).alias("c")
    # The time bound is what lets Spark drop join state; without it both sides grow forever.
    matches = (
        (F.col("i.impression_id") == F.col("c.impression_id"))
        & (F.col("c.click_time") >= F.col("i.impression_time"))
        & (
            F.col("c.click_time")
            <= F.col("i.impression_time") + F.expr(f"INTERVAL {CLICK_ATTRIBUTION_WINDOW}")
        )
    )
    return i.join(c, matches, "left_outer").select(
        F.col("i.impression_id").alias("impression_id"),
        F.col("i.ad_id").alias("ad_id"),
        F.col("i.user_id").alias("user_id"),
        F.col("i.impression_time").alias("impression_time"),
        F.col("c.click_id").alias("click_id"),
        F.col("c.click_time").alias("click_time"),
        F.col("c.click_id").isNotNull().alias("was_clicked"),
    )


def enrich_events(events: DataFrame, user_dimension: DataFrame) -> DataFrame:
    """The events with user_name, user_segment and registration_date of their user.

    Columns: the event columns in their order, then user_name, user_segment, registration_date.
    A left join: events of unknown users (or without user_id) keep null user columns. The
    dimension must hold one row per user_id; a duplicated user would duplicate that user's
    events. In a stream `user_dimension` is the static side; a Delta table is read at its latest
    version for each micro-batch, so dimension updates show up without a restart.
    """
    users = user_dimension.select("user_id", *_USER_COLUMNS)
    enriched = events.join(users, on="user_id", how="left")
    # A join on a column name moves user_id to the front; put the event columns back in order.
    return enriched.select(*events.columns, *_USER_COLUMNS)
