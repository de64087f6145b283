"""The events topic's parser on batch DataFrames: every record is an event or a dead letter
with its reason.

raw_events reads the topic through `catalog.event_records`: the project's JSON record parser
over the declared EVENT_RECORD and EVENT_RULES, in raw_events' columns. The reasons below are
written here from the contract (README, "Dead letters and metadata")."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from stream_assets.dev.generator import BAD_KINDS, GOOD, generate_events
from stream_assets.tables.catalog import TIMESTAMP_RANGE, UNUSABLE_EVENT_TYPE, event_records

KAFKA = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
    ]
)

# The contract for each kind of bad record, written independently of the parser.
EXPECTED_ERROR_PREFIX = {
    "invalid_json": "invalid JSON",
    "not_object": "not a JSON object",
    "missing_event_id": "missing event_id",
    "missing_timestamp": "missing timestamp",
    "bad_timestamp": "wrong type: timestamp must be an ISO-8601 timestamp",
    "wrong_type": "wrong type",
    "empty": "empty value",
    "null": "null value",
    "not_utf8": "value is not valid UTF-8",
}


NOT_ISO = "wrong type: timestamp must be an ISO-8601 timestamp"


def kafka_frame(spark, values):
    rows = [(b"k", v, "events", 0, i) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA)


def valid_events(parsed):
    """raw_events' rows of a parsed batch."""
    return parsed.where("error IS NULL").drop("key", "value", "error")


def dead_letters(parsed):
    """The refused records of a parsed batch, with their bytes."""
    return parsed.where("error IS NOT NULL").selectExpr("value AS raw_bytes", "error", "offset")


def parse_events(kafka):
    return event_records(kafka)


def test_every_bad_kind_has_an_expected_error():
    assert set(EXPECTED_ERROR_PREFIX) == set(BAD_KINDS)


