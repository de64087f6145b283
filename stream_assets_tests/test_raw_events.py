"""raw_events and dead_letter_queue through a real broker, Spark, Delta and Dagster."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from dagster import AssetKey, DagsterInstance, materialize
from deltalake import DeltaTable

from stream_assets.dev.generator import BAD_KINDS, GOOD, generate_events
from stream_assets.dev.producer import produce
from stream_assets.errors import CheckpointMismatch, KafkaUnavailable, StreamFailed
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables import runner
from stream_assets.tables.assets import build_asset
from stream_assets.tables.catalog import raw_events
from stream_assets.tables.context import StreamContext

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(kafka_broker, topic_factory, spark_resource, workdir):
    topic = topic_factory("events")
    resources = {
        "spark": spark_resource,
        "lake": DeltaLake(tables_root=str(workdir / "tables"),
                          checkpoints_root=str(workdir / "checkpoints")),
        "stream_source": KafkaSource(bootstrap_servers=kafka_broker.bootstrap,
                                     topic_names={"events": topic}),
    }
    connection = KafkaConnection(bootstrap_servers=kafka_broker.bootstrap)
    # One instance for the pipeline's runs, as in a deployment: later runs see earlier ones.
    instance = DagsterInstance.ephemeral()

    class Pipeline:
        def send(self, records):
            records = [r.__class__(topic, r.key, r.value, r.kind, r.event) for r in records]
            produce(records, connection)
            return records

        def materialize(self, **run_config):
            result = materialize([build_asset(raw_events)], resources=resources,
                                 run_config=run_config or None, instance=instance)
            assert result.success
            return result

        def path(self, name):
            return resources["lake"].table_path(name)

        def table(self, name, spark):
            return spark.read.format("delta").load(resources["lake"].table_path(name))

    return Pipeline()


def expected_kind(record) -> str:
    """The reason's kind a bad record must get: its label, except that a timestamp of the wrong
    JSON type and an unreadable one have the same reason (the field must be ISO-8601 text)."""
    if record.kind == "wrong_type" and not isinstance(json.loads(record.value)["timestamp"], str):
        return "bad_timestamp"
    return record.kind


def expectation(records):
    """What the tables must hold, from the generator's own labels."""
    good = {(r.event["event_id"]) for r in records if r.kind == GOOD}
    bad = Counter(expected_kind(r) for r in records if r.kind != GOOD)
    return good, bad


def kind_of(error: str) -> str:
    prefixes = {
        "invalid JSON": "invalid_json", "not a JSON object": "not_object",
        "missing event_id": "missing_event_id", "missing timestamp": "missing_timestamp",
        "wrong type: timestamp must be an ISO-8601 timestamp": "bad_timestamp",
        "wrong type": "wrong_type",
        "empty value": "empty", "null value": "null", "value is not valid UTF-8": "not_utf8",
    }
    return next(kind for prefix, kind in prefixes.items() if error.startswith(prefix))


def test_each_record_lands_once_in_raw_events_or_dead_letter_queue(pipeline, spark):
    records = pipeline.send(list(generate_events(3000, bad_ratio=0.1, seed=11)))
    result = pipeline.materialize()

    good, bad = expectation(records)
    events = pipeline.table("raw_events", spark)
    dlq = pipeline.table("dead_letter_queue", spark)
    ids = [r.event_id for r in events.select("event_id").collect()]
    assert len(ids) == len(set(ids)) and set(ids) == good
    dead = Counter(kind_of(r.error) for r in dlq.select("error").collect())
    assert dead == bad and set(dead) == set(BAD_KINDS)
    positions = events.select("partition", "offset").union(dlq.select("partition", "offset"))
    assert positions.distinct().count() == positions.count() == len(records)
    # The batch's dead letters came from all three partitions, and went into one file.
    assert dlq.select("partition").distinct().count() == 3
    assert len(DeltaTable(pipeline.path("dead_letter_queue")).file_uris()) == 1

    meta = result.asset_materializations_for_node("raw_events")
    by_key = {m.asset_key: m.metadata for m in meta}
    raw_meta, dlq_meta = by_key[AssetKey("raw_events")], by_key[AssetKey("dead_letter_queue")]
    assert raw_meta["rows_read"].value == len(records)
    assert raw_meta["rows_written"].value == len(good)
    assert dlq_meta["rows_written"].value == sum(bad.values())
    assert raw_meta["dagster/row_count"].value == len(good)
    assert raw_meta["kafka_records_in_range"].value == len(records)
    assert raw_meta["delta_version"].value >= 0
    columns = [c.name for c in raw_meta["dagster/column_schema"].schema.columns]
    assert columns[:4] == ["event_id", "event_type", "user_id", "timestamp"]


