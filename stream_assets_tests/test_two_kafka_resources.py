"""One project reading a Kafka cluster and an Event Hubs namespace side by side: each source
names the resource it reads through (the broker's plain and SASL listeners stand in for both)."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, EnvVar, materialize

from stream_assets import StreamingTable, build_definitions, kafka_topic
from stream_assets.dev.generator import GOOD, generate_events
from stream_assets.dev.producer import produce
from stream_assets.resources import DeltaLake, EventHubsSource, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.catalog import event_records, raw_events

pytestmark = pytest.mark.integration

HUB_ENV = "STREAM_ASSETS_TEST_TELEMETRY_CONNECTION_STRING"

telemetry = StreamingTable(
    name="telemetry",
    sources={"events": kafka_topic("telemetry", parser=event_records, resource="event_hubs")},
    description="test: events from the Event Hubs namespace",
)


def test_tables_read_through_the_resource_their_source_names(
    kafka_broker, topic_factory, event_hubs_connection_string, spark_resource, spark, workdir,
    monkeypatch,
):
    events_topic, hub = topic_factory("events"), topic_factory("telemetry")
    plain = KafkaConnection(bootstrap_servers=kafka_broker.bootstrap)
    sent = {}
    for topic, seed in ((events_topic, 1), (hub, 2)):
        records = [r.__class__(topic, r.key, r.value, r.kind, r.event)
                   for r in generate_events(80, bad_ratio=0.1, seed=seed, id_prefix=topic)]
        produce(records, plain)
        sent[topic] = records
    monkeypatch.setenv(HUB_ENV, event_hubs_connection_string)
    lake = DeltaLake(tables_root=str(workdir / "tables"),
                     checkpoints_root=str(workdir / "checkpoints"))
    resources = {
        "spark": spark_resource, "lake": lake,
        "stream_source": KafkaSource(bootstrap_servers=kafka_broker.bootstrap,
                                     topic_names={"events": events_topic}),
        "event_hubs": EventHubsSource(connection_string=EnvVar(HUB_ENV), event_hub=hub,
                                      bootstrap_servers=kafka_broker.sasl_bootstrap,
                                      security_protocol="SASL_PLAINTEXT"),
    }
    defs = build_definitions([raw_events, telemetry], resources=resources)
    assets = [defs.resolve_assets_def(name) for name in ("raw_events", "telemetry")]
    # The definitions bind their resources to the assets.
    assert materialize(assets, instance=DagsterInstance.ephemeral()).success

    for table, topic in (("raw_events", events_topic), ("telemetry", hub)):
        ids = [r.event_id for r in
               spark.read.format("delta").load(lake.table_path(table)).collect()]
        expected = {r.event["event_id"] for r in sent[topic] if r.kind == GOOD}
        assert sorted(ids) == sorted(expected), table
    refused = spark.read.format("delta").load(lake.table_path("telemetry_dead_letters"))
    assert {r.topic for r in refused.collect()} == {hub}
    assert refused.count() == sum(1 for r in sent[hub] if r.kind != GOOD)
