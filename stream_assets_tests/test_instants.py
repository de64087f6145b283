"""A batch's time as a column whose generated code does not change from batch to batch.

Spark writes a timestamp literal into the Java code it generates, so the MERGE sink's
`updated_at`, a new literal in every micro-batch, made every batch compile its code again.
`records.functions.instant` passes the instant as text; these tests run compiled, as users do,
and count Spark's compilations.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import functions as F

from stream_assets.records.functions import instant
from stream_assets_tests.interpreted import compiled

pytestmark = pytest.mark.integration
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def compilations(spark) -> int:
    return spark._jvm.org.apache.spark.metrics.source.CodegenMetrics \
        .METRIC_COMPILATION_TIME().getCount()


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def test_an_instant_reads_back_exactly_and_is_not_null(spark):
    moments = [datetime(2026, 12, 7, 22, 54, 44, 230735, tzinfo=UTC),
               datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
               datetime(1, 1, 1, tzinfo=UTC)]
    frame = spark.range(1).select(*[
        instant(spark, m).alias(f"t{i}") for i, m in enumerate(moments)])
    assert all(not field.nullable for field in frame.schema.fields)
    # Compared as microseconds: Python cannot hold every instant Spark can (year 1 in UTC-x).
    got = frame.select(*[F.unix_micros(c).alias(c) for c in frame.columns]).collect()[0]
    assert list(got) == [micros(m) for m in moments]


def test_a_batch_stamped_with_its_time_compiles_its_code_once(spark, tmp_path):
    """What the MERGE sink does to every micro-batch (its `updated_at`), in foreachBatch."""
    source = tmp_path / "source"
    for n in range(3):
        spark.range(n * 100, n * 100 + 100).coalesce(1).write.mode("append").parquet(
            str(source))

    def compiled_after_first_batch(stamp, name: str) -> int:
        counts: list[int] = []

        def write(batch, _):
            batch.withColumn("at", stamp(batch)).write.format("noop").mode("overwrite").save()
            counts.append(compilations(spark))

        query = (spark.readStream.schema("id long").option("maxFilesPerTrigger", 1)
                 .parquet(str(source)).writeStream.foreachBatch(write)
                 .option("checkpointLocation", str(tmp_path / name))
                 .trigger(availableNow=True).start())
        query.awaitTermination()
        assert len(counts) == 3, counts  # one batch per file
        return counts[-1] - counts[0]

    with compiled(spark):
        assert compiled_after_first_batch(
            lambda b: instant(b.sparkSession, datetime.now(UTC)), "instant") == 0
        # What it replaces: a timestamp literal, new code every batch.
        assert compiled_after_first_batch(lambda b: F.lit(datetime.now(UTC)), "literal") > 0
