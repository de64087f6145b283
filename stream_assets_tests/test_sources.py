"""Kafka and Event Hubs source settings: the Spark options they produce, and their errors."""

from __future__ import annotations

import pytest

from stream_assets.errors import InvalidConnectionString
from stream_assets.resources import EventHubsSource, KafkaSource
from stream_assets.resources.event_hubs import parse_connection_string

KEY = "c2VjcmV0LWtleS1kby1ub3QtbGVhaw=="
GOOD = (
    "Endpoint=sb://my-namespace.servicebus.windows.net/;SharedAccessKeyName=listen;"
    f"SharedAccessKey={KEY};EntityPath=clickstream"
)


def test_event_hubs_string_becomes_kafka_endpoint_options():
    options = EventHubsSource(connection_string=GOOD).spark_options("events")
    assert options["kafka.bootstrap.servers"] == "my-namespace.servicebus.windows.net:9093"
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["kafka.sasl.mechanism"] == "PLAIN"
    assert options["subscribe"] == "clickstream"
    jaas = options["kafka.sasl.jaas.config"]
    assert jaas.startswith("org.apache.kafka.common.security.plain.PlainLoginModule required ")
    assert 'username="$ConnectionString"' in jaas
    assert f'password="{GOOD}";' in jaas


def test_event_hub_name_overrides_entity_path_and_is_required_without_it():
    no_entity = GOOD.replace(";EntityPath=clickstream", "")
    assert EventHubsSource(connection_string=no_entity, event_hub="other").topic_name("x") == (
        "other"
    )
    with pytest.raises(InvalidConnectionString, match="EntityPath"):
        EventHubsSource(connection_string=no_entity).spark_options("events")


@pytest.mark.parametrize(
    ("connection_string", "complaint"),
    [
        ("", "empty"),
        ("just-a-key-" + KEY.rstrip("="), "without '='"),
        (f"SharedAccessKeyName=listen;SharedAccessKey={KEY}", "Endpoint is missing"),
        (f"Endpoint=https://x.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey={KEY}",
         "Endpoint must look like sb://"),
        ("Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=",
         "SharedAccessKey is missing or empty"),
        (f"Endpoint=sb://x.servicebus.windows.net/;SharedAccessKey={KEY}",
         "SharedAccessKeyName is missing"),
    ],
)
def test_malformed_connection_string_names_the_problem_never_the_key(connection_string,
                                                                     complaint):
    with pytest.raises(InvalidConnectionString) as raised:
        parse_connection_string(connection_string)
    message = str(raised.value)
    assert complaint in message
    assert KEY not in message and KEY[:12] not in message


def test_event_hubs_columns_are_exposed(spark):
    # The reader is lazy until start; its schema already shows the Event Hubs names.
    source = EventHubsSource(connection_string=GOOD)
    frame = source.read_stream(spark, "events")
    assert {"body", "enqueuedTime", "offset", "sequenceNumber", "partition"} <= set(frame.columns)


def test_kafka_source_maps_logical_topics_and_keeps_fail_on_data_loss():
    options = KafkaSource(bootstrap_servers="b:1", topic_names={"events": "prod.events"},
                          max_offsets_per_trigger=1000).spark_options("events")
    assert options["subscribe"] == "prod.events"
    assert options["failOnDataLoss"] == "true"
    assert options["startingOffsets"] == "earliest"
    assert options["maxOffsetsPerTrigger"] == "1000"
    assert "kafka.sasl.jaas.config" not in options
    # The continuous job's cap applies only where the resource sets none.
    source = KafkaSource(bootstrap_servers="b:1")
    assert "maxOffsetsPerTrigger" not in source.spark_options("events")
    assert source.spark_options("events", batch_limit=500)["maxOffsetsPerTrigger"] == "500"
    capped = KafkaSource(bootstrap_servers="b:1", max_offsets_per_trigger=1000)
    assert capped.spark_options("events", batch_limit=500)["maxOffsetsPerTrigger"] == "1000"
    # Not Kafka's 500 ms: a micro-batch's tasks would wait on the fetch left pending by the last.
    assert options["kafka.fetch.max.wait.ms"] == "20"
    custom = KafkaSource(bootstrap_servers="b:1", fetch_max_wait_ms=100,
                         extra_options={"kafka.fetch.min.bytes": "1"}).spark_options("events")
    assert (custom["kafka.fetch.max.wait.ms"], custom["kafka.fetch.min.bytes"]) == ("100", "1")


def test_kafka_sasl_password_is_not_in_its_description():
    source = KafkaSource(bootstrap_servers="b:1", security_protocol="SASL_SSL",
                         sasl_mechanism="PLAIN", sasl_username="u", sasl_password="hunter2")
    assert "hunter2" not in source.connection().describe()
    assert "hunter2" in source.spark_options("events")["kafka.sasl.jaas.config"]
