"""SIGKILL the Spark driver at every step of a micro-batch; the restart must repair everything.

Each run is a separate process (stream_assets_tests.fault_driver: Dagster `materialize` with a
fresh SparkSession whose JVM is its child), killed with SIGKILL on its whole process group, so
no shutdown hook, `finally` or graceful stop runs. The final tables are compared row for row
with what the broker holds and the generator says each record is, not with the pipeline's own
output.

While the first run is held inside a batch, a second materialization of the same table from
this test's process (a second real process) must be refused and write nothing: the one
concurrent-runs scenario that needs a run in flight, checked here to spare a JVM start.
"""

from __future__ import annotations

import pytest
from dagster import materialize

from stream_assets.dev.generator import generate_events
from stream_assets.dev.producer import produce
from stream_assets.errors import TableBusy
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.assets import build_asset
from stream_assets.tables.catalog import raw_events
from stream_assets_tests.fault_driver import (
    Driver,
    actual_tables,
    broker_messages,
    checkpoint_batches,
    delta_versions,
    expected_tables,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORDS = 360
# 3 partitions, 90 records per trigger: four batches, so kills land in the middle of the stream.
MAX_OFFSETS = 90

# (where the batch is stopped, the batch id, what is on disk at that moment). The kills between
# the two tables' Delta commits of a batch, and after both but before the checkpoint's commit,
# were points here too; test_crash_sweep.py kills (and images) at every file of those steps in
# a later batch, so they were dropped here to keep the suite within its time.
KILL_POINTS = [
    # Offsets of batch 1 planned, nothing of it written: the replay must write it whole.
    ("before:raw_events:1", "planned, no table written"),
]


def assert_second_run_refused(workdir, bootstrap, topic, spark_resource) -> None:
    """A materialization in this process while the driver holds the table: TableBusy, no writes."""
    checkpoint = workdir / "checkpoints" / "raw_events"
    before = (checkpoint_batches(checkpoint), delta_versions(workdir / "tables" / "raw_events"),
              delta_versions(workdir / "tables" / "dead_letter_queue"))
    lake = DeltaLake(tables_root=str(workdir / "tables"),
                     checkpoints_root=str(workdir / "checkpoints"))
    source = KafkaSource(bootstrap_servers=bootstrap, topic_names={"events": topic})
    with pytest.raises(TableBusy, match="raw_events is being written by another run") as busy:
        materialize([build_asset(raw_events)],
                    resources={"spark": spark_resource, "lake": lake, "stream_source": source})
    assert "wait for it to finish" in str(busy.value)
    after = (checkpoint_batches(checkpoint), delta_versions(workdir / "tables" / "raw_events"),
             delta_versions(workdir / "tables" / "dead_letter_queue"))
    assert after == before, "the refused run wrote something"


def test_driver_killed_at_each_step_of_a_batch_restarts_to_the_same_tables(
    kafka_broker, topic_factory, spark_resource, spark, workdir, monkeypatch
):
    topic = topic_factory("kill")
    records = [r.__class__(topic, r.key, r.value, r.kind, r.event)
               for r in generate_events(RECORDS, bad_ratio=0.15, seed=21, id_prefix="kill")]
    produce(records, KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))
    checkpoint = workdir / "checkpoints" / "raw_events"
    events_table = workdir / "tables" / "raw_events"
    dead_table = workdir / "tables" / "dead_letter_queue"
    # The driver and this process share STREAM_ASSETS_HOME: the writer locks live below it.
    monkeypatch.setenv("STREAM_ASSETS_HOME", str(workdir / "home"))
    with Driver(workdir, kafka_broker.bootstrap, topic, max_offsets=MAX_OFFSETS) as driver:
        for point, _ in KILL_POINTS:
            driver.start(pause_at=point)
            driver.wait_paused()
            if point == KILL_POINTS[0][0]:
                assert_second_run_refused(workdir, kafka_broker.bootstrap, topic, spark_resource)
            when, table, batch = point.split(":")
            batch = int(batch)
            planned, committed = checkpoint_batches(checkpoint)
            # Where the kill lands, read from disk: planned but not committed, and for the
            # between-writes point, one table's Delta version ahead of the other's.
            assert batch in planned and batch not in committed, (point, planned, committed)
            written = {"raw_events": batch in delta_versions(events_table),
                       "dead_letter_queue": batch in delta_versions(dead_table)}
            if when == "before":
                assert written == {"raw_events": False, "dead_letter_queue": False}
            elif table == "raw_events":
                assert written == {"raw_events": True, "dead_letter_queue": False}
            else:
                assert written == {"raw_events": True, "dead_letter_queue": True}
            driver.kill()

        # Not instrumented: kill as soon as batch 3 is planned, wherever the driver is then.
        driver.start()
        driver.wait_for(lambda: 3 in checkpoint_batches(checkpoint)[0], 300, "batch 3 planned")
        driver.kill()
        planned, committed = checkpoint_batches(checkpoint)
        assert 3 in planned and 3 not in committed, (planned, committed)

        outcome = driver.run()
        assert outcome.ok, outcome.describe()

    planned, committed = checkpoint_batches(checkpoint)
    assert planned == committed and len(committed) >= 4
    expected = expected_tables(records, broker_messages(kafka_broker.bootstrap, topic))
    actual = actual_tables(workdir / "tables")
    assert sum(expected.events.values()) > 0 and sum(expected.dead.values()) > 0
    assert actual.events == expected.events, (
        f"raw_events differs: missing {list((expected.events - actual.events).items())[:3]}, "
        f"extra {list((actual.events - expected.events).items())[:3]}"
    )
    assert actual.dead == expected.dead, (
        f"dead_letter_queue differs: missing {list((expected.dead - actual.dead).items())[:3]}, "
        f"extra {list((actual.dead - expected.dead).items())[:3]}"
    )
    positions = actual.positions()
    assert len(positions) == len(records) and max(positions.values()) == 1
