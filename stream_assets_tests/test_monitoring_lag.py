"""Kafka lag: broker offsets against the offsets the query has processed."""

from __future__ import annotations

import json

from stream_assets.monitoring.lag import (
    lag_by_partition,
    parse_offsets,
    processed_offsets,
    query_lag,
    topic_lag,
    total_lag,
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
