"""Input and table schemas: the contracts in DESIGN.md, in one place."""

from __future__ import annotations

from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

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

DEAD_LETTER_QUEUE = StructType(
    [
        StructField("raw_value", StringType(), True),
        StructField("error", StringType(), False),
        StructField("error_time", TimestampType(), False),
        *KAFKA_POSITION,
        # The exact bytes: raw_value is lossy for bytes that are not UTF-8.
        StructField("raw_bytes", BinaryType(), True),
        StructField("key", BinaryType(), True),
    ]
)
