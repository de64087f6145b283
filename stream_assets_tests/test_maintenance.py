"""Table maintenance (issue 30): compaction and VACUUM beside the writers, on real Delta.

The session's broker and Spark, a local lake per test; tables read back with delta-rs, which
shares no code with the Spark writer. raw_events (appends) and event_counts (a MERGE table
streaming from it) are compacted while a catch-up run writes them; nothing is lost or written
twice, and a catch-up run after the compaction starts no query. VACUUM keeps what a lagging
reader needs and deletes what no version within the retention reads.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta

import pytest
from dagster import DagsterInstance, materialize

from stream_assets.dev.generator import GOOD, generate_events
from stream_assets.dev.producer import produce
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.assets import build_asset
from stream_assets.tables.catalog import event_counts, raw_events
from stream_assets.tables.maintenance import Maintenance
from stream_assets.tables.maintenance_run import compact, maintain
from stream_assets_tests.fixtures_s3 import delta_rs

pytestmark = pytest.mark.integration


class Pipeline:
    """raw_events and event_counts on a topic of their own, a local lake, one instance."""

    def __init__(self, kafka_broker, topic_factory, spark_resource, workdir, tables=None):
        self.topic = topic_factory("events")
        self.lake = DeltaLake(tables_root=str(workdir / "tables"),
                              checkpoints_root=str(workdir / "checkpoints"))
        self.resources = {"spark": spark_resource, "lake": self.lake,
                          "stream_source": KafkaSource(bootstrap_servers=kafka_broker.bootstrap,
                                                       topic_names={"events": self.topic})}
        self.connection = KafkaConnection(bootstrap_servers=kafka_broker.bootstrap)
        self.instance = DagsterInstance.ephemeral()
        self.tables = tables or {"raw_events": raw_events, "event_counts": event_counts}
        self.good = self.sent = 0

    def send(self, count: int, seed: int) -> None:
        records = [r.__class__(self.topic, r.key, r.value, r.kind, r.event)
                   for r in generate_events(count, bad_ratio=0.1, seed=seed,
                                            id_prefix=f"m{seed}")]
        produce(records, self.connection)
        self.sent += len(records)
        self.good += sum(1 for r in records if r.kind == GOOD)

    def run(self, *names: str) -> dict[str, dict]:
        result = materialize([build_asset(self.tables[n]) for n in names],
                             resources=self.resources, instance=self.instance)
        assert result.success
        return {m.asset_key.to_user_string(): m.metadata
                for node in names for m in result.asset_materializations_for_node(node)}

    def rows(self, name: str) -> list:
        return delta_rs(self.lake, name).to_pyarrow_table().to_pylist()


def test_compaction_beside_running_writers_keeps_every_record_once_and_nothing_new_after(
    kafka_broker, topic_factory, spark_resource, spark, workdir
):
    p = Pipeline(kafka_broker, topic_factory, spark_resource, workdir)
    p.send(300, 1)
    p.run("raw_events", "event_counts")
    files_before = len(delta_rs(p.lake, "raw_events").file_uris())

    # Compact both tables, again and again, while a catch-up run appends to raw_events and
    # merges into event_counts (Delta's conflicts between a MERGE and a compaction are retried).
    p.send(600, 2)
    done = threading.Event()
    compactions = []

    def compact_until_done() -> None:
        while not done.is_set():
            for name in ("raw_events", "event_counts"):
                compactions.append(compact(spark, p.lake.table_path(name)))

    worker = threading.Thread(target=compact_until_done)
    worker.start()
    try:
        p.run("raw_events", "event_counts")
    finally:
        done.set()
        worker.join()
    for name in ("raw_events", "event_counts"):
        compactions.append(compact(spark, p.lake.table_path(name)))
    assert any(c["files_removed"] for c in compactions)

    # Exactly once: every Kafka record in raw_events or the dead letters, once.
    positions = [(r["topic"], r["partition"], r["offset"]) for r in p.rows("raw_events")]
    positions += [(r["topic"], r["partition"], r["offset"])
                  for r in p.rows("dead_letter_queue")]
    assert len(positions) == len(set(positions)) == p.sent
    assert len(p.rows("raw_events")) == p.good
    assert len(delta_rs(p.lake, "raw_events").file_uris()) < files_before + 20
    counts = [(r["window_start"], r["event_type"]) for r in p.rows("event_counts")]
    assert len(counts) == len(set(counts))
    before = sorted(map(str, p.rows("event_counts")))

    # Nothing new: the compactions' commits change no data, so no query starts, and the row
    # counts carried forward are the tables' own.
    idle = p.run("raw_events", "event_counts")
    for name, rows in (("raw_events", p.good), ("dead_letter_queue", p.sent - p.good)):
        assert idle[name]["query_started"].value is False
        assert idle[name]["dagster/row_count"].value == rows
        assert idle[name]["delta_version"].value == delta_rs(p.lake, name).version()
    assert idle["event_counts"]["query_started"].value is False, \
        idle["event_counts"]["query_started_because"].value
    assert idle["event_counts"]["dagster/row_count"].value == len(before)
    assert sorted(map(str, p.rows("event_counts"))) == before


def test_vacuum_keeps_what_a_lagging_reader_needs_and_the_declared_retention(
    kafka_broker, topic_factory, spark_resource, spark, workdir
):
    short = dataclasses.replace(raw_events, maintenance=Maintenance(
        vacuum_retention=timedelta(0), vacuum_every=timedelta(0), log_retention="7 days"))
    p = Pipeline(kafka_broker, topic_factory, spark_resource, workdir,
                 {"raw_events": short, "event_counts": event_counts})
    p.send(200, 3)
    p.run("raw_events", "event_counts")
    p.send(200, 4)
    p.run("raw_events")  # event_counts stays behind: it has not read this version yet
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{p.lake.table_path('raw_events')}`").first()
    assert detail["properties"]["delta.deletedFileRetentionDuration"] == "interval 0 seconds"
    assert detail["properties"]["delta.logRetentionDuration"] == "7 days"
    path = p.lake.table_path("raw_events")
    readers = {"event_counts": p.lake.checkpoint_path("event_counts")}

    held = maintain(spark, "raw_events", path, short.maintenance, readers, p.lake.files, None)
    assert held.compaction["files_removed"] > 0
    assert held.vacuum is None and "event_counts has not read" in held.notes[0]
    on_disk = {f.name for f in (workdir / "tables" / "raw_events").rglob("*.parquet")}
    assert len(on_disk) > held.figures["live_files"]  # compacted files still there

    p.run("event_counts")  # caught up: the compacted files are no one's any more
    done = maintain(spark, "raw_events", path, short.maintenance, readers, p.lake.files, None)
    assert done.vacuum is not None and done.vacuum["retention_hours"] == 0
    left = {f.name for f in (workdir / "tables" / "raw_events").rglob("*.parquet")}
    assert len(left) == done.figures["live_files"]
    assert done.figures["log_files"] > 0 and done.figures["average_file_bytes"] > 0
    assert len(p.rows("raw_events")) == p.good

    # The dead letters keep Delta's 7 days: their compacted files stay on disk after VACUUM.
    dlq = p.lake.table_path("dead_letter_queue")
    kept = maintain(spark, "dead_letter_queue", dlq, Maintenance(vacuum_every=timedelta(0)),
                    {}, p.lake.files, None)
    assert kept.vacuum is not None and kept.vacuum["retention_hours"] == 168
    dead_files = list((workdir / "tables" / "dead_letter_queue").rglob("*.parquet"))
    assert len(dead_files) > kept.figures["live_files"]
    assert len(p.rows("dead_letter_queue")) == p.sent - p.good