def test_second_materialization_adds_only_new_records(pipeline, spark):
    first = pipeline.send(list(generate_events(500, bad_ratio=0.05, seed=1, id_prefix="a")))
    pipeline.materialize()
    second = pipeline.send(list(generate_events(700, bad_ratio=0.05, seed=2, id_prefix="b")))
    result = pipeline.materialize()
    idle = pipeline.materialize()  # nothing new: must change nothing

    good, bad = expectation(first + second)
    ids = [r.event_id for r in pipeline.table("raw_events", spark).select("event_id").collect()]
    assert sorted(ids) == sorted(good)
    assert pipeline.table("dead_letter_queue", spark).count() == sum(bad.values())
    meta = {m.asset_key: m.metadata for m in result.asset_materializations_for_node("raw_events")}
    assert meta[AssetKey("raw_events")]["rows_read"].value == len(second)
    # Row counts carried forward from the previous run's count must equal the real ones.
    for run in (result, idle):
        meta = {m.asset_key: m.metadata for m in run.asset_materializations_for_node("raw_events")}
        assert meta[AssetKey("raw_events")]["dagster/row_count"].value == len(good)
        assert meta[AssetKey("dead_letter_queue")]["dagster/row_count"].value == sum(bad.values())


def test_table_without_its_checkpoint_is_refused_until_full_refresh(pipeline, spark, workdir):
    import shutil

    records = pipeline.send(list(generate_events(200, seed=3)))
    pipeline.materialize()
    shutil.rmtree(workdir / "checkpoints" / "raw_events")
    with pytest.raises(CheckpointMismatch, match="full refresh"):
        pipeline.materialize()
    pipeline.materialize(ops={"raw_events": {"config": {"full_refresh": True}}})
    assert pipeline.table("raw_events", spark).count() == len(records)


def test_unreachable_broker_fails_fast_with_what_to_do(spark_resource, workdir):
    resources = {
        "spark": spark_resource,
        "lake": DeltaLake(tables_root=str(workdir / "t"), checkpoints_root=str(workdir / "c")),
        "stream_source": KafkaSource(bootstrap_servers="127.0.0.1:1", connect_timeout_s=2),
    }
    with pytest.raises(KafkaUnavailable, match="stream-assets kafka start"):
        materialize([build_asset(raw_events)], resources=resources)


def test_a_stop_request_ends_a_running_catch_up_and_the_next_lands_every_record_once(
        kafka_broker, topic_factory, spark, workdir):
    """What a terminated run's executor does to its steps' queries (parallel_executor.py)."""
    topic = topic_factory("stopped_events")
    # Small batches, so the query is still running when it is asked to stop.
    source = KafkaSource(bootstrap_servers=kafka_broker.bootstrap, topic_names={"events": topic},
                         max_offsets_per_trigger=40)
    lake = DeltaLake(tables_root=str(workdir / "tables"),
                     checkpoints_root=str(workdir / "checkpoints"))
    records = [r.__class__(topic, r.key, r.value, r.kind, r.event)
               for r in generate_events(600, bad_ratio=0.1, seed=11)]
    produce(records, KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))
    ctx = StreamContext(spark=spark, lake=lake, source=source)
    outcome: list[BaseException | None] = []

    def catch_up() -> None:
        try:
            runner.catch_up(raw_events, ctx)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=catch_up)
    runner.clear_stop()
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while not spark.streams.active and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # a batch or two in
        runner.request_stop()
        worker.join(60)
    finally:
        runner.clear_stop()
    assert not worker.is_alive()
    assert isinstance(outcome[0], StreamFailed), outcome
    assert "terminated" in str(outcome[0])
    assert not [q for q in spark.streams.active if q.name == raw_events.name]

    # The rest in one batch: the cap changes only how the offsets are cut into batches.
    whole = KafkaSource(bootstrap_servers=kafka_broker.bootstrap, topic_names={"events": topic})
    runner.catch_up(raw_events, StreamContext(spark=spark, lake=lake, source=whole))
    good, bad = expectation(records)
    # Read back with delta-rs: every good event once, every bad record once.
    event_ids = DeltaTable(lake.table_path("raw_events")).to_pyarrow_table(
        columns=["event_id"]).column("event_id").to_pylist()
    assert len(event_ids) == len(good) and set(event_ids) == good
    letters = DeltaTable(lake.table_path("dead_letter_queue")).to_pyarrow_table()
    assert letters.num_rows == sum(bad.values())
