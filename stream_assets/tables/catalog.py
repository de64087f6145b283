"""The demo pipeline's streaming tables, declared with the public API like any user's tables."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType, StructField, StructType, TimestampType

from stream_assets import schemas
from stream_assets.records.checks import TextCheck, YearRange
from stream_assets.records.json_records import JsonRecords
from stream_assets.spark_types import ddl
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.expectations import expect
from stream_assets.tables.sources import kafka_topic, static, upstream
from stream_assets.tables.writes import DeltaAppend, DeltaMerge
from stream_assets.transforms import joins, sessions, windows

# The demo's tables with watermarks: more late rows than this in 10 minutes of a continuous run
# is one health alert (a producer's clock, or a backlog replayed behind the watermark).
LATE_ROWS_ALERT = 1000

WINDOW_COLUMNS = {
    "window_start": "Start of the event-time window (inclusive, UTC).",
    "window_end": "End of the event-time window (exclusive, UTC).",
    "event_type": "The event type counted.",
    "event_count": "Events of this type in the window, late ones past the watermark excluded.",
    "updated_at": "When the micro-batch that last changed the row ran.",
}


# What an event on the `events` topic holds (docs/architecture.md). The fields are in the order
# of their checks: a record wrong in several is refused for the first.
EVENT_RECORD = StructType([
    StructField("event_id", StringType(), False),
    StructField("timestamp", TimestampType(), False),
    StructField("event_type", StringType()),
    StructField("user_id", StringType()),
    # Values must be strings: a null one is refused ("missing properties.<key>").
    StructField("properties", MapType(StringType(), StringType(), valueContainsNull=False)),
])
# raw_events is partitioned by event_type, so it names a folder: Spark does not escape NUL,
# turns "" into null, and a name over 255 bytes (escaping triples some characters) cannot be
# created. One such record would stop the table, replayed and failing on every retry.
EVENT_TYPE_MAX_BYTES = 80
UNUSABLE_EVENT_TYPE = (
    f"unusable event_type: empty, a control character or over {EVENT_TYPE_MAX_BYTES} bytes")
# The parser reads years 0001-9999, but an offset can move the instant out of them
# (0001-01-01T00:00:00+01:00): Spark would keep it, ISO-8601, Python and most readers not.
TIMESTAMP_RANGE = "timestamp out of range (years 0001-9999)"
# Field checks: the parser judges them as it reads the record (stream_assets/records/checks.py).
EVENT_RULES = {
    UNUSABLE_EVENT_TYPE: TextCheck("event_type", not_empty=True, no_control_characters=True,
                                   max_bytes=EVENT_TYPE_MAX_BYTES),
    TIMESTAMP_RANGE: YearRange("timestamp", 1, 9999),
}
events = kafka_topic(schemas.EVENT_TOPIC, schema=EVENT_RECORD, rules=EVENT_RULES)
assert isinstance(events.parser, JsonRecords)
EVENTS: JsonRecords = events.parser


def event_records(kafka: DataFrame) -> DataFrame:
    """The events topic's parser: its declared record (EVENT_RECORD, EVENT_RULES) as
    raw_events' columns, then `error` and Kafka's key and value.

    raw_events keeps its columns: the time it ingested the record, and no `_rescued_data`
    (fields the record schema does not name are not kept).
    """
    parsed = EVENTS(kafka)
    return parsed.select(
        *[F.col(f.name).cast(ddl(f.dataType)) if f.name == "properties" else f.name
          for f in schemas.RAW_EVENTS.fields if f.name != "ingested_at"],
        # One instant per micro-batch, the same as the dead letters' error_time.
        F.current_timestamp().alias("ingested_at"),
        "key",
        "value",
        "error",
    )


raw_events = StreamingTable(
    name="raw_events",
    sources={"events": kafka_topic(schemas.EVENT_TOPIC, parser=event_records)},
    dead_letters="dead_letter_queue",
    partition_by=("event_type",),
    schema=schemas.RAW_EVENTS,
    keys=("topic", "partition", "offset"),
    # Each Kafka record lands once, here or in the dead letters.
    unique_keys=True,
    # A data rule, not a parse verdict: the event is kept, a rising share is worth an alert.
    expectations=(
        expect("numeric_duration", "try_cast(properties['duration'] AS DOUBLE) IS NOT NULL",
               max_violation_ratio=0.1),
    ),
    description="Every valid event from the `events` topic, parsed, with its Kafka position. "
    "Records that are not valid events land in `dead_letter_queue` with the reason, in the "
    "same micro-batch, so each record lands exactly once in one of the two.",
    column_descriptions={
        "event_id": "The producer's id of the event.",
        "event_type": "What happened (click, view, purchase, ...); the partition column.",
        "user_id": "Who did it, when known.",
        "timestamp": "When it happened (event time, UTC).",
        "properties": "Free-form string properties, e.g. duration.",
        "topic": "Kafka topic of the record.",
        "partition": "Kafka partition of the record.",
        "offset": "Kafka offset: (topic, partition, offset) identifies the record.",
        "ingested_at": "When the micro-batch that wrote the row ran.",
    },
)

event_counts = StreamingTable(
    name="event_counts",
    late_rows_alert=LATE_ROWS_ALERT,
    sources={"events": upstream("raw_events")},
    transform=windows.tumbling_counts,
    sink=DeltaMerge(),
    keys=("window_start", "event_type"),
    description="Events and exact distinct users per event type in 5-minute windows "
    "(watermark 10 minutes), upserted as windows fill.",
    column_descriptions={**WINDOW_COLUMNS,
                         "unique_users": "Distinct user_id values of these events (exact)."},
)

event_duration_stats = StreamingTable(
    name="event_duration_stats",
    late_rows_alert=LATE_ROWS_ALERT,
    sources={"events": upstream("raw_events")},
    transform=windows.sliding_duration_stats,
    sink=DeltaMerge(),
    keys=("window_start", "event_type"),
    description="Average `properties.duration` per event type over 10-minute windows sliding "
    "by 5 minutes (watermark 10 minutes); non-numeric durations count in invalid_durations.",
    column_descriptions={
        **WINDOW_COLUMNS,
        "avg_duration": "Mean of the numeric properties.duration values (null when none).",
        "invalid_durations": "Events whose properties.duration is missing or not a number.",
    },
)

activity_sessions = StreamingTable(
    name="activity_sessions",
    late_rows_alert=LATE_ROWS_ALERT,
    sources={"events": upstream("raw_events")},
    transform=windows.activity_sessions,
    # Session windows cannot be updated in place by Spark (no update mode), so each session
    # is appended once, when the 30-minute watermark closes it.
    sink=DeltaAppend(),
    keys=("user_id", "session_start"),
    description="Per-user activity sessions (10-minute gap, watermark 30 minutes) with their "
    "first and last event by time.",
    column_descriptions={
        "user_id": "Whose session.",
        "session_start": "Time of the session's first event.",
        "session_end": "Time of its last event (the session closed 10 minutes later).",
        "events_in_session": "Events in the session.",
        "first_event": "event_type of the first event by time (then event_id).",
        "last_event": "event_type of the last event by time (then event_id).",
    },
)

impression_clicks = StreamingTable(
    name="impression_clicks",
    late_rows_alert=LATE_ROWS_ALERT,
    sources={
        "impressions": kafka_topic(schemas.IMPRESSION_TOPIC, schema=joins.IMPRESSION_RECORD,
                                   rules=joins.IMPRESSION_RULES),
        "clicks": kafka_topic(schemas.CLICK_TOPIC, schema=joins.CLICK_RECORD,
                              rules=joins.CLICK_RULES),
    },
    transform=joins.impression_clicks_of_records,
    # Outer stream-stream joins only emit in append mode: a row is final when written.
    sink=DeltaAppend(),
    keys=("impression_id", "click_id"),
    # Unclicked impressions have no click: that key is null by design.
    nullable_keys=("click_id",),
    description="Impressions left-joined to their clicks within 30 minutes (watermarks 10 "
    "minutes); an unclicked impression appears with was_clicked = false once the watermark "
    "passes. Impressions and clicks that cannot be used land in "
    "`impression_clicks_dead_letters` with the reason.",
    column_descriptions={
        "impression_id": "The impression's id.",
        "ad_id": "The ad shown.",
        "user_id": "Who saw it.",
        "impression_time": "When the ad was shown (UTC).",
        "click_id": "The click on it within 30 minutes; null for an unclicked impression.",
        "click_time": "When it was clicked; null for an unclicked impression.",
        "was_clicked": "Whether a click came within 30 minutes.",
    },
)

enriched_events = StreamingTable(
    name="enriched_events",
    sources={"events": upstream("raw_events"), "user_dimension": static("user_dimension")},
    transform=joins.enrich_events,
    partition_by=("event_type",),
    keys=("topic", "partition", "offset"),
    description="raw_events with the user's name, segment and registration date from "
    "user_dimension, read at its latest version for each micro-batch.",
    column_descriptions={
        **raw_events.column_descriptions,
        "user_name": "From user_dimension; null for a user it does not hold.",
        "user_segment": "From user_dimension; null for a user it does not hold.",
        "registration_date": "From user_dimension; null for a user it does not hold.",
    },
)

user_sessions = StreamingTable(
    name="user_sessions",
    late_rows_alert=LATE_ROWS_ALERT,
    sources={"events": upstream("raw_events")},
    transform=sessions.user_sessions,
    sink=DeltaMerge(stamp_column=None),
    keys=("user_id",),
    description="Each user's current session: a new session_id after 30 minutes without "
    "events, state expired after an hour; upserted on user_id.",
    column_descriptions={
        "user_id": "Whose session; one row per user.",
        "session_id": "The current session; a new one after 30 minutes without events.",
        "total_events": "Events in the current session.",
        "session_start": "Time of the current session's first event.",
        "last_event_time": "Time of the user's latest event.",
    },
)

TABLES: tuple[StreamingTable, ...] = (
    raw_events,
    event_counts,
    event_duration_stats,
    activity_sessions,
    impression_clicks,
    enriched_events,
    user_sessions,
)
