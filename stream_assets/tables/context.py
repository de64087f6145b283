"""What a table's query runs with: the session, the lake and the run's resources.

Its own module so that the runner and the checkpoint guard, which both take it, do not
import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from stream_assets.resources.kafka import BrokerLook, KafkaCompatibleSource
from stream_assets.resources.lake import DeltaLake
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.sources import DEFAULT_KAFKA_RESOURCE, ReadContext


@dataclass
class StreamContext:
    """The resources a query needs."""

    spark: SparkSession
    lake: DeltaLake
    source: KafkaCompatibleSource | None
    # Every resource of the run by key, for sources that name their own (a second Kafka
    # cluster); `source` is the default one, bound to stream_source.
    resources: Mapping[str, Any] = field(default_factory=dict)
    # Cap on a micro-batch's Kafka records where the source resource sets none (ReadContext).
    kafka_batch_limit: int | None = None

    @classmethod
    def of_run(cls, spark: SparkSession, resources: Mapping[str, Any],
               kafka_batch_limit: int | None = None) -> StreamContext:
        """The context of a Dagster run, a catch-up asset's step or the continuous job's op,
        from its resources by key (the lake, the default Kafka resource and any other)."""
        return cls(spark=spark, lake=resources["lake"],
                   source=resources.get(DEFAULT_KAFKA_RESOURCE), resources=dict(resources),
                   kafka_batch_limit=kafka_batch_limit)

    def __post_init__(self) -> None:
        if self.spark is not None:  # None in tests of what runs before Spark
            self.lake.attach(self.spark)

    def table_paths(self, table: StreamingTable) -> dict[str, str]:
        return {t: self.lake.table_path(t) for t in table.tables}

    def kafka_topics(self, table: StreamingTable
                     ) -> list[tuple[KafkaCompatibleSource, tuple[str, ...]]]:
        """The table's Kafka topics grouped by the resource each is read through."""
        reading = self.read_context(table)
        return [(reading.kafka(key), topics)
                for key, topics in table.kafka_topics_by_resource.items()]

    def run_looks(self, table: StreamingTable) -> list[tuple[BrokerLook, tuple[str, ...]]]:
        """The table's Kafka topics with the run's look at each broker: what a catch-up run
        asks, asked once for all its tables (BrokerLook). Live measures use kafka_topics."""
        return [(kafka.run_look(), topics) for kafka, topics in self.kafka_topics(table)]

    def check_reachable(self, table: StreamingTable) -> None:
        for kafka, topics in self.kafka_topics(table):
            kafka.check_reachable(topics)

    def read_context(self, table: StreamingTable) -> ReadContext:
        default = {DEFAULT_KAFKA_RESOURCE: self.source} if self.source is not None else {}
        resources = {**default, **self.resources}
        return ReadContext(self.spark, self.lake, resources, table.name, self.kafka_batch_limit)
