"""Records the checkpoint expects are gone from Kafka: fail loudly, never skip them silently.

KafkaSource(fail_on_data_loss=True) is the default on purpose: a deleted topic, a topic
recreated under the same name, or retention that deleted records before they were read all
stop the run with an error naming the table. Skipping what is gone is a decision someone takes
for one run (fail_on_data_loss=False); then everything Kafka still holds lands exactly once.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from dagster import materialize

from stream_assets.dev.generator import generate_events
from stream_assets.dev.producer import produce
from stream_assets.errors import KafkaUnavailable, StreamFailed
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.assets import build_asset
from stream_assets.tables.catalog import raw_events
from stream_assets_tests.fault_driver import actual_tables, broker_messages

pytestmark = pytest.mark.integration


class Pipeline:
    def __init__(self, broker, spark_resource, root, topic):
        self.broker, self.spark_resource = broker, spark_resource
        self.root, self.topic = root, topic
        self.lake = DeltaLake(tables_root=str(root / "tables"),
                              checkpoints_root=str(root / "checkpoints"))

    def send(self, count: int, seed: int) -> None:
        records = [r.__class__(self.topic, r.key, r.value, r.kind, r.event)
                   for r in generate_events(count, bad_ratio=0.1, seed=seed,
                                            id_prefix=f"loss-{seed}")]
        produce(records, KafkaConnection(bootstrap_servers=self.broker.bootstrap))

    def materialize(self, run_config=None, **source_settings):
        source = KafkaSource(bootstrap_servers=self.broker.bootstrap,
                             topic_names={"events": self.topic}, connect_timeout_s=5,
                             **source_settings)
        return materialize([build_asset(raw_events)], run_config=run_config, resources={
            "spark": self.spark_resource, "lake": self.lake, "stream_source": source})

    def positions(self, spark) -> Counter:
        return actual_tables(self.root / "tables").positions()


@pytest.fixture
def pipeline(kafka_broker, spark_resource, workdir):
    topic = f"loss-{uuid.uuid4().hex[:10]}"
    kafka_broker.create_topics([topic], partitions=3)
    yield Pipeline(kafka_broker, spark_resource, workdir, topic)
    kafka_broker.delete_topics([topic])


@pytest.fixture(scope="module")
def module_pipeline(kafka_broker, spark_resource, tmp_path_factory):
    topic = f"loss-{uuid.uuid4().hex[:10]}"
    kafka_broker.create_topics([topic], partitions=3)
    yield Pipeline(kafka_broker, spark_resource, tmp_path_factory.mktemp("expired"), topic)
    kafka_broker.delete_topics([topic])


def test_deleted_topic_fails_loudly_and_a_recreated_one_is_data_loss(pipeline, spark):
    pipeline.send(60, seed=1)
    assert pipeline.materialize().success

    pipeline.broker.delete_topics([pipeline.topic])
    with pytest.raises(KafkaUnavailable, match=f"{pipeline.topic}.* do not exist"):
        pipeline.materialize()

    # Same name, new topic: its offsets start again at 0, below what the checkpoint has read.
    pipeline.broker.create_topics([pipeline.topic], partitions=3)
    pipeline.send(30, seed=2)
    with pytest.raises(StreamFailed, match="raw_events") as raised:
        pipeline.materialize()
    assert "data may have been lost" in str(raised.value)

    # The documented way on: rebuild from what the topic holds now.
    assert pipeline.materialize(
        run_config={"ops": {"raw_events": {"config": {"full_refresh": True}}}}
    ).success
    held = set(broker_messages(pipeline.broker.bootstrap, pipeline.topic))
    positions = pipeline.positions(spark)
    assert set(positions) == held and max(positions.values()) == 1


@pytest.fixture(scope="module")
def expired(module_pipeline, spark):
    """Retention deleted records the checkpoint has not read yet; the default run has failed.

    Emulated with DeleteRecords (what retention does: advance the log start offset). Shared by
    the module's tests: the scenario costs three materializations.
    """
    pipeline = module_pipeline
    pipeline.send(90, seed=3)
    assert pipeline.materialize().success
    read_before = pipeline.positions(spark)
    pipeline.send(90, seed=4)
    admin = AdminClient({"bootstrap.servers": pipeline.broker.bootstrap,
                         "broker.address.family": "v4"})
    ends = {p: max([o for (q, o) in read_before if q == p], default=-1) + 1 for p in range(3)}
    cut = {p: end + 10 for p, end in ends.items()}  # 10 unread records gone per partition
    futures = admin.delete_records([TopicPartition(pipeline.topic, p, o) for p, o in cut.items()])
    for future in futures.values():
        future.result()
    with pytest.raises(StreamFailed) as raised:
        pipeline.materialize()
    return pipeline, read_before, ends, cut, raised.value


def test_expired_offsets_fail_loudly_by_default_and_are_skipped_only_on_purpose(expired, spark):
    pipeline, read_before, ends, cut, error = expired
    assert "raw_events" in str(error)
    assert pipeline.positions(spark) == read_before, "the failed run must not write anything"

    # Skipping what retention removed is a deliberate, per-run choice.
    assert pipeline.materialize(fail_on_data_loss=False).success
    held = set(broker_messages(pipeline.broker.bootstrap, pipeline.topic))
    lost = {(p, o) for p in range(3) for o in range(ends[p], cut[p])}
    positions = pipeline.positions(spark)
    assert max(positions.values()) == 1
    assert set(positions) == set(read_before) | held
    assert not set(positions) & lost


def test_data_loss_error_says_what_was_lost_and_how_to_go_on(expired):
    _, _, _, _, error = expired
    message = str(error)
    assert "data may have been lost" in message, message
    assert "fail_on_data_loss" in message and "stream-assets reset raw_events" in message
