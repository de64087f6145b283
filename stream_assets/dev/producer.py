"""Write generated records to Kafka, optionally rate-limited, with a progress bar."""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, Producer

from stream_assets.dev.generator import Record
from stream_assets.errors import KafkaUnavailable
from stream_assets.resources.kafka import KafkaConnection


def produce(
    records: Iterable[Record],
    connection: KafkaConnection,
    *,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = False,
    timeout_s: float = 60.0,
) -> int:
    """Produce every record and wait until the broker has acknowledged all of them.

    Idempotent producer: a retry after a lost acknowledgement does not write a record twice,
    so tests can count on each generated record being in the topic exactly once.
    """
    config = dict(connection.client_config())
    config.update(
        {
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            "compression.type": "lz4",
            "message.timeout.ms": int(timeout_s * 1000),
        }
    )
    producer = Producer(config)
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg) -> None:
        if err is not None:
            failures.append(err.str())

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="msg", desc="producing", mininterval=0.5)
    started = time.monotonic()
    sent = 0
    for record in records:
        while True:
            try:
                producer.produce(record.topic, value=record.value, key=record.key,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        if bar is not None and sent % 1000 == 0:
            bar.update(1000)
        if rate:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                producer.poll(0)
                time.sleep(ahead)
        if sent % 10000 == 0:
            producer.poll(0)
    remaining = producer.flush(timeout_s)
    if bar is not None:
        bar.update(sent - bar.n)
        bar.close()
    if remaining or failures:
        raise KafkaUnavailable(
            f"{remaining + len(failures)} of {sent} records were not acknowledged by "
            f"{connection.describe()} (first error: {failures[0] if failures else 'timeout'}); "
            "is the broker up? 'stream-assets kafka status' tells"
        )
    return sent


def topic_record_count(connection: KafkaConnection, topic: str, timeout_s: float = 10.0) -> int:
    """How many records a topic holds (high minus low watermark over its partitions)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**connection.client_config(), "group.id": "stream-assets-inspect",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=timeout_s)
            total += high - low
        return total
    finally:
        consumer.close()
