"""Typed Dagster resources: the Spark session and the stream sources."""

from stream_assets.resources.event_hubs import EventHubsSource
from stream_assets.resources.kafka import KafkaCompatibleSource, KafkaSource
from stream_assets.resources.lake import DeltaLake
from stream_assets.resources.spark import SparkResource

__all__ = [
    "DeltaLake",
    "EventHubsSource",
    "KafkaCompatibleSource",
    "KafkaSource",
    "SparkResource",
]
