"""A catch-up run with nothing to read starts no query (issue 15, item 1).

Real broker, Spark, Delta and Dagster, with the lake on the test S3 server (and a local
folder: fixtures_s3.TEST_LAKES; issue 14): raw_events (Kafka) and event_counts (a stateful
aggregation reading raw_events as a Delta stream) are materialized, then materialized again
with nothing new, then again after new records. What is compared and why a query started or
not is in the metadata; the tables' contents never change without new input.
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, materialize
from pyspark.sql.streaming import StreamingQueryListener

from stream_assets.dev.generator import GOOD, generate_events
from stream_assets.dev.producer import produce
from stream_assets.monitoring.catch_up_sensor import input_positions
from stream_assets.monitoring.measures import measure_backlog
from stream_assets.resources import KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.assets import build_asset
from stream_assets.tables.catalog import event_counts, raw_events
from stream_assets_tests.fixtures_s3 import delta_rs

pytestmark = pytest.mark.integration


class Starts(StreamingQueryListener):
    """The names of the queries the session started."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def onQueryStarted(self, event) -> None:
        self.names.append(event.name)

    def onQueryProgress(self, event) -> None:
        pass

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        pass


def test_nothing_new_starts_no_query_and_new_records_start_exactly_the_tables_they_reach(
    kafka_broker, topic_factory, spark_resource, spark, any_lake
):
    topic = topic_factory("events")
    lake = any_lake
    resources = {"spark": spark_resource, "lake": lake,
                 "stream_source": KafkaSource(bootstrap_servers=kafka_broker.bootstrap,
                                              topic_names={"events": topic})}
    connection = KafkaConnection(bootstrap_servers=kafka_broker.bootstrap)
    instance = DagsterInstance.ephemeral()
    assets = [build_asset(raw_events), build_asset(event_counts)]
    starts = Starts()
    spark.streams.addListener(starts)

    def send(count: int, seed: int) -> list:
        records = [r.__class__(topic, r.key, r.value, r.kind, r.event)
                   for r in generate_events(count, bad_ratio=0.1, seed=seed,
                                            id_prefix=f"s{seed}")]
        produce(records, connection)
        return records

    def run() -> dict[str, dict]:
        starts.names.clear()
        result = materialize(assets, resources=resources, instance=instance)
        assert result.success
        return {m.asset_key.to_user_string(): m.metadata
                for node in ("raw_events", "event_counts")
                for m in result.asset_materializations_for_node(node)}

    def contents(name: str) -> list:
        return sorted(map(str, delta_rs(lake, name).to_pyarrow_table().to_pylist()))

    sent = send(400, 1)
    first = run()
    assert sorted(starts.names) == ["event_counts", "raw_events"]
    assert first["raw_events"]["query_started"].value is True
    assert first["raw_events"]["query_started_because"].value == "no batch committed yet"
    before = {name: contents(name) for name in ("raw_events", "dead_letter_queue",
                                                "event_counts")}

    idle = run()
    assert starts.names == []  # no query started, so no batch and no Delta commit
    good = sum(1 for r in sent if r.kind == GOOD)
    for name, rows in (("raw_events", good), ("dead_letter_queue", len(sent) - good)):
        meta = idle[name]
        assert meta["query_started"].value is False
        assert meta["query_skipped_because"].value.startswith("nothing new since batch")
        assert meta["dagster/row_count"].value == rows
        assert meta["delta_version"].value == delta_rs(lake, name).version()
        assert meta["rows_read"].value == 0
    assert idle["raw_events"]["kafka_lag"].value == {topic: 0}
    assert idle["event_counts"]["query_started"].value is False
    assert idle["event_counts"]["upstream_versions_waiting"].value == {"raw_events": 0}
    assert {name: contents(name) for name in before} == before

    more = send(50, 2)
    third = run()
    assert sorted(starts.names) == ["event_counts", "raw_events"]
    assert third["raw_events"]["query_started_because"].value == f"50 records wait in {topic}"
    assert third["raw_events"]["rows_read"].value == 50
    assert "raw_events version(s) wait" in third["event_counts"]["query_started_because"].value
    good += sum(1 for r in more if r.kind == GOOD)
    assert len(delta_rs(lake, "raw_events").to_pyarrow_table()) == good

    # The catch-up sensor and the health sensor's backlog read the same logs without Spark.
    assert input_positions(raw_events, resources, lake) == {"kafka:events": len(sent) + 50}
    assert input_positions(event_counts, resources, lake) == {
        "delta:raw_events": delta_rs(lake, "raw_events").version()}
    assert measure_backlog(None, {"raw_events": lake.table_path("raw_events")}, None,
                           lake.checkpoint_path("event_counts"), lake.files) == {"raw_events": 0}
