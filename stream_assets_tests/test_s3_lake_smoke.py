"""A Delta lake on the test S3 server through Hadoop's S3A (issue 14): the jars and the server.

The session's SparkResource carries the S3A settings (conftest.py, from
`s3_server.spark_hadoop_config()`); here a streaming query writes a Delta table and its checkpoint
to s3a://, and three readers that share no code with the writer check it: Spark, delta-rs and
pyarrow's S3 filesystem. Then the server goes away mid-session and comes back.
"""

from __future__ import annotations

import time

import pytest
from pyarrow import fs as pafs
from pyspark.sql import functions as F

pytestmark = pytest.mark.integration

SCHEMA = "id long, name string"


def rows(first: int, count: int) -> list[tuple[int, str]]:
    return [(i, f"name-{i}") for i in range(first, first + count)]


def expected(source_rows: list[tuple[int, str]]) -> list[dict]:
    """What the query below writes, computed without Spark."""
    return sorted(({"id": i, "name": n, "id_squared": i * i} for i, n in source_rows),
                  key=lambda r: r["id"])


def catch_up(spark, source: str, target: str, checkpoint: str) -> None:
    query = (
        spark.readStream.format("delta").load(source)
        .withColumn("id_squared", F.col("id") * F.col("id"))
        .writeStream.format("delta")
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .start(target)
    )
    query.awaitTermination(120)
    assert query.exception() is None


def key(uri: str) -> str:
    """`s3a://bucket/a/b` -> `bucket/a/b`, the form pyarrow's S3FileSystem takes."""
    return uri.split("://", 1)[1]


@pytest.fixture(autouse=True)
def s3a_ready(spark, s3_server) -> None:
    """Say what to fix when the session cannot reach s3a:// at all, not a class-not-found."""
    from stream_assets import jars

    assert any(j.name.startswith("hadoop-aws-") for j in jars.jars("spark")), (
        f"no hadoop-aws jar in {jars.group_dir('spark')}: run 'stream-assets setup' again "
        "(jvm/spark/pom.xml names it)"
    )
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    assert conf.get("fs.s3a.endpoint") == s3_server.endpoint_url, (
        "the shared SparkSession started without the test S3 server's S3A settings "
        "(conftest.py's spark_resource must carry s3_server.spark_hadoop_config())"
    )


def test_streaming_delta_table_and_checkpoint_on_s3(spark, s3_server, s3_workdir):
    source, target = f"{s3_workdir}/source", f"{s3_workdir}/target"
    checkpoint = f"{s3_workdir}/_checkpoints/target"

    first, second = rows(0, 20), rows(20, 5)
    spark.createDataFrame(first, SCHEMA).write.format("delta").save(source)
    catch_up(spark, source, target, checkpoint)
    spark.createDataFrame(second, SCHEMA).write.format("delta").mode("append").save(source)
    catch_up(spark, source, target, checkpoint)
    catch_up(spark, source, target, checkpoint)  # nothing new: no commit, no duplicates

    want = expected(first + second)
    by_spark = [r.asDict() for r in spark.read.format("delta").load(target).orderBy("id").collect()]
    assert by_spark == want

    from deltalake import DeltaTable

    table = DeltaTable(f"s3://{key(target)}", storage_options=s3_server.storage_options())
    by_delta_rs = sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["id"])
    assert by_delta_rs == want
    assert table.version() == 1  # one commit per catch-up that had new rows

    s3 = s3_server.pyarrow_filesystem()
    log = s3.get_file_info(pafs.FileSelector(key(target) + "/_delta_log"))
    commits = sorted(f.base_name for f in log if f.base_name.endswith(".json"))
    assert commits == [f"{v:020d}.json" for v in range(2)]
    # The query's progress lives on S3 too: two batches committed, in offsets and commits.
    for part in ("offsets", "commits"):
        done = s3.get_file_info(pafs.FileSelector(f"{key(checkpoint)}/{part}"))
        assert sorted(f.base_name for f in done if f.base_name.isdigit()) == ["0", "1"]


def test_write_fails_fast_while_the_server_is_down_and_works_after(spark, s3_server, s3_workdir):
    table = f"{s3_workdir}/table"
    spark.createDataFrame(rows(0, 3), SCHEMA).write.format("delta").save(table)

    with s3_server.outage():
        started = time.monotonic()
        with pytest.raises(Exception) as failed:
            spark.createDataFrame(rows(3, 3), SCHEMA).write.format("delta").mode("append") \
                .save(table)
        took = time.monotonic() - started
    message = str(failed.value)
    assert "Connection refused" in message, message[:2000]
    assert s3_server.endpoint_url.removeprefix("http://") in message
    assert took < 15, f"S3A took {took:.1f} s to give up; are FAST_FAILING_S3A's retries applied?"

    # Back on the same port, with the objects written before the outage still there.
    spark.createDataFrame(rows(3, 3), SCHEMA).write.format("delta").mode("append").save(table)
    got = sorted(tuple(r) for r in spark.read.format("delta").load(table).collect())
    assert got == rows(0, 6)
