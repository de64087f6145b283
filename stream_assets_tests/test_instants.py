"""A batch's time as a column whose generated code does not change from batch to batch.

Spark writes a timestamp literal into the Java code it generates, so `current_timestamp()` made
every micro-batch of raw_events (and every MERGE batch's `updated_at`, every dead letter's
`error_time`) compile its code again. `records.functions.instant` passes the instant as text;
these tests run compiled, as users do, and count Spark's compilations.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import functions as F

from stream_assets.records.functions import batch_instant, instant
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
        instant(spark, F.lit(micros(m))).alias(f"t{i}") for i, m in enumerate(moments)])
    assert all(not field.nullable for field in frame.schema.fields)
    # Compared as microseconds: Python cannot hold every instant Spark can (year 1 in UTC-x).
    got = frame.select(*[F.unix_micros(c).alias(c) for c in frame.columns]).collect()[0]
    assert list(got) == [micros(m) for m in moments]


def test_a_new_instant_compiles_no_new_code_where_current_timestamp_does(spark):
    with compiled(spark):
        rows = spark.range(2000).repartition(2)

        def new_code(column) -> int:
            # A query run twice: the second run's code is the same unless its literal changed.
            rows.select("id", column().alias("at")).write.format("noop").mode(
                "overwrite").save()
            before = compilations(spark)
            rows.select("id", column().alias("at")).write.format("noop").mode(
                "overwrite").save()
            return compilations(spark) - before

        assert new_code(lambda: batch_instant(spark)) == 0
        assert new_code(lambda: F.current_timestamp()) > 0  # what it replaces
