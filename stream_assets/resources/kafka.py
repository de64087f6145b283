"""Kafka as a stream source: connection settings and the streaming reader built from them."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr
from pyspark.sql import DataFrame, SparkSession

from stream_assets.errors import KafkaAuthenticationFailed, KafkaUnavailable

BOOTSTRAP_ENV = "STREAM_ASSETS_KAFKA_BOOTSTRAP"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
# How often the reachability check looks for a refused login while it waits for the broker.
_AUTH_POLL_S = 0.5

_quiet = logging.getLogger("stream_assets.kafka_client")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def default_bootstrap() -> str:
    return os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach a Kafka-protocol endpoint. `password` is a secret: never log or show it."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None

    def spark_options(self) -> dict[str, str]:
        options = {
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "kafka.security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["kafka.sasl.mechanism"] = self.sasl_mechanism
            options["kafka.sasl.jaas.config"] = self._jaas()
        return options

    def _jaas(self) -> str:
        def quoted(value: str | None) -> str:
            return '"' + (value or "").replace("\\", "\\\\").replace('"', '\\"') + '"'

        return (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f"username={quoted(self.username)} password={quoted(self.password)};"
        )

    def client_config(self) -> dict[str, object]:
        """The same connection for confluent-kafka (admin checks, the demo producer)."""
        config: dict[str, object] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "logger": _quiet,
        }
        if self.sasl_mechanism:
            config.update(
                {
                    "sasl.mechanisms": self.sasl_mechanism,
                    "sasl.username": self.username or "",
                    "sasl.password": self.password or "",
                }
            )
        return config

    def describe(self) -> str:
        """For messages: where and how, never the credentials."""
        auth = f", {self.security_protocol}/{self.sasl_mechanism}" if self.sasl_mechanism else ""
        return f"{self.bootstrap_servers}{auth}"


def check_reachable(
    connection: KafkaConnection,
    topics: tuple[str, ...],
    timeout_s: float,
    hint: str,
    auth_hint: str = "check the SASL user name and password",
) -> dict[str, int]:
    """Fail fast with a clear message instead of a Spark query that retries forever.

    Returns the partition count of every topic the broker holds, not only of `topics`, so that
    one look answers later questions about other topics (BrokerLook).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        # librdkafka reports a refused login only here: list_topics just waits and times out.
        if error.code() == KafkaError._AUTHENTICATION:
            refused.append(error)

    admin = AdminClient({**connection.client_config(), "error_cb": on_error})
    deadline = time.monotonic() + timeout_s
    while True:
        wait = min(_AUTH_POLL_S, deadline - time.monotonic())
        try:
            metadata = admin.list_topics(timeout=max(wait, 0.01))
            break
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb
            if refused:
                # Not librdkafka's text: the message must never risk carrying the secret.
                raise KafkaAuthenticationFailed(
                    f"the Kafka endpoint at {connection.describe()} refused the credentials "
                    f"(SASL authentication failed); {auth_hint}"
                ) from None
            if time.monotonic() < deadline:
                continue
            error = exc.args[0] if exc.args else None
            reason = error.str() if hasattr(error, "str") else type(exc).__name__
            raise KafkaUnavailable(
                f"no Kafka broker answered at {connection.describe()} within {timeout_s:g} s "
                f"({reason}); {hint}"
            ) from None
    missing = [t for t in topics if t not in metadata.topics]
    if missing:
        raise KafkaUnavailable(
            f"topic(s) {', '.join(missing)} do not exist at {connection.describe()}; create them "
            "(the local broker's 'stream-assets kafka start' does) or fix the topic name"
        )
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