def test_generated_records_split_exactly_into_events_and_dead_letters(spark):
    records = list(generate_events(400, bad_ratio=0.3, seed=7))
    parsed = parse_events(kafka_frame(spark, [r.value for r in records])).cache()
    good = {r.offset: r for r in valid_events(parsed).collect()}
    bad = {r.offset: r for r in dead_letters(parsed).collect()}

    assert not set(good) & set(bad)
    assert len(good) + len(bad) == len(records)
    for offset, record in enumerate(records):
        if record.kind == GOOD:
            row = good[offset]
            event = record.event
            assert row.event_id == event["event_id"]
            assert row.event_type == event["event_type"]
            assert row.user_id == event["user_id"]
            assert row.properties == event["properties"]
            expected_ts = datetime.fromisoformat(event["timestamp"]).astimezone(UTC)
            assert row.timestamp.replace(tzinfo=UTC) == expected_ts.replace(microsecond=(
                expected_ts.microsecond))
        else:
            row = bad[offset]
            assert row.error.startswith(EXPECTED_ERROR_PREFIX[record.kind]), (record, row.error)
            assert row.raw_bytes == record.value


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b'{"event_id": "a", "timestamp": "2026-01-01T00:00:00Z"', "invalid JSON"),
        # One JSON value is the record: text after it is not JSON.
        (b'{"event_id": "a", "timestamp": "2026-01-01T00:00:00Z"} x', "invalid JSON"),
        (b'{"event_id": "a", "timestamp": "2026-01-01T00:00:00Z"}{}', "invalid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'{"timestamp": "2026-01-01T00:00:00Z"}', "missing event_id"),
        (b'{"event_id": null, "timestamp": "2026-01-01T00:00:00Z"}', "missing event_id"),
        (b'{"event_id": "a"}', "missing timestamp"),
        (b'{"event_id": "a", "timestamp": "not a time"}', NOT_ISO),
        (b'{"event_id": "a", "timestamp": "12:00"}', NOT_ISO),
        (b'{"event_id": "a", "timestamp": "2026-02-30T00:00:00Z"}', NOT_ISO),
        (b'{"event_id": "a", "timestamp": "+99999-01-01T00:00:00Z"}', NOT_ISO),
        (b'{"event_id": "a", "timestamp": "0000-12-31T23:59:59Z"}', NOT_ISO),
        (b'{"event_id": "a", "timestamp": "0001-01-01T00:00:00+01:00"}', TIMESTAMP_RANGE),
        (b'{"event_id": "a", "timestamp": "9999-12-31T23:59:59-00:01"}', TIMESTAMP_RANGE),
        (b'{"event_id": 7, "timestamp": "2026-01-01T00:00:00Z"}',
         "wrong type: event_id must be a string"),
        (b'{"event_id": "a", "user_id": 7, "timestamp": "2026-01-01T00:00:00Z"}',
         "wrong type: user_id must be a string"),
        (b'{"event_id": "a", "timestamp": 1767225600}', NOT_ISO),
        (b'{"event_id": "a", "timestamp": "2026-01-01T00:00:00Z", "properties": {"d": 1}}',
         "wrong type: properties.d must be a string"),
        (b'{"event_id": "a", "timestamp": "2026-01-01T00:00:00Z", "properties": [1]}',
         "wrong type: properties must be an object"),
        (b'{"event_id": "a", "event_type": "", "timestamp": "2026-01-01T00:00:00Z"}',
         UNUSABLE_EVENT_TYPE),
        (b'{"event_id": "a", "event_type": "a\\u0000b", "timestamp": "2026-01-01T00:00:00Z"}',
         UNUSABLE_EVENT_TYPE),
        (b'{"event_id": "a", "event_type": "\\t", "timestamp": "2026-01-01T00:00:00Z"}',
         UNUSABLE_EVENT_TYPE),
        (b'{"event_id": "a", "event_type": "' + b"x" * 81 + b'", '
         b'"timestamp": "2026-01-01T00:00:00Z"}', UNUSABLE_EVENT_TYPE),
        # The schema's verdicts come first, in its order; then the rules, in theirs.
        (b'{"event_id": "a", "event_type": "", "timestamp": "yesterday"}', NOT_ISO),
        (b'{"event_id": "a", "event_type": "", "timestamp": "0001-01-01T00:00:00+01:00"}',
         UNUSABLE_EVENT_TYPE),
        (b'{"event_id": "a", "event_type": "", "timestamp": "2026-01-01T00:00:00Z", '
         b'"properties": {"d": 1}}', "wrong type: properties.d must be a string"),
        (b"", "empty value"),
        (None, "null value (tombstone)"),
        (b'{"event_id": "\xc3\x28", "timestamp": "2026-01-01T00:00:00Z"}',
         "value is not valid UTF-8"),
    ],
)
def test_bad_record_gets_its_reason(spark, value, error):
    rows = dead_letters(parse_events(kafka_frame(spark, [value]))).collect()
    assert [r.error for r in rows] == [error]


def test_optional_fields_may_be_missing_or_null(spark):
    value = json.dumps({"event_id": "a", "timestamp": "2026-01-01T10:00:00+02:00",
                        "user_id": None}).encode()
    rows = valid_events(parse_events(kafka_frame(spark, [value]))).collect()
    assert len(rows) == 1
    assert rows[0].user_id is None and rows[0].event_type is None and rows[0].properties is None
    assert rows[0].timestamp == datetime(2026, 1, 1, 8, 0)


def test_event_type_of_80_bytes_with_unicode_is_kept(spark):
    kind = "ü" * 40  # 80 UTF-8 bytes: the longest accepted partition value
    value = json.dumps({"event_id": "a", "event_type": kind,
                        "timestamp": "2026-01-01T00:00:00Z"}).encode()
    rows = valid_events(parse_events(kafka_frame(spark, [value]))).collect()
    assert [r.event_type for r in rows] == [kind]


