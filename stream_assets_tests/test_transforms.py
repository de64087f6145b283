"""The transforms against the plain-Python reference: batch DataFrames, and small streams where
only a stream shows the behaviour (state across micro-batches, watermarks, update mode)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from stream_assets.transforms import joins, sessions, windows
from stream_assets_tests import reference
from stream_assets_tests.reference import assert_rows_equal

# Python workers (user_sessions' stateful processor) must run this interpreter, which has
# pyarrow and protobuf, not whatever `python3` comes first on PATH. Read when the SparkContext
# starts, i.e. after collection, so setting it at import is early enough.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

EVENT_SCHEMA = (
    "event_id string, event_type string, user_id string, timestamp timestamp, "
    "properties map<string,string>, topic string, partition int, offset bigint, "
    "ingested_at timestamp"
)
# The columns of Spark's Kafka source that a topic's parser keeps.
KAFKA_SCHEMA = "key binary, value binary, topic string, partition int, offset bigint"
T0 = datetime(2024, 1, 1, 12, 0)


def iso(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat() + "Z"


def event(
    event_id: str, event_type: str, user_id: str | None, minutes: float, **properties: str
) -> dict[str, Any]:
    """A good event as producers send it, plus the raw_events Kafka columns."""
    return {
        "event_id": event_id,
        "event_type": event_type,
        "user_id": user_id,
        "timestamp": iso(minutes),
        "properties": properties,
        "topic": "events",
        "partition": 0,
        "offset": int(event_id.lstrip("e")),
        "ingested_at": T0,
    }


def _aware(moment: datetime) -> datetime:
    # PySpark reads a naive datetime as the machine's local time; an aware one is unambiguous.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def events_frame(spark: SparkSession, events: Iterable[Mapping[str, Any]]) -> DataFrame:
    rows = [
        {**e, "timestamp": _aware(reference.utc(e["timestamp"])), "ingested_at": _aware(T0)}
        for e in events
    ]
    columns = [field.split()[0] for field in EVENT_SCHEMA.split(", ")]
    return spark.createDataFrame([tuple(r[c] for c in columns) for r in rows], EVENT_SCHEMA)


def _naive_utc(value: Any) -> Any:
    # collect() gives naive datetimes in the machine's local time; the reference speaks UTC.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def collect(df: DataFrame) -> list[dict[str, Any]]:
    return [{k: _naive_utc(v) for k, v in row.asDict().items()} for row in df.collect()]


def kafka_frame(spark: SparkSession, values: Iterable[str | None], topic: str) -> DataFrame:
    rows = [
        (None, None if v is None else v.encode(), topic, 0, offset)
        for offset, v in enumerate(values)
    ]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


# --- event_counts ------------------------------------------------------------------------------

MIXED_EVENTS = [
    event("e1", "click", "u1", 0),
    event("e2", "click", "u1", 1),  # same user again: one distinct user
    event("e3", "click", "u2", 4.99),
    event("e4", "click", None, 2),  # no user: an event, not a user
    event("e5", "view", "u1", 3),
    event("e6", "click", "u3", 5),  # exactly on the boundary: the next window
    event("e7", "view", "u2", 9),
    event("e8", "view", "u2", 9.5),
]


def test_tumbling_counts_counts_distinct_users_exactly(spark: SparkSession) -> None:
    result = windows.tumbling_counts(events_frame(spark, MIXED_EVENTS))

    assert result.columns == [
        "window_start",
        "window_end",
        "event_type",
        "event_count",
        "unique_users",
    ]
    assert_rows_equal(collect(result), reference.event_counts(MIXED_EVENTS))


def test_tumbling_counts_of_many_users_are_exact_not_approximate(spark: SparkSession) -> None:
    # Large enough for approx_count_distinct (5% relative error by default) to drift.
    events = [event(f"e{i}", "view", f"u{i % 997}", (i % 50) / 10) for i in range(3000)]

    result = collect(windows.tumbling_counts(events_frame(spark, events)))

    assert result == [
        {
            "window_start": T0,
            "window_end": T0 + timedelta(minutes=5),
            "event_type": "view",
            "event_count": 3000,
            "unique_users": 997,
        }
    ]


# --- event_duration_stats ----------------------------------------------------------------------

DURATION_EVENTS = [
    event("e1", "play", "u1", 0, duration="12.5"),
    event("e2", "play", "u1", 1, duration=" 3 "),
    event("e3", "play", "u2", 2, duration="abc"),
    event("e4", "play", "u2", 3, duration="NaN"),
    event("e5", "play", "u3", 6, duration="1e999"),
    event("e6", "play", "u3", 7, duration=""),
    event("e7", "play", "u3", 8),  # no duration: counted, neither averaged nor invalid
    event("e8", "play", "u4", 11, duration="-2"),
    event("e9", "play", "u4", 12, duration=".5"),
    event("e10", "play", "u4", 13, duration="1d"),  # Java would parse it; not numeric here
    event("e11", "seek", "u5", 4, duration="0.1"),
    event("e12", "seek", "u5", 4.5, duration="0.2", page="/home"),
]


def test_sliding_duration_stats_average_numeric_durations_and_count_invalid_ones(
    spark: SparkSession,
) -> None:
    result = windows.sliding_duration_stats(events_frame(spark, DURATION_EVENTS))

    assert result.columns == [
        "window_start",
        "window_end",
        "event_type",
        "avg_duration",
        "event_count",
        "invalid_durations",
    ]
    expected = reference.event_duration_stats(DURATION_EVENTS)
    assert_rows_equal(collect(result), expected)
    # The reference itself, spot-checked: [12:00, 12:10) holds e1..e7 of "play".
    first = next(r for r in expected if r["window_start"] == T0 and r["event_type"] == "play")
    assert (first["avg_duration"], first["event_count"], first["invalid_durations"]) == (
        7.75,
        7,
        4,
    )


# --- activity_sessions -------------------------------------------------------------------------

SESSION_EVENTS = [
    event("e1", "login", "u1", 0),
    event("e2", "banner", "u1", 0),  # same time as e1: the event_id breaks the tie
    event("e3", "view", "u1", 4),
    event("e4", "click", "u1", 14),  # exactly the 10-minute gap: same session
    event("e5", "logout", "u1", 14),  # same time as e4
    event("e6", "login", "u1", 30),  # 16 minutes later: a new session
    event("e7", "view", "u2", 1),
    event("e8", "view", None, 2),  # nobody's session
]


def test_activity_sessions_split_after_ten_minutes_and_order_events_by_time(
    spark: SparkSession,
) -> None:
    result = windows.activity_sessions(events_frame(spark, SESSION_EVENTS))

    assert result.columns == [
        "user_id",
        "session_start",
        "session_end",
        "events_in_session",
        "first_event",
        "last_event",
    ]
    assert_rows_equal(collect(result), reference.activity_sessions(SESSION_EVENTS))


def test_activity_sessions_first_and_last_event_do_not_depend_on_arrival_order(
    spark: SparkSession,
) -> None:
    expected = reference.activity_sessions(SESSION_EVENTS)
    for order in (list(reversed(SESSION_EVENTS)), SESSION_EVENTS[3:] + SESSION_EVENTS[:3]):
        scrambled = events_frame(spark, order).repartition(3)

        assert_rows_equal(collect(windows.activity_sessions(scrambled)), expected)


# --- impressions and clicks --------------------------------------------------------------------

IMPRESSION_VALUES = [
    json.dumps({"impression_id": "i1", "ad_id": "a1", "user_id": "u1", "timestamp": iso(0)}),
    json.dumps(
        {
            "impression_id": "i2",
            "ad_id": "a2",
            "user_id": "u2",
            "timestamp": "2024-01-01T14:00:00.250+02:00",
        }
    ),
    json.dumps({"impression_id": "i3", "ad_id": "", "timestamp": iso(0)}),  # no user: kept
    json.dumps({"impression_id": "i4", "ad_id": "a1", "user_id": "u4", "timestamp": iso(0)}),
    json.dumps({"impression_id": "i5", "ad_id": "a3", "user_id": "u5", "timestamp": iso(0)}),
    json.dumps({"ad_id": "a1", "timestamp": iso(0)}),  # no impression_id
    json.dumps({"impression_id": "", "timestamp": iso(0)}),
    json.dumps({"impression_id": "i9", "ad_id": "a1"}),  # no timestamp
    json.dumps({"impression_id": "i9", "timestamp": "yesterday"}),
    json.dumps([{"impression_id": "i9", "timestamp": iso(0)}]),
    "not json",
    "42",
    None,  # a tombstone
]

CLICK_VALUES = [
    json.dumps({"click_id": "c1", "impression_id": "i1", "timestamp": iso(5)}),
    json.dumps({"click_id": "c2", "impression_id": "i1", "timestamp": iso(30)}),  # on the bound
    json.dumps({"click_id": "c3", "impression_id": "i2", "timestamp": iso(30)}),  # 29:59.75 after
    json.dumps({"click_id": "c4", "impression_id": "i3", "timestamp": iso(30.01)}),  # too late
    json.dumps({"click_id": "c5", "impression_id": "i4", "timestamp": iso(-1)}),  # before it
    json.dumps({"click_id": "c6", "impression_id": "i404", "timestamp": iso(1)}),  # unknown
    json.dumps({"click_id": "c7", "timestamp": iso(1)}),  # no impression_id
    json.dumps({"impression_id": "i1", "timestamp": iso(1)}),  # no click_id
    json.dumps({"click_id": "c9", "impression_id": "i1", "timestamp": "12:00"}),  # no date
    json.dumps({"click_id": "c10", "impression_id": "i1", "timestamp": "2024-13-01T00:00:00"}),
    "{broken",
]


def _reference_parse(
    values: Iterable[str | None], parse: Callable[[str | None], tuple[Any, Any]], topic: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    good, bad = [], []
    for offset, value in enumerate(values):
        row, error = parse(value)
        if row is not None:
            good.append(row)
        else:
            position = {"topic": topic, "partition": 0, "offset": offset}
            bad.append({"raw_value": value, "error": error, **position})
    return good, bad


def test_parse_impressions_keeps_good_records_and_rejects_the_rest_with_a_reason(
    spark: SparkSession,
) -> None:
    kafka = kafka_frame(spark, IMPRESSION_VALUES, "impressions")
    good, bad = _reference_parse(IMPRESSION_VALUES, reference.parse_impression, "impressions")

    parsed = joins.parse_impressions(kafka)
    assert parsed.columns == ["impression_id", "ad_id", "user_id", "impression_time"]
    assert_rows_equal(collect(parsed), good)
    assert_rows_equal(collect(joins.rejected_impressions(kafka)), bad)
    assert len(good) + len(bad) == len(IMPRESSION_VALUES)


def test_parse_clicks_keeps_good_records_and_rejects_the_rest_with_a_reason(
    spark: SparkSession,
) -> None:
    kafka = kafka_frame(spark, CLICK_VALUES, "clicks")
    good, bad = _reference_parse(CLICK_VALUES, reference.parse_click, "clicks")

    parsed = joins.parse_clicks(kafka)
    assert parsed.columns == ["click_id", "impression_id", "click_time"]
    assert_rows_equal(collect(parsed), good)
    assert_rows_equal(collect(joins.rejected_clicks(kafka)), bad)


def test_impression_clicks_match_clicks_within_thirty_minutes_only(spark: SparkSession) -> None:
    impressions = joins.parse_impressions(kafka_frame(spark, IMPRESSION_VALUES, "impressions"))
    clicks = joins.parse_clicks(kafka_frame(spark, CLICK_VALUES, "clicks"))

    result = joins.impression_clicks(impressions, clicks)

    assert result.columns == [
        "impression_id",
        "ad_id",
        "user_id",
        "impression_time",
        "click_id",
        "click_time",
        "was_clicked",
    ]
    good_impressions, _ = _reference_parse(IMPRESSION_VALUES, reference.parse_impression, "")
    good_clicks, _ = _reference_parse(CLICK_VALUES, reference.parse_click, "")
    expected = reference.impression_clicks(good_impressions, good_clicks)
    assert_rows_equal(collect(result), expected)
    # The reference itself, spot-checked: i1 twice (c1, c2 on the bound), i2 once, i3..i5 alone.
    assert sorted((r["impression_id"], r["click_id"]) for r in expected) == [
        ("i1", "c1"),
        ("i1", "c2"),
        ("i2", "c3"),
        ("i3", None),
        ("i4", None),
        ("i5", None),
    ]


# --- enriched_events ---------------------------------------------------------------------------

USERS = [
    {
        "user_id": "u1",
        "user_name": "Ada",
        "user_segment": "pro",
        "registration_date": date(2023, 5, 1),
    },
    {
        "user_id": "u2",
        "user_name": "Bo",
        "user_segment": "free",
        "registration_date": date(2023, 6, 2),
    },
    {
        "user_id": "u9",
        "user_name": "Cy",
        "user_segment": "free",
        "registration_date": date(2023, 7, 3),
    },
]


def test_enrich_events_adds_user_columns_and_keeps_events_of_unknown_users(
    spark: SparkSession,
) -> None:
    events = [
        event("e1", "view", "u1", 0, page="/home"),
        event("e2", "click", "u2", 1),
        event("e3", "view", "u404", 2),
        event("e4", "view", None, 3),
    ]
    users = spark.createDataFrame(
        [tuple(u.values()) for u in USERS],
        "user_id string, user_name string, user_segment string, registration_date date",
    )

    result = joins.enrich_events(events_frame(spark, events), users)

    assert result.columns == [
        "event_id",
        "event_type",
        "user_id",
        "timestamp",
        "properties",
        "topic",
        "partition",
        "offset",
        "ingested_at",
        "user_name",
        "user_segment",
        "registration_date",
    ]
    assert_rows_equal(collect(result), reference.enriched_events(events, USERS))


# --- streams -----------------------------------------------------------------------------------


def append_parquet(spark: SparkSession, df: DataFrame, folder: Path) -> None:
    """One new file in a folder a file stream reads: the next trigger picks it up."""
    df.coalesce(1).write.mode("append").parquet(str(folder))


def run_available_now(
    stream: DataFrame, checkpoint: Path, output_mode: str
) -> tuple[list[list[dict[str, Any]]], dict[str, Any]]:
    """Everything new since the checkpoint, then stop.

    Returns the rows of each micro-batch in order and the last batch's progress report.
    """
    batches: list[list[dict[str, Any]]] = []

    def keep(batch: DataFrame, batch_id: int) -> None:
        batches.append(collect(batch))

    query = (
        stream.writeStream.outputMode(output_mode)
        .foreachBatch(keep)
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    return batches, query.lastProgress


def upsert(table: dict[tuple, dict[str, Any]], batches: list[list[dict]], keys: tuple) -> None:
    """What a MERGE on `keys` leaves in the table after these micro-batches."""
    for batch in batches:
        for row in batch:
            table[tuple(row[k] for k in keys)] = row


def test_tumbling_counts_stream_in_update_mode_keeps_exact_counts_and_drops_late_events(
    spark: SparkSession, workdir: Path
) -> None:
    source = workdir / "raw_events"
    step1 = [
        event("e1", "click", "u1", 0),
        event("e2", "click", "u2", 2),
        event("e3", "view", "u1", 7),
        event("e4", "click", "u1", 25),
    ]
    # After step 1 the watermark is 12:25 - 10 min = 12:15: windows ending by then are final.
    step2 = [
        event("e5", "click", "u3", 3),  # window [12:00, 12:05) is closed: dropped as late
        event("e6", "click", "u3", 17),  # out of order, but its window is still open
        event("e7", "click", "u1", 26),  # updates a window emitted in step 1
        event("e8", "view", "u2", 40),
    ]
    counts = dict[tuple, dict[str, Any]]()
    for step in (step1, step2):
        append_parquet(spark, events_frame(spark, step), source)
        stream = windows.tumbling_counts(spark.readStream.schema(EVENT_SCHEMA).parquet(str(source)))
        batches, _ = run_available_now(stream, workdir / "checkpoint", "update")
        upsert(counts, batches, ("window_start", "event_type"))

    assert_rows_equal(counts.values(), reference.event_counts(step1 + step2, late={"e5"}))


def test_user_sessions_stream_starts_a_new_session_after_30_minutes_and_forgets_idle_users(
    spark: SparkSession, workdir: Path
) -> None:
    source = workdir / "raw_events"
    steps = [
        [
            event("e1", "view", "u1", 0),
            event("e2", "view", "u1", 10),
            event("e3", "view", "u2", 5),
            event("e4", "view", None, 6),  # no user: not part of the table
        ],
        # The watermark is now 12:10 - 10 min = 12:00.
        [
            event("e5", "view", "u1", 50),  # 40 minutes after e2: a new session for u1
            event("e6", "view", "u2", 30),  # 25 minutes after e3: u2's session goes on
            event("e7", "view", "u3", 45),
            # Before the watermark: dropped as late. (Even if it were not, it is over 30 minutes
            # before e3, so it could not change u2's current session.)
            event("e8", "view", "u2", -40),
        ],
        # Moves the watermark to 15:10, over an hour past u1's and u2's last events.
        [event("e9", "view", "u3", 200)],
    ]
    table = dict[tuple, dict[str, Any]]()
    seen, sent = [], []
    for step in steps:
        sent += step
        append_parquet(spark, events_frame(spark, step), source)
        stream = sessions.user_sessions(spark.readStream.schema(EVENT_SCHEMA).parquet(str(source)))
        batches, progress = run_available_now(stream, workdir / "checkpoint", "update")
        upsert(table, batches, ("user_id",))
        assert_rows_equal(table.values(), reference.user_sessions(sent, late={"e8"}))
        seen.append({user: row["session_id"] for (user,), row in table.items()})

    assert seen[1]["u1"] != seen[0]["u1"]
    assert seen[1]["u2"] == seen[0]["u2"]
    # The table keeps u1's and u2's last sessions; the state keeps only u3.
    assert progress["stateOperators"][0]["numRowsTotal"] == 1

    # The same events in one micro-batch, from a fresh checkpoint, as after a lost checkpoint
    # or a replay: the same rows and session ids, since the ids derive from the events alone.
    stream = sessions.user_sessions(spark.readStream.schema(EVENT_SCHEMA).parquet(str(source)))
    batches, _ = run_available_now(stream, workdir / "checkpoint2", "update")
    replayed = dict[tuple, dict[str, Any]]()
    upsert(replayed, batches, ("user_id",))
    assert replayed == table


def test_user_sessions_refuses_a_batch_dataframe_with_advice(spark: SparkSession) -> None:
    with pytest.raises(ValueError, match="availableNow"):
        sessions.user_sessions(events_frame(spark, [event("e1", "view", "u1", 0)]))


def test_impression_clicks_stream_emits_an_unclicked_impression_once_the_watermark_passes(
    spark: SparkSession, workdir: Path
) -> None:
    impression_dir, click_dir = workdir / "impressions", workdir / "clicks"

    def impression(impression_id: str, minutes: float) -> str:
        return json.dumps(
            {
                "impression_id": impression_id,
                "ad_id": "a1",
                "user_id": "u1",
                "timestamp": iso(minutes),
            }
        )

    def click(click_id: str, impression_id: str, minutes: float) -> str:
        return json.dumps(
            {"click_id": click_id, "impression_id": impression_id, "timestamp": iso(minutes)}
        )

    steps = [
        (
            [impression("i1", 0), impression("i2", 0)],
            [click("c1", "i1", 5), click("c2", "i2", 45)],
        ),  # c2 is outside i2's 30 minutes
        # Both inputs move two hours on: the watermark (12:00 + 110 min) passes i2's bound.
        ([impression("i3", 120)], [click("c3", "i3", 125)]),
    ]
    emitted: list[dict[str, Any]] = []
    after_step = []
    for impression_values, click_values in steps:
        append_parquet(spark, kafka_frame(spark, impression_values, "impressions"), impression_dir)
        append_parquet(spark, kafka_frame(spark, click_values, "clicks"), click_dir)
        joined = joins.impression_clicks(
            joins.parse_impressions(
                spark.readStream.schema(KAFKA_SCHEMA).parquet(str(impression_dir))
            ),
            joins.parse_clicks(spark.readStream.schema(KAFKA_SCHEMA).parquet(str(click_dir))),
        )
        batches, _ = run_available_now(joined, workdir / "checkpoint", "append")
        emitted.extend(row for batch in batches for row in batch)
        after_step.append({(r["impression_id"], r["was_clicked"]) for r in emitted})

    # After step 1 a click on i2 could still come (the watermark is 11:50): nothing for i2 yet.
    assert after_step[0] == {("i1", True)}
    all_impressions = [reference.parse_impression(v)[0] for values, _ in steps for v in values]
    all_clicks = [reference.parse_click(v)[0] for _, values in steps for v in values]
    assert_rows_equal(emitted, reference.impression_clicks(all_impressions, all_clicks))
    assert ("i2", False) in after_step[1]
