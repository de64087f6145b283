"""Windowed aggregations over `raw_events`: tumbling counts, sliding duration stats, sessions.

Each function takes the parsed events (columns of `raw_events`: event_id, event_type, user_id,
timestamp, properties, ...) and returns exactly the columns of its table (README.md lists the
tables), plus the extras documented on the function. They do no I/O, so a unit test feeds them
`spark.createDataFrame([...])` and a streaming query feeds them the Delta stream of `raw_events`.

Watermarks are applied here, always, rather than in the table declaration: the delay is part of
what the table means (which events count as late, when a window is final), it belongs next to
the window it bounds, and a streaming aggregation that forgets it keeps its state forever.
`withWatermark` is a no-op on a batch DataFrame, so batch and streaming run the same plan.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

TUMBLING_WINDOW = "5 minutes"
TUMBLING_WATERMARK = "10 minutes"

SLIDING_WINDOW = "10 minutes"
SLIDING_SLIDE = "5 minutes"
SLIDING_WATERMARK = "10 minutes"

ACTIVITY_SESSION_GAP = "10 minutes"
ACTIVITY_WATERMARK = "30 minutes"

# What counts as a numeric `duration`: an optional sign, digits with an optional fraction (or a
# bare fraction), an optional exponent, optionally surrounded by spaces, tabs or line breaks.
# Spelled out (ASCII digits only) instead of relying on a cast, because Spark's string-to-double
# cast follows Java and also accepts "NaN", "Infinity", "1d" and "0x1p3"; those are invalid here.
# `\z` (Java's end of input), not `$`, which would also match before a final line terminator.
# stream_assets_tests/reference.py states the same rule independently.
DURATION_PATTERN = r"^[ \t\r\n]*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)[ \t\r\n]*\z"


def tumbling_counts(events: DataFrame) -> DataFrame:
    """Events and exactly-distinct users per event type in 5-minute tumbling windows.

    Columns: window_start, window_end, event_type, event_count (bigint), unique_users (bigint).
    `updated_at` belongs to the MERGE sink, which knows when it wrote the row.

    `countDistinct` is rejected on streaming DataFrames and `approx_count_distinct` is not
    exact, so the distinct users are counted as `size(collect_set(user_id))`: the set lives in
    the aggregation state (one entry per distinct user per window and type, freed once the
    watermark closes the window) and is accepted in update mode. Null user_ids are not users:
    they count in event_count but not in unique_users, as with countDistinct.
    """
    counts = (
        events.withWatermark("timestamp", TUMBLING_WATERMARK)
        .groupBy(F.window("timestamp", TUMBLING_WINDOW).alias("window"), F.col("event_type"))
        .agg(
            F.count(F.lit(1)).alias("event_count"),
            F.size(F.collect_set("user_id")).cast("bigint").alias("unique_users"),
        )
    )
    return counts.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        "event_type",
        "event_count",
        "unique_users",
    )


def _parse_duration(properties: Column) -> tuple[Column, Column]:
    """(duration as a finite double or null, whether a duration is present but not numeric)."""
    raw = properties.getItem("duration")
    # regexp_extract gives "" when the pattern does not match; only a match is cast, and
    # try_cast keeps ANSI mode from failing the query on anything the pattern let through.
    number = F.regexp_extract(raw, DURATION_PATTERN, 1)
    parsed = F.when(number != "", number.try_cast("double"))
    # "1e999" matches the pattern but overflows to Infinity, which would poison the average.
    finite = F.when(F.abs(parsed) < F.lit(float("inf")), parsed)
    invalid = raw.isNotNull() & finite.isNull()
    return finite, invalid


def sliding_duration_stats(events: DataFrame) -> DataFrame:
    """Average `properties.duration` per event type in 10-minute windows sliding by 5 minutes.

    Columns: window_start, window_end, event_type, avg_duration (double), event_count (bigint),
    invalid_durations (bigint, extra).

    Every event counts in event_count. avg_duration averages the numeric durations only (see
    DURATION_PATTERN; non-finite values are not numeric); it is null when a window has none.
    invalid_durations counts events whose duration is present but not numeric, so bad producer
    data is visible in the table instead of silently lowering the sample size. An event without
    a duration key is neither averaged nor invalid. Each event falls in two windows.
    """
    duration, invalid = _parse_duration(F.col("properties"))
    stats = (
        events.withWatermark("timestamp", SLIDING_WATERMARK)
        .groupBy(
            F.window("timestamp", SLIDING_WINDOW, SLIDING_SLIDE).alias("window"),
            F.col("event_type"),
        )
        .agg(
            F.avg(duration).alias("avg_duration"),
            F.count(F.lit(1)).alias("event_count"),
            F.count(F.when(invalid, F.lit(1))).alias("invalid_durations"),
        )
    )
    return stats.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        "event_type",
        "avg_duration",
        "event_count",
        "invalid_durations",
    )


def activity_sessions(events: DataFrame) -> DataFrame:
    """Per-user sessions that close after 10 minutes without an event.

    Columns: user_id, session_start, session_end, events_in_session (bigint), first_event,
    last_event. session_start/session_end are the times of the first and last event (not the
    session window's end, which is last event + gap). first_event/last_event are the event types
    of the earliest and latest event by timestamp, ties broken by event_id, so they do not
    depend on arrival order as first()/last() do.

    Events without a user_id are left out: they cannot belong to anybody's session.
    Streaming note: Spark emits session windows in append mode (once the watermark closes them).
    """
    order = F.struct("timestamp", "event_id")
    sessions = (
        events.where(F.col("user_id").isNotNull())
        .withWatermark("timestamp", ACTIVITY_WATERMARK)
        .groupBy(
            F.session_window("timestamp", ACTIVITY_SESSION_GAP).alias("session"),
            F.col("user_id"),
        )
        .agg(
            F.min("timestamp").alias("session_start"),
            F.max("timestamp").alias("session_end"),
            F.count(F.lit(1)).alias("events_in_session"),
            F.min_by("event_type", order).alias("first_event"),
            F.max_by("event_type", order).alias("last_event"),
        )
    )
    return sessions.select(
        "user_id",
        "session_start",
        "session_end",
        "events_in_session",
        "first_event",
        "last_event",
    )
