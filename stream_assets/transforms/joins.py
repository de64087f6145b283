"""Joins: ad impressions with their clicks (stream-stream), events with users (stream-static).

The impression and click topics carry UTF-8 JSON (docs/architecture.md):
impressions `{impression_id, ad_id, user_id, timestamp}`, clicks `{click_id, impression_id,
timestamp}`, ids as strings, timestamps as ISO-8601 text (no offset means UTC).
IMPRESSION_RECORD / CLICK_RECORD and their rules declare that for the project's JSON record
parser (stream_assets/records/json_records.py): a record that does not fit is refused with the
reason, so impression_clicks' dead letters get it. `impression_records`/`click_records` are
those parsers; `parse_impressions`/`parse_clicks` keep the records that parse as the join reads
them, `rejected_impressions`/`rejected_clicks` the others: a record is always in exactly one.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stream_assets.records.checks import TextCheck, YearRange
from stream_assets.records.ddl import parse_schema
from stream_assets.records.json_records import ERROR, JsonRecords

IMPRESSION_WATERMARK = "10 minutes"
CLICK_WATERMARK = "10 minutes"
# A click is attributed to an impression when it happens within this long after it.
CLICK_ATTRIBUTION_WINDOW = "30 minutes"

IMPRESSION_RECORD = ("impression_id STRING NOT NULL, ad_id STRING, user_id STRING, "
                     "timestamp TIMESTAMP NOT NULL")
CLICK_RECORD = ("click_id STRING NOT NULL, impression_id STRING NOT NULL, "
                "timestamp TIMESTAMP NOT NULL")
# The parser reads years 0001-9999, but an offset can move the instant out of them
# (0001-01-01T00:00:00+01:00), which ISO-8601, Python and most readers cannot hold.
TIMESTAMP_RANGE = "timestamp out of range (years 0001-9999)"
_IN_RANGE = YearRange("timestamp", 1, 9999)
# An empty id is as useless as none: it joins nothing and names nothing. (Field checks: the
# parser judges them as it reads the record, stream_assets/records/checks.py.)
IMPRESSION_RULES = {"missing impression_id": TextCheck("impression_id", not_empty=True),
                    TIMESTAMP_RANGE: _IN_RANGE}
CLICK_RULES = {"missing click_id": TextCheck("click_id", not_empty=True),
               "missing impression_id": TextCheck("impression_id", not_empty=True),
               TIMESTAMP_RANGE: _IN_RANGE}

_IMPRESSIONS = JsonRecords(parse_schema(IMPRESSION_RECORD), rules=tuple(IMPRESSION_RULES.items()))
_CLICKS = JsonRecords(parse_schema(CLICK_RECORD), rules=tuple(CLICK_RULES.items()))

_USER_COLUMNS = ("user_name", "user_segment", "registration_date")


def impression_records(kafka_df: DataFrame) -> DataFrame:
    """The impressions topic's parser: impression_id, ad_id, user_id, timestamp,
    `_rescued_data`, Kafka's columns and `error`.

    Refused (the reason in `error`): tombstones, empty or non-UTF-8 values, values that are not
    one JSON object, a field of the wrong type, a missing or empty impression_id, a missing
    timestamp or one that is not ISO-8601 within years 0001-9999. ad_id and user_id may be null.
    """
    return _IMPRESSIONS(kafka_df)


def click_records(kafka_df: DataFrame) -> DataFrame:
    """The clicks topic's parser: click_id, impression_id, timestamp, `_rescued_data`, Kafka's
    columns and `error`; refused as in `impression_records`, and without a click_id or an
    impression_id."""
    return _CLICKS(kafka_df)


def impressions_of(records: DataFrame) -> DataFrame:
    """impression_id, ad_id, user_id, impression_time of usable impression records."""
    return records.select("impression_id", "ad_id", "user_id",
                          F.col("timestamp").alias("impression_time"))


def clicks_of(records: DataFrame) -> DataFrame:
    """click_id, impression_id, click_time of usable click records."""
    return records.select("click_id", "impression_id", F.col("timestamp").alias("click_time"))


def parse_impressions(kafka_df: DataFrame) -> DataFrame:
    """impression_id, ad_id, user_id, impression_time of the impression records that parse."""
    return impressions_of(impression_records(kafka_df).where(F.col(ERROR).isNull()))


def parse_clicks(kafka_df: DataFrame) -> DataFrame:
    """click_id, impression_id, click_time of the click records that parse."""
    return clicks_of(click_records(kafka_df).where(F.col(ERROR).isNull()))


def rejected_impressions(kafka_df: DataFrame) -> DataFrame:
    """raw_value, error and the Kafka position (topic, partition, offset) of refused impressions."""
    return _rejected(impression_records(kafka_df))


def rejected_clicks(kafka_df: DataFrame) -> DataFrame:
    """raw_value, error and the Kafka position (topic, partition, offset) of refused clicks."""
    return _rejected(click_records(kafka_df))


def _rejected(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col(ERROR).isNotNull()).select(
        F.col("value").cast("string").alias("raw_value"), ERROR, "topic", "partition", "offset"
    )


def impression_clicks_of_records(impressions: DataFrame, clicks: DataFrame) -> DataFrame:
    """`impression_clicks` of the usable records of the two declared topics."""
    return impression_clicks(impressions_of(impressions), clicks_of(clicks))


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