class KafkaCompatibleSource(ConfigurableResource):
    """What every Kafka-protocol source shares: reading options, checks and the reader."""

    starting_offsets: str = Field(
        default="earliest",
        description="Where a new checkpoint starts: earliest, latest or a JSON offsets spec.",
    )
    max_offsets_per_trigger: int | None = Field(
        default=None, description="Cap on records per micro-batch (None: no cap)."
    )
    fail_on_data_loss: bool = Field(
        default=True,
        description="Fail when offsets the checkpoint expects are gone (topic deleted or "
        "retention expired) instead of silently skipping them.",
    )
    fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        description="The consumer's fetch.max.wait.ms. Kafka's 500 ms default stalls each task "
        "of a micro-batch that starts while a fetch past the end of its partition is still "
        "pending; a short wait keeps small batches fast and costs nothing between batches.",
    )
    connect_timeout_s: float = Field(default=10.0, description="Fail-fast broker check timeout.")
    extra_options: dict[str, str] = Field(
        default_factory=dict, description="Further Spark Kafka source options (kafka.* included)."
    )
    topic_names: dict[str, str] = Field(
        default_factory=dict,
        description="Broker-side name per logical topic, e.g. {'events': 'prod.events'}.",
    )

    # What this run asked the broker (BrokerLook). Dagster initializes a copy of the resource
    # for each run (ConfigurableResource), so the look lives exactly as long as the run.
    _look: BrokerLook | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # No teardown: it would make the resource a context manager for every user of it
        # (a sensor test's build_sensor_context among them); the look holds no connection.
        self._look = BrokerLook(self)

    def run_look(self) -> BrokerLook:
        """The broker as this run found it, asked once and shared by the run's steps; outside
        a Dagster run (a script, the CLI) a look of its own each time."""
        return self._look if self._look is not None else BrokerLook(self)

    def connection(self) -> KafkaConnection:
        raise NotImplementedError

    def topic_name(self, topic: str) -> str:
        """The broker-side name of a logical topic (Event Hubs maps it to its hub)."""
        return self.topic_names.get(topic, topic)

    def unreachable_hint(self) -> str:
        return "check the bootstrap address"

    def auth_hint(self) -> str:
        return "check the SASL user name and password"

    def check_reachable(self, topics: tuple[str, ...], timeout_s: float | None = None
                        ) -> dict[str, int]:
        """Fail fast (KafkaUnavailable, KafkaAuthenticationFailed) within `timeout_s`
        (default: `connect_timeout_s`) unless the broker answers and holds the topics."""
        return check_reachable(
            self.connection(),
            tuple(self.topic_name(t) for t in topics),
            self.connect_timeout_s if timeout_s is None else timeout_s,
            self.unreachable_hint(),
            self.auth_hint(),
        )

    def offsets(self, topic: str) -> dict[str, tuple[int, int]]:
        """Per partition, (earliest, latest) offsets held by the broker right now.

        Measured from the broker, for Kafka lag and for where a new checkpoint starts.
        """
        from confluent_kafka import Consumer, TopicPartition

        name = self.topic_name(topic)
        consumer = Consumer(
            {**self.connection().client_config(), "group.id": "stream-assets-offsets",
             "enable.auto.commit": False}
        )
        try:
            metadata = consumer.list_topics(name, timeout=self.connect_timeout_s)
            partitions = metadata.topics[name].partitions if name in metadata.topics else {}
            return {
                str(p): consumer.get_watermark_offsets(
                    TopicPartition(name, p), timeout=self.connect_timeout_s
                )
                for p in sorted(partitions)
            }
        finally:
            consumer.close()

    def spark_options(self, topic: str, batch_limit: int | None = None) -> dict[str, str]:
        """Spark's Kafka options for `topic`; `batch_limit` caps a micro-batch's records when
        the resource sets no cap of its own (the continuous job's bounded first batches)."""
        options = self.connection().spark_options()
        options.update(
            {
                "subscribe": self.topic_name(topic),
                "startingOffsets": self.starting_offsets,
                "failOnDataLoss": str(self.fail_on_data_loss).lower(),
                "kafka.fetch.max.wait.ms": str(self.fetch_max_wait_ms),
            }
        )
        cap = self.max_offsets_per_trigger or batch_limit
        if cap:
            options["maxOffsetsPerTrigger"] = str(cap)
        options.update(self.extra_options)
        return options

    def read_stream(self, spark: SparkSession, topic: str, batch_limit: int | None = None
                    ) -> DataFrame:
        """The raw Kafka DataFrame: key, value, topic, partition, offset, timestamp, headers."""
        options = self.spark_options(topic, batch_limit)
        return spark.readStream.format("kafka").options(**options).load()


class BrokerLook:
    """What a catch-up run asks a broker, each question asked once: whether it answers and
    holds the topics, and where each topic's offsets are.

    A run of several tables used to open an admin client and a consumer per table and topic
    (issue 15). The run's steps share one look instead (KafkaCompatibleSource.run_look): one
    metadata request answers reachability for every topic, and each topic's offsets are read
    once, so every table of the run compares its checkpoint with the same broker positions.
    Records that arrive later are the next run's. Live measures (lag in continuous runs, the
    sensors) ask the source itself, never a look.
    """

    def __init__(self, source: KafkaCompatibleSource) -> None:
        self.source = source
        self._partitions: dict[str, int] = {}
        self._offsets: dict[str, dict[str, tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def topic_name(self, topic: str) -> str:
        return self.source.topic_name(topic)

    def check_reachable(self, topics: tuple[str, ...]) -> None:
        """Fail fast (KafkaUnavailable) unless the broker answered and holds every topic.

        A topic the first answer did not list is asked again: it may have been created since.
        """
        with self._lock:
            if any(self.topic_name(t) not in self._partitions for t in topics):
                self._partitions = self.source.check_reachable(topics)

    def offsets(self, topic: str) -> dict[str, tuple[int, int]]:
        """Per partition, (earliest, latest) offsets, as the broker held them when first asked."""
        with self._lock:
            if topic not in self._offsets:
                self._offsets[topic] = self.source.offsets(topic)
            return self._offsets[topic]


class KafkaSource(KafkaCompatibleSource):
    """A Kafka cluster. Plain by default; SASL/PLAIN with a password from `dagster.EnvVar`."""

    bootstrap_servers: str = Field(
        default_factory=default_bootstrap,
        description=f"host:port list; default ${BOOTSTRAP_ENV} or {DEFAULT_BOOTSTRAP}.",
    )
    security_protocol: str = Field(default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_SSL…")
    sasl_mechanism: str | None = Field(default=None, description="PLAIN when SASL is used.")
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: str | None = Field(default=None, description="Secret: pass a dagster.EnvVar.")

    def connection(self) -> KafkaConnection:
        return KafkaConnection(
            bootstrap_servers=self.bootstrap_servers,
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            username=self.sasl_username,
            password=self.sasl_password,
        )

    def unreachable_hint(self) -> str:
        return (
            "start one with 'stream-assets kafka start' or set "
            f"{BOOTSTRAP_ENV} to a broker that runs"
        )

    def auth_hint(self) -> str:
        return "check sasl_username and sasl_password (pass the password as a dagster.EnvVar)"
