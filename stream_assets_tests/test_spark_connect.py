"""The same assets through a real Spark Connect server: the Dagster process holds no JVM.

A Connect client switches its whole Python process to Connect mode, so the materializations
run in a child process (stream_assets_tests.cluster_runner); this process reads the resulting
Delta tables (delta-rs, and its local SparkSession) and compares them with what the records
predict and the plain-Python reference. foreachBatch (the raw_events split, the
event_counts MERGE) and the stateful user_sessions processor run in Python workers of the
server.
"""

from __future__ import annotations

import pytest

from stream_assets_tests import reference
from stream_assets_tests.cluster_runner import materialize_elsewhere
from stream_assets_tests.fixtures_spark_cluster import lake_at, lake_tables, table_rows
from stream_assets_tests.reference import assert_rows_equal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLES = ("raw_events", "event_counts", "user_sessions")


@pytest.fixture(scope="module")
def connect_run(connect_server, cluster_events, tmp_path_factory):
    """Two materializations through the server: all the input, then nothing new. The first
    foreachBatch worker starts too late (connect_server's `slow-once`), as on a loaded server."""
    (connect_server.home / "slow-once").touch()
    lake = lake_at(tmp_path_factory.mktemp("connect_run"))
    report = materialize_elsewhere(
        ["--remote", connect_server.url],
        bootstrap=cluster_events.bootstrap,
        topics=cluster_events.topics,
        tables_root=lake.tables_root,
        checkpoints_root=lake.checkpoints_root,
        tables=TABLES,
        runs=2,
    )
    return lake, report


def test_connect_run_writes_each_record_once(connect_run, cluster_events, connect_server):
    # The server has no `udf` jar, as a user's own server need not: the event parser reached
    # it as an artifact of the run's session (resources/spark.py upload_functions).
    assert "stream-assets-udf" not in connect_server.server_config()["spark.jars"]
    lake, report = connect_run
    expected = cluster_events.expected()
    assert lake_tables(lake) == expected
    first = report["runs"][0]["assets"]
    assert first["raw_events"]["rows_read"] == len(cluster_events.records)
    assert first["raw_events"]["rows_written"] == sum(expected.events.values())


def test_a_worker_that_connects_back_late_is_retried_and_lands_each_record_once(
        connect_run, connect_server, cluster_events):
    """The server missed the first foreachBatch worker's connect-back (a busy server), and the
    run retried the query from its checkpoint: the tables still hold each record once."""
    lake, report = connect_run
    assert (connect_server.home / "slow-done").is_dir(), "no worker started late"
    warnings = report["runs"][0]["warnings"]
    assert any("did not connect back in time" in w for w in warnings), warnings
    assert lake_tables(lake) == cluster_events.expected()


def test_foreach_batch_merge_through_connect_equals_the_reference(connect_run, cluster_events,
                                                                  spark):
    lake, _ = connect_run
    assert_rows_equal(table_rows(spark, lake, "event_counts"),
                      reference.event_counts(cluster_events.good_events))


def test_stateful_user_sessions_through_connect_equal_the_reference(connect_run, cluster_events,
                                                                   spark):
    lake, _ = connect_run
    assert_rows_equal(table_rows(spark, lake, "user_sessions"),
                      reference.user_sessions(cluster_events.good_events))


def test_materialization_with_no_new_data_through_connect_changes_nothing(connect_run):
    _, report = connect_run
    first, second = (run["assets"] for run in report["runs"])
    assert set(first) == {"raw_events", "dead_letter_queue", *TABLES}
    for table, meta in second.items():
        assert meta["rows_read"] == 0, table
        assert meta["delta_version"] == first[table]["delta_version"], table
