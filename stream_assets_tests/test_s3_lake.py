"""The lake on the test S3 server (issue 14): guards, full refresh and an outage.

Catch-up of every table, metadata, "nothing new" and the sensors' positions on S3 are covered
by the `any_lake` runs of test_streaming_tables.py and test_nothing_new.py, which run the same
assertions on the server (and on a local folder with STREAM_ASSETS_TEST_LAKES=local,s3).
Here, on one project (raw_events, its dead letters and event_counts, through
build_definitions on a real instance):

* the derived checks read the tables on S3, and reuse their verdicts while nothing changed;
* the checkpoint guard refuses a checkpoint whose table was deleted on S3;
* a full refresh from run config and from `stream-assets reset` (configured by environment
  variables only) delete on S3, and the rebuilt tables equal the plain-Python reference;
* the S3 server going away in the middle of a materialization fails the run with a message
  that names the store, and the next run writes every record exactly once.
"""

from __future__ import annotations

import threading
import time

import pytest
from click.testing import CliRunner
from dagster import instance_for_test

from stream_assets import jars
from stream_assets.cli import main
from stream_assets.dev.generator import GOOD, Record, generate_events
from stream_assets.dev.producer import produce
from stream_assets.errors import CheckpointMismatch
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables import refresh, runner
from stream_assets.tables.catalog import event_counts
from stream_assets_tests.fixtures_s3 import delta_rs
from stream_assets_tests.test_monitoring_checks import run_checks
from stream_assets_tests.test_refresh import Project

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLES = ["raw_events", "dead_letter_queue", "event_counts"]


@pytest.fixture
def project(kafka_broker, spark_resource, s3_server, s3_workdir):
    assert any(j.name.startswith("hadoop-aws-") for j in jars.jars("spark")), (
        f"no hadoop-aws jar in {jars.group_dir('spark')}: run 'stream-assets setup' again "
        "(jvm/spark/pom.xml names it)")
    with instance_for_test() as instance:
        project = Project(kafka_broker, spark_resource, s3_server.lake(s3_workdir), instance)
        yield project
        kafka_broker.delete_topics([project.topic])


def event_ids(lake, table: str = "raw_events") -> list[str]:
    return sorted(delta_rs(lake, table).to_pyarrow_table().column("event_id").to_pylist())


def test_checks_guard_and_full_refresh_on_s3(project, spark, spark_resource, monkeypatch):
    lake = project.lake
    assert project.materialize(TABLES).success
    project.assert_equal_to_reference(spark, tables=("event_counts",))
    assert event_ids(lake) == sorted(e["event_id"] for e in project.good)

    # The derived checks read the tables on S3; a second run with nothing changed reuses their
    # verdicts from the Delta logs' listing (the raw_events checks; freshness is recomputed).
    first = run_checks(spark_resource, lake, instance=project.instance)
    ratio = first[("raw_events", "dead_letter_ratio")]
    assert ratio.metadata["dead_letter_rows"].value == len(project.records) - len(project.good)
    assert ratio.metadata["records"].value == len(project.records)
    assert all(e.passed for k, e in first.items() if k[1] != "dead_letter_ratio"), first
    again = run_checks(spark_resource, lake, instance=project.instance)
    assert all("reused_from_run" in e.metadata for k, e in again.items()
               if k[1] != "freshness"), again
    assert {k: e.passed for k, e in again.items()} == {k: e.passed for k, e in first.items()}

    # The guard reads the checkpoint on S3: event_counts' table deleted under its checkpoint.
    assert lake.files.delete_tree(lake.table_path("event_counts"))
    ctx = runner.StreamContext(spark=spark, lake=lake, source=project.source)
    with pytest.raises(CheckpointMismatch) as refused:
        runner.catch_up(event_counts, ctx)
    assert "there is no Delta table event_counts" in str(refused.value)

    # Full refresh from run config: deletes raw_events and the queries streaming from it on
    # S3, then rebuilds both from Kafka.
    result = project.materialize(TABLES, refresh=("raw_events",))
    assert result.success
    project.assert_equal_to_reference(spark, tables=("event_counts",))
    deleted = next(m for m in result.asset_materializations_for_node("raw_events")
                   if m.asset_key.to_user_string() == "raw_events").metadata[refresh.DELETED]
    assert lake.checkpoint_path("event_counts") in deleted.value["event_counts"]

    # `stream-assets reset`, configured by environment variables alone, deletes on S3 too.
    s3 = lake.s3
    for name, value in {"STREAM_ASSETS_TABLES_ROOT": lake.tables_root,
                        "STREAM_ASSETS_CHECKPOINTS_ROOT": lake.checkpoints_root,
                        "AWS_ENDPOINT_URL": s3.endpoint, "AWS_REGION": s3.region,
                        "AWS_ACCESS_KEY_ID": s3.access_key_id,
                        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
                        "STREAM_ASSETS_S3_PATH_STYLE": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    reset = CliRunner().invoke(main, ["reset", "raw_events", "--yes",
                                      "--tables", "stream_assets_tests.test_refresh:TABLES"])
    assert reset.exit_code == 0, reset.output
    assert s3.secret_access_key not in reset.output
    for query in ("raw_events", "event_counts"):
        assert f"{query}: deleted" in reset.output
        assert not lake.files.exists(lake.checkpoint_path(query))
    for table in TABLES:
        assert not lake.files.exists(lake.table_path(table))


def test_an_outage_mid_run_fails_clearly_and_the_next_run_writes_each_record_once(
    project, spark, kafka_broker, s3_server
):
    lake = project.lake
    more = [Record(project.topic, r.key, r.value, r.kind, r.event)
            for r in generate_events(3000, bad_ratio=0.0, seed=14, id_prefix="o")]
    produce(more, KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))

    # The server goes away once the query has planned its first batch on S3.
    planned = lake.checkpoint_path("raw_events") + "/offsets/0"
    stop = threading.Event()

    def cut_when_planned() -> None:
        while not stop.is_set():
            if lake.files.exists(planned):
                s3_server.interrupt()
                return
            time.sleep(0.05)

    cutter = threading.Thread(target=cut_when_planned, daemon=True)
    cutter.start()
    try:
        failed = project.materialize(["raw_events", "dead_letter_queue"],
                                     raise_on_error=False)
    finally:
        stop.set()
        cutter.join()
        s3_server.resume()
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure)
    error, messages = failure.step_failure_data.error, []
    while error is not None:  # Dagster's step error, caused by ours
        messages.append(error.message)
        error = error.cause
    message = "\n".join(messages)
    assert "LakeUnreachable" in message and "did not answer" in message, message[:3000]
    assert s3_server.endpoint_url in message

    assert project.materialize(["raw_events", "dead_letter_queue"]).success
    good = [r.event["event_id"] for r in project.records + more if r.kind == GOOD]
    assert event_ids(lake) == sorted(good)  # every record, none twice
