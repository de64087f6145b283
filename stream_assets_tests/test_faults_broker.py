"""The Kafka broker stops mid-stream and comes back: nothing is lost and nothing is doubled.

Observed and chosen behaviour (see docs/guarantees.md): a running catch-up query waits for the
broker (Kafka's client retries) and continues where it was when the broker returns; a run that
starts while the broker is down fails within `connect_timeout_s` with what to do, and the next
run resumes from the checkpoint.

The broker here is the test's own (own data folder and ports), so stopping it cannot disturb
the other tests' session broker.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import materialize

from stream_assets.dev.generator import generate_events
from stream_assets.dev.producer import produce
from stream_assets.errors import KafkaUnavailable
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.assets import build_asset
from stream_assets.tables.catalog import raw_events
from stream_assets_tests.fault_driver import (
    Driver,
    Outcome,
    actual_tables,
    broker_messages,
    checkpoint_batches,
    expected_tables,
)
from stream_assets_tests.fixtures_kafka import broker_of_its_own

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 8


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory):
    with broker_of_its_own(tmp_path_factory.mktemp("kafka-outage")) as broker:
        yield broker


def _records(topic: str, count: int, seed: int):
    return [r.__class__(topic, r.key, r.value, r.kind, r.event)
            for r in generate_events(count, bad_ratio=0.1, seed=seed, id_prefix=f"outage-{seed}")]


@dataclass
class Outage:
    """What the first outage left: a lake whose run went on through it."""

    topic: str
    records: list
    workdir: Path
    outcome: Outcome
    stopped_at: set[int]
    committed_after: set[int]


@pytest.fixture(scope="module")
def outage(own_broker, tmp_path_factory) -> Outage:
    """The broker goes away while a run is between batches; it comes back 8 s later.

    Small batches (about 10 of them), so the run is still going when the broker stops,
    however fast the machine writes a batch: the broker stops within a second of batch 1's
    commit, and eight batches remain; each batch more costs the suite a few seconds."""
    workdir = tmp_path_factory.mktemp("outage")
    topic = f"outage-{uuid.uuid4().hex[:8]}"
    own_broker.create_topics([topic], partitions=3)
    records = _records(topic, 200, seed=41)
    produce(records, KafkaConnection(bootstrap_servers=own_broker.bootstrap))
    checkpoint = workdir / "checkpoints" / "raw_events"
    with Driver(workdir, own_broker.bootstrap, topic, max_offsets=20,
                env={"STREAM_ASSETS_HOME": str(workdir / "home")}) as driver:
        driver.start()
        driver.wait_for(lambda: 1 in checkpoint_batches(checkpoint)[1], 300, "batch 1 committed")
        own_broker.stop()
        stopped_at = checkpoint_batches(checkpoint)[1]
        time.sleep(OUTAGE_S)
        alive = driver.alive()
        own_broker.start()
        outcome = driver.finish()
    assert alive, f"the run gave up during a {OUTAGE_S} s outage: " + outcome.describe()
    return Outage(topic, records, workdir, outcome, stopped_at, checkpoint_batches(checkpoint)[1])


def test_a_run_waits_through_a_broker_outage_and_goes_on(outage):
    assert outage.outcome.ok, outage.outcome.describe()
    assert outage.committed_after > outage.stopped_at


def test_a_run_started_during_an_outage_fails_fast_and_the_next_loses_and_doubles_nothing(
    outage, own_broker, spark_resource
):
    # A run that starts while the broker is down fails fast and says what to do ...
    more = _records(outage.topic, 100, seed=42)
    produce(more, KafkaConnection(bootstrap_servers=own_broker.bootstrap))
    workdir = outage.workdir
    lake = DeltaLake(tables_root=str(workdir / "tables"),
                     checkpoints_root=str(workdir / "checkpoints"))
    resources = {"spark": spark_resource, "lake": lake,
                 "stream_source": KafkaSource(bootstrap_servers=own_broker.bootstrap,
                                              topic_names={"events": outage.topic},
                                              connect_timeout_s=3)}
    own_broker.stop()
    try:
        started = time.monotonic()
        with pytest.raises(KafkaUnavailable, match="stream-assets kafka start") as raised:
            materialize([build_asset(raw_events)], resources=resources)
        assert own_broker.bootstrap in str(raised.value)
        assert time.monotonic() - started < 60
    finally:
        own_broker.start()

    # ... and the next run, with the broker back, resumes from the checkpoint.
    assert materialize([build_asset(raw_events)], resources=resources).success

    records = outage.records
    expected = expected_tables(records + more, broker_messages(own_broker.bootstrap,
                                                               outage.topic))
    actual = actual_tables(workdir / "tables")
    assert actual.events == expected.events
    assert actual.dead == expected.dead
    assert sum(actual.positions().values()) == len(records) + len(more)
