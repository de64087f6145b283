"""The same assets through a real Spark Connect server: the Dagster process holds no JVM.

A Connect client switches its whole Python process to Connect mode, so the materializations
run in a child process (stream_assets_tests.cluster_runner); this process reads the resulting
Delta tables (delta-rs, and its local SparkSession) and compares them with what the records
predict, the plain-Python reference, and the schemas a local materialization writes
(table_schemas.py). foreachBatch (the raw_events split, the event_counts MERGE) and the
stateful user_sessions processor run in Python workers of the server.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import timedelta

import pytest

from stream_assets.dev.generator import DEFAULT_START, Record, generate_ad_traffic, iso
from stream_assets.dev.producer import produce
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables import catalog
from stream_assets_tests import reference
from stream_assets_tests.cluster_runner import materialize_elsewhere
from stream_assets_tests.fixtures_s3 import delta_rs
from stream_assets_tests.fixtures_spark_cluster import lake_at, lake_tables, table_rows
from stream_assets_tests.reference import assert_rows_equal
from stream_assets_tests.table_schemas import delta_schemas, local_schemas, logged_schemas

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Every table of the demo, so each is written through Connect once (issue 28: a dead-letter
# table written through Connect had collated strings that delta-rs refused).
TABLES = ("user_dimension", *(t.name for t in catalog.TABLES))
WRITTEN = ("user_dimension", *(name for t in catalog.TABLES for name in t.tables))
# Records of the ad topics that are not usable, each with bytes that are not UTF-8.
HOSTILE_ADS = [Record(topic, None, b"\xff\xfe{\"id\": \"\xc3\x28\"}", "not_utf8", None)
               for topic in ("impressions", "clicks")]


@pytest.fixture(scope="module")
def ad_topics(kafka_broker):
    """A little ad traffic for impression_clicks, a bad record in each topic, and an
    impression and a click a day later that close the join's watermark."""
    suffix = uuid.uuid4().hex[:10]
    topics = {name: f"cluster-{name}-{suffix}" for name in ("impressions", "clicks")}
    kafka_broker.create_topics(list(topics.values()))
    later = iso(DEFAULT_START + timedelta(days=1))
    closers = [
        {"impression_id": "imp-closer", "ad_id": "ad-x", "user_id": "closer", "timestamp": later},
        {"click_id": "clk-closer", "impression_id": "imp-closer", "timestamp": later},
    ]
    records = [*generate_ad_traffic(20, seed=7, click_ratio=0.5, users=8),
               *(Record(t, b"c", json.dumps(e).encode(), "good", e)
                 for t, e in zip(("impressions", "clicks"), closers, strict=True)),
               *HOSTILE_ADS]
    produce([Record(topics[r.topic], r.key, r.value, r.kind, r.event) for r in records],
            KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))
    yield topics
    with contextlib.suppress(Exception):
        kafka_broker.delete_topics(list(topics.values()))


@pytest.fixture(scope="module")
def connect_run(connect_server, cluster_events, ad_topics, tmp_path_factory):
    """Two materializations of every table through the server: all the input, then nothing
    new. The first foreachBatch worker starts too late (connect_server's `slow-once`), as on a
    loaded server."""
    (connect_server.home / "slow-once").touch()
    lake = lake_at(tmp_path_factory.mktemp("connect_run"))
    report = materialize_elsewhere(
        ["--remote", connect_server.url],
        bootstrap=cluster_events.bootstrap,
        topics={**cluster_events.topics, **ad_topics},
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
    assert set(first) == set(WRITTEN)
    for table, meta in second.items():
        # user_dimension reads no stream: its metadata has no rows_read.
        assert meta.get("rows_read", 0) == 0, table
        assert meta["delta_version"] == first[table]["delta_version"], table


def test_every_table_through_connect_has_the_local_schema_and_opens_in_delta_rs(connect_run):
    """Spark Connect sends a type built in Python with every string collated: a table written
    from one had `string collate UTF8_BINARY` columns, which delta-rs refuses (issue 28)."""
    lake, _ = connect_run
    assert delta_schemas(lake, list(WRITTEN)) == local_schemas()
    for table in WRITTEN:
        for schema in logged_schemas(lake.table_path(table)):
            assert "collat" not in schema.lower(), (table, schema)
    # The bad ad records' dead letters, read by delta-rs: their exact bytes, and a readable
    # (UTF-8) raw_value.
    letters = delta_rs(lake, "impression_clicks_dead_letters").to_pyarrow_table().to_pylist()
    assert sorted(r["raw_bytes"] for r in letters) == sorted(r.value for r in HOSTILE_ADS)
    assert all("\ufffd" in r["raw_value"] for r in letters)
