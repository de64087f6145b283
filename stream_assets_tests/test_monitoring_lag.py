"""Input waiting: Kafka broker offsets, and upstream Delta versions, against what the query
has processed."""

from __future__ import annotations

import json

from stream_assets.monitoring.lag import (
    DeltaPosition,
    delta_positions,
    lag_by_partition,
    parse_delta_offset,
    parse_offsets,
    processed_offsets,
    query_lag,
    topic_lag,
    total_lag,
    versions_waiting,
)


def progress_with(end_offset: dict, description: str = "KafkaV2[Subscribe[events]]") -> dict:
    return {"sources": [{"description": description, "endOffset": json.dumps(end_offset)}]}


def test_lag_is_latest_minus_next_offset_per_partition():
    lag = topic_lag("events", {"0": (0, 100), "1": (0, 50)}, {"0": 90, "1": 50})
    assert lag.partitions == {"0": 10, "1": 0}
    assert lag.total == 10


def test_partition_never_read_lags_by_everything_the_broker_holds():
    lag = topic_lag("events", {"0": (20, 100), "1": (0, 5)}, {"0": 100})
    assert lag.partitions == {"0": 0, "1": 5}


def test_offsets_lost_to_retention_never_count_as_negative_or_unreadable_lag():
    lag = topic_lag("events", {"0": (500, 800)}, {"0": 100})
    assert lag.partitions == {"0": 300}
    assert topic_lag("events", {"0": (0, 10)}, {"0": 12}).partitions == {"0": 0}


def test_processed_offsets_come_from_kafka_sources_of_the_progress_only():
    progress = {
        "sources": [
            {"description": "KafkaV2[Subscribe[events]]",
             "endOffset": json.dumps({"events": {"0": 7, "1": 9}})},
            {"description": "DeltaSource[file:/tmp/raw_events]",
             "endOffset": {"sourceVersion": 1, "reservoirVersion": 3}},
        ]
    }
    assert processed_offsets(progress) == {"events": {"0": 7, "1": 9}}
    assert processed_offsets(None) == {}
    assert parse_offsets("not json") == {}


def test_query_lag_over_several_topics_totals_and_details():
    processed = processed_offsets(progress_with({"a": {"0": 5}, "b": {"0": 1, "1": 1}}))
    lags = query_lag({"a": {"0": (0, 10)}, "b": {"0": (0, 1), "1": (0, 4)}}, processed)
    assert total_lag(lags) == 8
    assert lag_by_partition(lags) == {"a": {"0": 5}, "b": {"0": 0, "1": 3}}


def delta_offset(version: int, index: int = -1, snapshot: bool = False) -> dict:
    """A Delta source's offset as Delta serializes it (DeltaSourceOffset, sourceVersion 1)."""
    return {"sourceVersion": 1, "reservoirId": "4f0c6c0e-0000-4000-8000-000000000001",
            "reservoirVersion": version, "index": index, "isStartingVersion": snapshot}


def test_delta_offset_is_read_from_json_text_or_dict_and_kafka_offsets_are_not_one():
    assert parse_delta_offset(json.dumps(delta_offset(7))) == DeltaPosition(7, -1, False)
    assert parse_delta_offset(delta_offset(3, 2, True)) == DeltaPosition(3, 2, True)
    assert parse_delta_offset({"events": {"0": 5}}) is None
    assert parse_delta_offset("not json") is None and parse_delta_offset(None) is None


def test_versions_from_the_next_unread_one_to_the_latest_wait():
    # (v, -1): versions before v are done, v itself not started
    assert versions_waiting(DeltaPosition(6), latest=5) == 0
    assert versions_waiting(DeltaPosition(6), latest=8) == 3
    # (v, i >= 0): v was split by a rate limit, so its remaining files still wait
    assert versions_waiting(DeltaPosition(6, index=0), latest=6) == 1
    assert versions_waiting(DeltaPosition(6, index=4), latest=8) == 3
    # inside the initial snapshot of v: the rest of the snapshot, and every later version
    assert versions_waiting(DeltaPosition(4, index=1, initial_snapshot=True), latest=5) == 2


def test_a_query_with_no_position_has_every_version_ahead_and_a_missing_table_none():
    assert versions_waiting(None, latest=2) == 3
    assert versions_waiting(DeltaPosition(3), latest=None) is None
    assert versions_waiting(None, latest=None) is None


def test_delta_positions_are_matched_to_upstream_tables_by_path():
    progress = {"sources": [
        {"description": "KafkaV2[Subscribe[events]]", "endOffset": {"events": {"0": 1}}},
        {"description": "DeltaSource[file:/lake/tables/raw_events]",
         "endOffset": delta_offset(9)},
        {"description": "DeltaSource[file:/lake/tables/clicks]",
         "endOffset": json.dumps(delta_offset(2, 0))},
    ]}
    paths = {"raw_events": "/lake/tables/raw_events/", "clicks": "file:///lake/tables/clicks"}
    assert delta_positions(progress, paths) == {
        "raw_events": DeltaPosition(9), "clicks": DeltaPosition(2, 0)}
    assert delta_positions(None, paths) == {}


def test_a_single_delta_source_spelt_differently_still_belongs_to_the_single_upstream():
    progress = {"sources": [{"description": "DeltaSource[file:/private/tmp/raw_events]",
                             "endOffset": delta_offset(4)}]}
    assert delta_positions(progress, {"raw_events": "/tmp/raw_events"}) == {
        "raw_events": DeltaPosition(4)}
    two = {"raw_events": "/tmp/raw_events", "clicks": "/tmp/clicks"}
    assert delta_positions(progress, two) == {}  # ambiguous: not guessed
