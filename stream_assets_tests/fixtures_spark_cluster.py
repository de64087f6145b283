"""Pytest fixtures: a real Spark standalone cluster, a real Spark Connect server, shared input.

Registered like fixtures_kafka (conftest's `pytest_plugins`). The daemons come from the
installed pyspark distribution (stream_assets.dev.spark_cluster) on free ports of 127.0.0.1 and
live for one test module; their logs stay in the module's temporary folder.

`cluster_events` is one topic of generated events (good and bad) produced once per session; the
cluster and Connect tests materialize it elsewhere and must end with the tables its records
predict (`ClusterEvents.expected`, read back with delta-rs by `lake_tables`).
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from stream_assets.dev.generator import GOOD, Record, generate_events
from stream_assets.dev.producer import produce
from stream_assets.dev.spark_cluster import ConnectServer, StandaloneCluster
from stream_assets.resources import DeltaLake
from stream_assets.resources.kafka import KafkaConnection
from stream_assets_tests.fault_driver import Tables, broker_messages, expected_tables, tables_from
from stream_assets_tests.fixtures_s3 import delta_rs

# Columns set from the clock at write time: they differ between any two runs.
VOLATILE = {"event_counts": ("updated_at",)}


@dataclass(frozen=True)
class ClusterEvents:
    """One topic of generated records, and the broker that has it."""

    bootstrap: str
    topic: str
    records: tuple[Record, ...]

    @property
    def topics(self) -> dict[str, str]:
        return {"events": self.topic}

    @property
    def good_events(self) -> list[dict]:
        return [r.event for r in self.records if r.kind == GOOD]

    def expected(self) -> Tables:
        """raw_events and its dead letters as the generator's labels and the broker's positions
        predict them, with no pipeline code."""
        return expected_tables(self.records, broker_messages(self.bootstrap, self.topic))


def lake_tables(lake: DeltaLake) -> Tables:
    """raw_events and its dead letters in `lake` (a folder or the S3 server), read with
    delta-rs."""
    return tables_from(delta_rs(lake, "raw_events"), delta_rs(lake, "dead_letter_queue"))


def lake_at(root: Path) -> DeltaLake:
    return DeltaLake(tables_root=str(root / "tables"), checkpoints_root=str(root / "checkpoints"))


def table_rows(spark, lake: DeltaLake, table: str) -> list[dict]:
    """A table's rows as dicts, without the columns stamped at write time."""
    lake.attach(spark)
    frame = spark.read.format("delta").load(lake.table_path(table))
    return [r.asDict(recursive=True) for r in frame.drop(*VOLATILE.get(table, ())).collect()]


@pytest.fixture(scope="session")
def cluster_events(kafka_broker) -> Iterator[ClusterEvents]:
    """400 events over 20 minutes for 8 users, 10% of them bad, on a topic of 2 partitions."""
    topic = f"cluster-events-{uuid.uuid4().hex[:10]}"
    kafka_broker.create_topics([topic], partitions=2)
    records = tuple(
        Record(topic, r.key, r.value, r.kind, r.event)
        for r in generate_events(400, bad_ratio=0.1, seed=42, users=8,
                                 spacing=timedelta(seconds=3), id_prefix="cl")
    )
    produce(records, KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))
    yield ClusterEvents(kafka_broker.bootstrap, topic, records)
    with contextlib.suppress(Exception):
        kafka_broker.delete_topics([topic])


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory) -> Iterator[StandaloneCluster]:
    """A standalone master and one worker (2 cores, 1 GiB) on 127.0.0.1."""
    with StandaloneCluster(tmp_path_factory.mktemp("spark_cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory) -> Iterator[ConnectServer]:
    """A Spark Connect server (local[2] inside) with the project's jars and Delta settings.

    Its Python workers start through `slow_worker_start.sh`: once `server.home / "slow-once"`
    exists, the next worker starts 12 s late, past the 10 s Spark waits for it to connect
    back, as on a loaded server (issue 27); every other start is immediate.
    """
    home = tmp_path_factory.mktemp("spark_connect")
    python = home / "slow_worker_start.sh"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{home}/slow-once" ] && mkdir "{home}/slow-done" 2>/dev/null; then sleep 12; fi\n'
        f'exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    with ConnectServer(home, conf={"spark.sql.shuffle.partitions": "2"},
                       python=python) as server:
        yield server
