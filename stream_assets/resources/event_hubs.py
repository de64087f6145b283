"""Azure Event Hubs read through its Kafka endpoint, configured by a connection string."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from pydantic import Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stream_assets.errors import InvalidConnectionString
from stream_assets.resources.kafka import KafkaCompatibleSource, KafkaConnection

KAFKA_PORT = 9093
# Event Hubs' Kafka endpoint takes this literal user name with the connection string as password.
CONNECTION_STRING_USER = "$ConnectionString"


@dataclass(frozen=True)
class EventHubsAddress:
    namespace_host: str
    entity_path: str | None


def parse_connection_string(connection_string: str) -> EventHubsAddress:
    """Validate a connection string; errors name what is missing, never the key."""
    if not connection_string or not connection_string.strip():
        raise InvalidConnectionString("the Event Hubs connection string is empty")
    parts: dict[str, str] = {}
    for piece in connection_string.strip().strip(";").split(";"):
        name, sep, value = piece.partition("=")
        if not sep:
            raise InvalidConnectionString(
                "the Event Hubs connection string has a part without '=' (expected "
                "Endpoint=sb://NAMESPACE.servicebus.windows.net/;SharedAccessKeyName=...;"
                "SharedAccessKey=...;EntityPath=HUB)"
            )
        parts[name.strip().lower()] = value.strip()
    problems = []
    endpoint = parts.get("endpoint", "")
    host = ""
    if not endpoint:
        problems.append("Endpoint is missing")
    else:
        parsed = urlparse(endpoint)
        host = parsed.hostname or ""
        if parsed.scheme != "sb" or not host:
            problems.append("Endpoint must look like sb://NAMESPACE.servicebus.windows.net/")
    has_signature = bool(parts.get("sharedaccesssignature"))
    if not has_signature:
        if not parts.get("sharedaccesskeyname"):
            problems.append("SharedAccessKeyName is missing")
        if not parts.get("sharedaccesskey"):
            problems.append("SharedAccessKey is missing or empty")
    if problems:
        raise InvalidConnectionString(
            "malformed Event Hubs connection string: " + "; ".join(problems)
        )
    return EventHubsAddress(namespace_host=host, entity_path=parts.get("entitypath") or None)


class EventHubsSource(KafkaCompatibleSource):
    """An Event Hub read through the namespace's Kafka endpoint (SASL_SSL, PLAIN).

    Besides Kafka's columns, the stream carries Event Hubs' own names: body, enqueuedTime,
    offset, sequenceNumber, partition.
    """

    connection_string: str = Field(
        description="Secret: pass dagster.EnvVar('EVENTHUB_CONNECTION_STRING')."
    )
    event_hub: str | None = Field(
        default=None, description="The hub to read; default the string's EntityPath."
    )
    security_protocol: str = Field(
        default="SASL_SSL", description="SASL_SSL for Azure; SASL_PLAINTEXT only for local tests."
    )
    bootstrap_servers: str | None = Field(
        default=None, description="Override NAMESPACE.servicebus.windows.net:9093 (local tests)."
    )

    def address(self) -> EventHubsAddress:
        return parse_connection_string(self.connection_string)

    def connection(self) -> KafkaConnection:
        address = self.address()
        return KafkaConnection(
            bootstrap_servers=self.bootstrap_servers or f"{address.namespace_host}:{KAFKA_PORT}",
            security_protocol=self.security_protocol,
            sasl_mechanism="PLAIN",
            username=CONNECTION_STRING_USER,
            password=self.connection_string,
        )

    def topic_name(self, topic: str) -> str:
        hub = self.event_hub or self.address().entity_path
        if not hub:
            raise InvalidConnectionString(
                "no Event Hub named: the connection string has no EntityPath and event_hub is unset"
            )
        return hub

    def unreachable_hint(self) -> str:
        return "check the namespace in the connection string and that port 9093 is reachable"

    def auth_hint(self) -> str:
        return (
            "check the connection string's SharedAccessKeyName and SharedAccessKey (copy it "
            "again from the namespace's or hub's shared access policies; the policy needs "
            "Listen rights)"
        )

    def read_stream(self, spark: SparkSession, topic: str, batch_limit: int | None = None
                    ) -> DataFrame:
        kafka = super().read_stream(spark, topic, batch_limit)
        # The Kafka endpoint exposes the hub's sequence number as the Kafka offset.
        return kafka.withColumns(
            {
                "body": F.col("value"),
                "enqueuedTime": F.col("timestamp"),
                "sequenceNumber": F.col("offset"),
            }
        )
