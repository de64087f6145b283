"""Table maintenance (issue 30): compaction and VACUUM beside the writers, on real Delta.

The session's broker and Spark, a local lake per test; tables read back with delta-rs, which
shares no code with the Spark writer. raw_events (appends) and event_counts (a MERGE table
streaming from it) are compacted while a catch-up run writes them; nothing is lost or written
twice, and a catch-up run after the compaction starts no query. VACUUM keeps what a lagging
reader needs and deletes what no version within the retention reads; the maintain_tables
job records what it did on each table.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from stream_assets import StreamingTable, upstream
from stream_assets.dev.generator import GOOD, generate_events
from stream_assets.dev.producer import produce
from stream_assets.jobs.maintenance import build_maintenance_job
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
    p.send(150, 1)
    p.run("raw_events", "event_counts")
    files_before = len(delta_rs(p.lake, "raw_events").file_uris())

    # Compact both tables, again and again, while a catch-up run appends to raw_events and
    # merges into event_counts (Delta's conflicts between a MERGE and a compaction are retried).
    p.send(400, 2)
    done = threading.Event()
    compactions = []

    def compact_until_done() -> None:
        while not done.wait(0.5):
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


def event_ids(events):
    return events.select("event_id")


# A cheap reader of raw_events as a Delta stream (an append of one column).
raw_ids = StreamingTable(name="raw_ids", sources={"events": upstream("raw_events")},
                         transform=event_ids, description="The event ids of raw_events.")


def test_vacuum_waits_for_a_lagging_reader_and_keeps_the_declared_retention(
    kafka_broker, topic_factory, spark_resource, spark, workdir
):
    short = dataclasses.replace(raw_events, maintenance=Maintenance(
        vacuum_retention=timedelta(0), vacuum_every=timedelta(0), log_retention="7 days"))
    p = Pipeline(kafka_broker, topic_factory, spark_resource, workdir,
                 {"raw_events": short, "raw_ids": raw_ids})
    p.send(100, 3)
    p.run("raw_events", "raw_ids")
    p.send(100, 4)
    p.run("raw_events")  # raw_ids stays behind: it has not read this version yet
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{p.lake.table_path('raw_events')}`").first()
    assert detail["properties"]["delta.deletedFileRetentionDuration"] == "interval 0 seconds"
    assert detail["properties"]["delta.logRetentionDuration"] == "7 days"
    path = p.lake.table_path("raw_events")
    readers = {"raw_ids": p.lake.checkpoint_path("raw_ids")}

    held = maintain(spark, "raw_events", path, short.maintenance, readers, p.lake.files, None)
    assert held.compaction["files_removed"] > 0
    assert held.vacuum is None and "raw_ids has not read" in held.notes[0], held.notes
    on_disk = list((workdir / "tables" / "raw_events").rglob("*.parquet"))
    assert len(on_disk) > held.figures["live_files"]  # the compacted files are still there

    # Caught up, the compacted files are no one's any more: the job (one step per query)
    # vacuums raw_events at its retention of 0, the dead letters at Delta's 7 days.
    p.run("raw_ids")
    job = build_maintenance_job([short, raw_ids])
    assert job.execute_in_process(resources=p.resources, instance=p.instance).success
    seen = {}
    for name in ("raw_events", "dead_letter_queue", "raw_ids"):
        [record] = p.instance.fetch_observations(AssetKey(name), limit=1).records
        seen[name] = {k: v.value for k, v in record.asset_observation.metadata.items()}
    assert seen["raw_events"]["vacuum_retention_hours"] == 0
    left = list((workdir / "tables" / "raw_events").rglob("*.parquet"))
    assert len(left) == seen["raw_events"]["live_files"]
    assert seen["raw_events"]["log_files"] > 0 and seen["raw_events"]["average_file_bytes"] > 0
    assert seen["dead_letter_queue"]["vacuum_retention_hours"] == 168
    assert seen["dead_letter_queue"]["compaction_files_removed"] > 0
    dead_files = list((workdir / "tables" / "dead_letter_queue").rglob("*.parquet"))
    assert len(dead_files) > seen["dead_letter_queue"]["live_files"]
    assert "last_vacuum_at" in seen["raw_ids"]
    assert len(p.rows("raw_events")) == len(p.rows("raw_ids")) == p.good
    assert len(p.rows("dead_letter_queue")) == p.sent - p.good


def test_the_schedules_cron_follows_the_deployments_variable(monkeypatch):
    from stream_assets.jobs.maintenance import CRON_ENV, maintenance_cron

    monkeypatch.delenv(CRON_ENV, raising=False)
    assert maintenance_cron("0 * * * *") == "0 * * * *"
    monkeypatch.setenv(CRON_ENV, "*/15 * * * *")
    assert maintenance_cron("0 * * * *") == "*/15 * * * *"
    monkeypatch.setenv(CRON_ENV, "off")
    assert maintenance_cron("0 * * * *") is None
