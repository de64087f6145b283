"""The project's streaming tables, each declared once."""

from __future__ import annotations

from pyspark.sql import DataFrame

from stream_assets import schemas
from stream_assets.tables.declaration import (
    DeltaAppend,
    DeltaMerge,
    StreamingTable,
    WithDeadLetters,
    kafka_topic,
    upstream,
)
from stream_assets.transforms import joins, sessions, windows
from stream_assets.transforms.events import parse_events

raw_events = StreamingTable(
    name="raw_events",
    sources=(kafka_topic(schemas.EVENT_TOPIC),),
    transform=parse_events,
    sink=WithDeadLetters(dead_letter_table="dead_letter_queue", partition_by=("event_type",)),
    description="Every valid event from the `events` topic, parsed, with its Kafka position. "
    "Records that are not valid events land in `dead_letter_queue` with the reason, in the "
    "same micro-batch, so each record lands exactly once in one of the two.",
    keys=("topic", "partition", "offset"),
)

event_counts = StreamingTable(
    name="event_counts",
    sources=(upstream("raw_events"),),
    transform=windows.tumbling_counts,
    sink=DeltaMerge(keys=("window_start", "event_type")),
    description="Events and exact distinct users per event type in 5-minute windows "
    "(watermark 10 minutes), upserted as windows fill.",
    keys=("window_start", "event_type"),
)

event_duration_stats = StreamingTable(
    name="event_duration_stats",
    sources=(upstream("raw_events"),),
    transform=windows.sliding_duration_stats,
    sink=DeltaMerge(keys=("window_start", "event_type")),
    description="Average `properties.duration` per event type over 10-minute windows sliding "
    "by 5 minutes (watermark 10 minutes); non-numeric durations count in invalid_durations.",
    keys=("window_start", "event_type"),
)

activity_sessions = StreamingTable(
    name="activity_sessions",
    sources=(upstream("raw_events"),),
    transform=windows.activity_sessions,
    # Session windows cannot be updated in place by Spark (no update mode), so each session
    # is appended once, when the 30-minute watermark closes it.
    sink=DeltaAppend(),
    description="Per-user activity sessions (10-minute gap, watermark 30 minutes) with their "
    "first and last event by time.",
    keys=("user_id", "session_start"),
)


def _impression_clicks(impressions: DataFrame, clicks: DataFrame) -> DataFrame:
    return joins.impression_clicks(
        joins.parse_impressions(impressions), joins.parse_clicks(clicks)
    )


impression_clicks = StreamingTable(
    name="impression_clicks",
    sources=(kafka_topic(schemas.IMPRESSION_TOPIC), kafka_topic(schemas.CLICK_TOPIC)),
    transform=_impression_clicks,
    # Outer stream-stream joins only emit in append mode: a row is final when written.
    sink=DeltaAppend(),
    description="Impressions left-joined to their clicks within 30 minutes (watermarks 10 "
    "minutes); an unclicked impression appears with was_clicked = false once the watermark "
    "passes.",
    keys=("impression_id", "click_id"),
)

enriched_events = StreamingTable(
    name="enriched_events",
    sources=(upstream("raw_events"),),
    static=("user_dimension",),
    transform=joins.enrich_events,
    sink=DeltaAppend(partition_by=("event_type",)),
    description="raw_events with the user's name, segment and registration date from "
    "user_dimension, read at its latest version for each micro-batch.",
    keys=("topic", "partition", "offset"),
)

user_sessions = StreamingTable(
    name="user_sessions",
    sources=(upstream("raw_events"),),
    transform=sessions.user_sessions,
    sink=DeltaMerge(keys=("user_id",), stamp_column=None),
    description="Each user's current session: a new session_id after 30 minutes without "
    "events, state expired after an hour; upserted on user_id.",
    keys=("user_id",),
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