def test_unicode_survives_parsing(spark):
    event = {"event_id": "ü-😀-\u2028", "timestamp": "2026-01-01T00:00:00Z",
             "properties": {"ключ": "значение"}}
    rows = valid_events(parse_events(kafka_frame(spark, [json.dumps(event).encode(),
                                                         json.dumps(event, ensure_ascii=False)
                                                         .encode()]))).collect()
    assert [r.event_id for r in rows] == [event["event_id"]] * 2
    assert rows[0].properties == event["properties"]


# What a lenient parser would read as an event stays refused.
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b'{"event_id": "a", "event_id": "b", "timestamp": "2026-01-01T00:00:00Z"}',
         "duplicate key: event_id"),
        (b"{'event_id': 'a', 'timestamp': '2026-01-01T00:00:00Z'}", "invalid JSON"),
        (b'{"event_id": "a", "timestamp": "2026-01-01T00:00:00Z", "n": NaN}', "invalid JSON"),
        (b'\xef\xbb\xbf{"event_id": "a", "timestamp": "2026-01-01T00:00:00Z"}', "invalid JSON"),
        (b'{"event_id": "a", "timestamp": "2026-01-01T00:00:00Z", '
         b'"properties": {"k": "1", "k": "2"}}', "duplicate key: properties.k"),
    ],
)
def test_json_that_only_a_lenient_parser_accepts_is_refused(spark, value, error):
    rows = dead_letters(parse_events(kafka_frame(spark, [value]))).collect()
    assert [r.error for r in rows] == [error]


@pytest.mark.parametrize(
    ("properties", "error"),
    [
        # A key that spells out a string type in the schema text.
        ({"a`: STRING, `b": 1}, "wrong type: properties.a`: STRING, `b must be a string"),
        ({"x: STRING": "ok", "y": 2}, "wrong type: properties.y must be a string"),
        ({"a": None}, "missing properties.a"),
        ({"a": {"b": "c"}}, "wrong type: properties.a must be a string"),
        ({"a": ["b"]}, "wrong type: properties.a must be a string"),
        ({"a": True}, "wrong type: properties.a must be a string"),
        ({"": 1.5}, "wrong type: properties. must be a string"),
    ],
)
def test_properties_with_any_value_that_is_not_a_string_are_rejected(spark, properties, error):
    value = json.dumps({"event_id": "a", "timestamp": "2026-01-01T00:00:00Z",
                        "properties": properties}).encode()
    rows = dead_letters(parse_events(kafka_frame(spark, [value]))).collect()
    assert [r.error for r in rows] == [error]


@pytest.mark.parametrize(
    "properties",
    [{}, {"a`: STRING, `b": "1"}, {"x: STRING": "ok", "`": "", "": "z", "ü é": "\u2028"},
     {"12": "n", "a b": "c", "k": "\\"}],
)
def test_properties_of_strings_keep_every_key(spark, properties):
    value = json.dumps({"event_id": "a", "timestamp": "2026-01-01T00:00:00Z",
                        "properties": properties}).encode()
    rows = valid_events(parse_events(kafka_frame(spark, [value]))).collect()
    assert [r.properties for r in rows] == [properties]


def test_a_refused_record_has_only_its_reason_and_its_bytes(spark):
    # The dead letters carry the raw record; no half-read field reaches a column.
    value = b'{"event_id": 7, "user_id": "u", "timestamp": "2026-01-01T00:00:00Z"}'
    row = parse_events(kafka_frame(spark, [value])).collect()[0]
    assert (row.event_id, row.user_id, row.timestamp, row.error, row.value) == (
        None, None, None, "wrong type: event_id must be a string", value)


def test_a_session_that_cannot_load_the_parser_is_told_how_to_get_it(spark, monkeypatch):
    from stream_assets.errors import MissingJars
    from stream_assets.records import json_records

    # A class name that no jar holds stands for a session started without the udf jar.
    monkeypatch.setattr(json_records, "PARSER_CLASS", "io.github.streamassets.udf.NotThere")
    with pytest.raises(MissingJars, match="stream-assets setup") as raised:
        parse_events(kafka_frame(spark, [b'{"event_id": "a"}']))
    assert "spark.jars" in str(raised.value)
