"""Expectations through Dagster with the real broker, Spark and Delta: counts against plain
Python, drops in the dead letters, and a failing rule that writes nothing until it is fixed."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    instance_for_test,
    materialize,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stream_assets import (
    StreamingTable,
    expect,
    expect_or_drop,
    expect_or_fail,
    kafka_topic,
)
from stream_assets.checkpoint_log import batch_ids
from stream_assets.dev.generator import Record
from stream_assets.dev.producer import produce
from stream_assets.jobs import build_continuous_job
from stream_assets.lake_files import LOCAL_FILES
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.assets import build_asset

pytestmark = pytest.mark.integration

PAYMENT = "payment_id STRING, amount BIGINT, card STRING"
CONTINUOUS = {"ops": {"run_streams": {"config": {
    "trigger_interval": "1 second", "event_interval_s": 1.0, "heartbeat_interval_s": 5.0,
    "poll_interval_s": 0.5,
}}}}


def parse_payments(kafka: DataFrame) -> DataFrame:
    data = F.from_json(F.col("value").cast("string"), PAYMENT)
    return kafka.select("*", data.alias("p")).select(
        "key", "value", "topic", "partition", "offset",
        "p.payment_id", "p.amount", "p.card",
        F.when(F.col("p").isNull(), F.lit("not JSON")).alias("error"),
    ).drop("p")


def payments(*rules) -> StreamingTable:
    return StreamingTable(
        name="payments", sources={"payments": kafka_topic("payments", parser=parse_payments)},
        dead_letters="payments_refused", expectations=tuple(rules),
    )


WARN = expect("not_negative", "amount >= 0", max_violation_ratio=0.5)
DROP = expect_or_drop("has_id", "payment_id IS NOT NULL AND payment_id <> ''")
FAIL = expect_or_fail("below_limit", "amount < 1000000")


def generate(count: int, seed: int, *, over_limit: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        rows.append({
            "payment_id": rng.choice([f"p{seed}-{i}"] * 8 + ["", None]),
            "amount": rng.choice([rng.randint(0, 900), -rng.randint(1, 50)]),
            "card": "4111-1111",
        })
    for i in range(over_limit):
        rows[i * 7 % count]["amount"] = 5_000_000
    return rows


@pytest.fixture
def pipeline(kafka_broker, topic_factory, spark_resource, workdir):
    topic = topic_factory("payments")
    lake = DeltaLake(tables_root=str(workdir / "tables"),
                     checkpoints_root=str(workdir / "checkpoints"))
    resources = {
        "spark": spark_resource, "lake": lake,
        "stream_source": KafkaSource(bootstrap_servers=kafka_broker.bootstrap,
                                     topic_names={"payments": topic}),
    }
    instance = DagsterInstance.ephemeral()
    connection = KafkaConnection(bootstrap_servers=kafka_broker.bootstrap)

    bound = resources

    class Pipeline:
        def __init__(self) -> None:
            # Instance attributes: a Dagster resource as a class attribute acts as a descriptor.
            self.lake, self.resources = bound["lake"], bound

        def send(self, rows: list[dict]) -> None:
            produce([Record(topic, None, json.dumps(r).encode(), "good", None) for r in rows],
                    connection)

        def materialize(self, table: StreamingTable):
            return materialize([build_asset(table)], resources=resources, instance=instance,
                               raise_on_error=False)

        def check(self, name: str):
            key = AssetCheckKey(AssetKey("payments"), name)
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [key]).get(key)
            return record.event.dagster_event.event_specific_data if record else None

        def rows(self, spark, name: str) -> list:
            return spark.read.format("delta").load(lake.table_path(name)).collect()

    return Pipeline()


def test_warn_and_drop_are_counted_per_rule_and_drops_land_in_the_dead_letters(
    pipeline, spark
):
    sent = generate(120, seed=1)
    pipeline.send(sent)
    assert pipeline.materialize(payments(WARN, DROP)).success

    has_id = [r for r in sent if r["payment_id"]]
    dropped = len(sent) - len(has_id)
    # Every rule judges every row the parser accepted, dropped or not.
    negative = sum(1 for r in sent if r["amount"] < 0)
    assert dropped > 0 and negative > 0
    kept = pipeline.rows(spark, "payments")
    assert sorted(r["payment_id"] for r in kept) == sorted(r["payment_id"] for r in has_id)
    refused = pipeline.rows(spark, "payments_refused")
    assert len(refused) == dropped and {r["error"] for r in refused} == {"has_id"}
    assert sorted(json.loads(r["raw_bytes"])["payment_id"] or "" for r in refused) == [""] * (
        dropped)

    warn, drop = pipeline.check("not_negative"), pipeline.check("has_id")
    assert (warn.metadata["rows_checked"].value, warn.metadata["rows_failed"].value) == (
        len(sent), negative)
    assert warn.passed == (negative / len(sent) <= 0.5)
    assert warn.severity.value == "WARN"
    assert drop.metadata["rows_failed"].value == dropped and not drop.passed


def test_a_failing_rule_writes_nothing_and_the_fixed_rule_processes_the_batch_once(
    pipeline, spark
):
    good = generate(40, seed=2)
    pipeline.send(good)
    assert pipeline.materialize(payments(FAIL)).success
    checkpoint = pipeline.lake.checkpoint_path("payments")
    committed = len(batch_ids(LOCAL_FILES, f"{checkpoint}/commits"))

    later = generate(30, seed=3, over_limit=2)
    pipeline.send(later)
    result = pipeline.materialize(payments(FAIL))
    assert not result.success
    failure = pipeline.check("below_limit")
    assert not failure.passed and failure.severity.value == "ERROR"
    # Nothing of the failed batch anywhere: the table and the checkpoint are as before.
    assert len(pipeline.rows(spark, "payments")) == len(good)
    assert len(batch_ids(LOCAL_FILES, f"{checkpoint}/commits")) == committed
    # The same batch fails again on a restart, until the rule changes.
    assert not pipeline.materialize(payments(FAIL)).success
    assert len(pipeline.rows(spark, "payments")) == len(good)

    assert pipeline.materialize(payments()).success
    ids = sorted(r["payment_id"] or "" for r in pipeline.rows(spark, "payments"))
    assert ids == sorted(r["payment_id"] or "" for r in good + later)


@pytest.mark.slow
def test_continuous_runs_report_expectation_checks_while_they_go(pipeline, spark):
    sent = generate(150, seed=4)
    pipeline.send(sent)
    job = build_continuous_job([payments(WARN, DROP)], name="continuous_expectations")
    key = AssetCheckKey(AssetKey("payments"), "not_negative")
    with instance_for_test() as instance:
        results: list = []
        thread = threading.Thread(target=lambda: results.append(job.execute_in_process(
            run_config=CONTINUOUS, instance=instance, resources=pipeline.resources,
            raise_on_error=False)), daemon=True)
        thread.start()

        def evaluations() -> list:
            history = instance.event_log_storage.get_asset_check_execution_history(key, 100)
            return [r.event.dagster_event.event_specific_data for r in history
                    if r.event is not None and r.event.dagster_event is not None]

        def counted() -> int:
            return sum(e.metadata["rows_checked"].value for e in evaluations())

        deadline = time.monotonic() + 180
        while counted() < len(sent) and time.monotonic() < deadline:
            time.sleep(1)
        # Seen while the run goes on: the check is live, not waiting for the run to end.
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.STARTED
        assert counted() == len(sent)
        has_id = [r for r in sent if r["payment_id"]]
        assert sum(e.metadata["rows_failed"].value for e in evaluations()) == sum(
            1 for r in sent if r["amount"] < 0)
        assert {e.metadata["mode"].value for e in evaluations()} == {"continuous"}
        instance.report_run_canceling(run)
        thread.join(timeout=120)
        assert not thread.is_alive()
    refused = pipeline.rows(spark, "payments_refused")
    assert len(refused) == len(sent) - len(has_id)


@pytest.mark.slow
def test_a_failing_rule_ends_a_continuous_run_with_its_check_failed_and_nothing_written(
    pipeline,
):
    pipeline.send(generate(20, seed=5, over_limit=1))
    job = build_continuous_job([payments(FAIL)], name="continuous_fail")
    with instance_for_test() as instance:
        result = job.execute_in_process(run_config=CONTINUOUS, instance=instance,
                                        resources=pipeline.resources, raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_failure)
        assert "expectation 'below_limit'" in str(failure.event_specific_data.error)
        key = AssetCheckKey(AssetKey("payments"), "below_limit")
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [key])[key]
        evaluation = record.event.dagster_event.event_specific_data
        assert not evaluation.passed and evaluation.severity.value == "ERROR"
    # The batch was written nowhere: no table yet, no committed batch.
    assert not os.path.exists(pipeline.lake.table_path("payments"))
