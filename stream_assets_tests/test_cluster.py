"""The same assets on a Spark standalone cluster: a real master, worker and executor JVMs.

The cluster run happens in a child process (stream_assets_tests.cluster_runner): this process
already holds the local SparkContext, and pyspark allows one per process. Its lake is on the
test S3 server, so the executors write to object storage as on a real cluster (issue 14).
"""

from __future__ import annotations

import uuid

import pytest

from stream_assets.resources import SparkResource
from stream_assets_tests import reference
from stream_assets_tests.cluster_runner import materialize_elsewhere
from stream_assets_tests.fixtures_spark_cluster import lake_tables, table_rows
from stream_assets_tests.reference import assert_rows_equal

LOOPBACK = ("spark.driver.host", "spark.driver.bindAddress")


def test_local_master_keeps_the_driver_on_loopback():
    conf = SparkResource().session_config()
    assert all(conf[key] == "127.0.0.1" for key in LOOPBACK)


@pytest.mark.parametrize("master", ["spark://spark-master.internal:7077",
                                    "k8s://https://kubernetes.internal:6443", "yarn"])
def test_cluster_masters_leave_the_driver_reachable_and_ship_the_jars(master):
    extra = {"spark.kubernetes.container.image": "registry.internal/stream-assets:1",
             "spark.executor.instances": "3"}
    resource = SparkResource(master=master, spark_config=extra)
    conf = resource.session_config()
    # Executors on other machines must reach the driver: no loopback unless the user sets it.
    assert not any(key in conf for key in LOOPBACK)
    assert "delta-spark" in conf["spark.jars"] and "spark-sql-kafka" in conf["spark.jars"]
    assert {k: conf[k] for k in extra} == extra  # passed through untouched
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"


@pytest.fixture(scope="module")
def cluster_run(spark_cluster, cluster_events, s3_server):
    """raw_events and event_counts materialized on the cluster, once for this module, with the
    lake on the test S3 server: the executors write the tables and the state store there, as
    on a real cluster (issue 14); the tests compare them with what the records predict."""
    lake = s3_server.lake(s3_server.uri(f"cluster-run-{uuid.uuid4().hex[:8]}"))
    settings = {key: getattr(lake, key) for key in (
        "s3_endpoint", "s3_region", "s3_path_style_access", "s3_access_key_id",
        "s3_secret_access_key", "hadoop_config")}
    report = materialize_elsewhere(
        ["--master", spark_cluster.master_url],
        conf={**spark_cluster.client_config(), "spark.sql.shuffle.partitions": "2"},
        bootstrap=cluster_events.bootstrap,
        topics=cluster_events.topics,
        tables_root=lake.tables_root,
        checkpoints_root=lake.checkpoints_root,
        tables=("raw_events", "event_counts"),
        lake=settings,
    )
    return lake, report


@pytest.mark.integration
@pytest.mark.slow
def test_cluster_run_writes_each_record_once(cluster_run, cluster_events):
    lake, report = cluster_run
    assert lake_tables(lake) == cluster_events.expected()
    (run,) = report["runs"]
    assert run["assets"]["raw_events"]["rows_read"] == len(cluster_events.records)


@pytest.mark.integration
@pytest.mark.slow
def test_cluster_run_merges_event_counts_like_the_reference(cluster_run, cluster_events, spark):
    lake, _ = cluster_run
    assert_rows_equal(table_rows(spark, lake, "event_counts"),
                      reference.event_counts(cluster_events.good_events))


@pytest.mark.integration
@pytest.mark.slow
def test_cluster_executors_got_the_jars_and_ran_the_queries(cluster_run, spark_cluster):
    # spark.jars names local files; the driver served them to the executors, which keep a copy
    # in their work folder. Nothing was copied to the worker by hand.
    shipped = {p.name for p in (spark_cluster.home / "work").rglob("*.jar")}
    assert any(n.startswith("delta-spark_") for n in shipped)
    assert any(n.startswith("spark-sql-kafka-0-10_") for n in shipped)
    assert any(n.startswith("hadoop-aws-") for n in shipped)  # S3A, for the lake on S3
    apps = spark_cluster.status()["completedapps"]
    assert apps and all(app["state"] == "FINISHED" for app in apps)
