"""The demo pipeline's topics and table schemas, in one place (docs/architecture.md)."""

from __future__ import annotations

from pyspark.sql.types import (
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from stream_assets.tables.dead_letters import SCHEMA as DEAD_LETTERS

EVENT_TOPIC = "events"
IMPRESSION_TOPIC = "impressions"
CLICK_TOPIC = "clicks"
TOPICS = (EVENT_TOPIC, IMPRESSION_TOPIC, CLICK_TOPIC)

# Where a row came from in Kafka: (topic, partition, offset) identifies a record exactly once.
KAFKA_POSITION = [
    StructField("topic", StringType(), False),
    StructField("partition", IntegerType(), False),
    StructField("offset", LongType(), False),
]

RAW_EVENTS = StructType(
    [
        StructField("event_id", StringType(), False),
        StructField("event_type", StringType(), True),
        StructField("user_id", StringType(), True),
        StructField("timestamp", TimestampType(), False),
        StructField("properties", MapType(StringType(), StringType()), True),
        *KAFKA_POSITION,
        StructField("ingested_at", TimestampType(), False),
    ]
)

# The dead letters of every table share one shape (stream_assets/tables/dead_letters.py).
DEAD_LETTER_QUEUE = DEAD_LETTERS
