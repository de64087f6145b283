"""The project's streaming tables, each declared once."""

from __future__ import annotations

from stream_assets import schemas
from stream_assets.tables.declaration import StreamingTable, WithDeadLetters, kafka_topic
from stream_assets.transforms.events import parse_events

raw_events = StreamingTable(
    name="raw_events",
    sources=(kafka_topic(schemas.EVENT_TOPIC),),
    transform=parse_events,
    sink=WithDeadLetters(dead_letter_table="dead_letter_queue", partition_by=("event_type",)),
    description="Every valid event from the `events` topic, parsed, with its Kafka position. "
    "Records that are not valid events land in `dead_letter_queue` with the reason, in the "
    "same micro-batch, so each record lands exactly once in one of the two.",
    keys=("topic", "partition", "offset"),
)

TABLES: tuple[StreamingTable, ...] = (raw_events,)
