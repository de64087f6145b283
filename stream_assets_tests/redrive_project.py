"""A small project for test_redrive.py: payments whose producer once sent epoch milliseconds.

`payments` reads JSON payments (`id`, `customer`, `amount`, `ts`) with a parser of its own and
drops non-positive amounts (an expectation); `payment_totals` streams from it. Parser v1 reads
`ts` as ISO-8601 text only; v2, the fix, also reads epoch milliseconds, the format a producer
switched to for a while. The parser keeps Kafka's `timestamp` as `kafka_timestamp`, so the dead
letters keep it and a re-driven row gets its record's own. `defs` (v2, resources from the
environment) is what `stream-assets redrive --definitions
stream_assets_tests.redrive_project:defs` loads in the test's killed subprocess.

`payments_typed` reads the same topic through a declared schema (`kafka_topic(schema=...)`):
v1 refuses a record whose `ts` is not ISO-8601 text (the epoch milliseconds); v2, the fix
that changes no column's type, keeps such a record with `ts` null and its value in
`_rescued_data` (`wrong_types="rescue"`, `ts` no longer required).
"""

from __future__ import annotations

import os

from dagster import Definitions
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stream_assets import (
    DeltaLake,
    DeltaMerge,
    KafkaSource,
    SparkResource,
    StreamingTable,
    build_definitions,
    expect_or_drop,
    kafka_topic,
    upstream,
)

TOPIC_ENV = "STREAM_ASSETS_TEST_REDRIVE_TOPIC"
FIELDS = "id STRING, customer STRING, amount INT, ts STRING"
MISSING_ID = "missing id"
BAD_TS = "unparseable ts"
NOT_POSITIVE = "amount_positive"
# payments_typed's record schema; v1 also requires `ts`.
TYPED = "id STRING NOT NULL, customer STRING, amount INT, ts TIMESTAMP"
TYPED_BAD_TS = "wrong type: ts must be an ISO-8601 timestamp"


def _parse(kafka: DataFrame, epoch_millis: bool) -> DataFrame:
    record = F.from_json(F.col("value").cast("string"), FIELDS)
    text = record["ts"]
    ts = F.when(text.rlike(r"^\d{4}-\d{2}-\d{2}"), text.try_cast("timestamp"))
    if epoch_millis:
        ts = F.coalesce(ts, F.when(text.rlike(r"^\d{12,13}$"),
                                   F.timestamp_millis(text.cast("long"))))
    error = (F.when(record.isNull() | record["id"].isNull(), F.lit(MISSING_ID))
             .when(ts.isNull(), F.lit(BAD_TS)))
    return kafka.select(
        record["id"].alias("id"), record["customer"].alias("customer"),
        record["amount"].alias("amount"), ts.alias("ts"),
        "key", "value", "topic", "partition", "offset",
        F.col("timestamp").alias("kafka_timestamp"), error.alias("error"))


def parse_v1(kafka: DataFrame) -> DataFrame:
    return _parse(kafka, epoch_millis=False)


def parse_v2(kafka: DataFrame) -> DataFrame:
    return _parse(kafka, epoch_millis=True)


def totals(payments: DataFrame) -> DataFrame:
    return payments.groupBy("customer").agg(F.count(F.lit(1)).alias("payments"),
                                            F.sum("amount").alias("total"))


def tables(version: int) -> list[StreamingTable]:
    payments = StreamingTable(
        name="payments",
        sources={"payments": kafka_topic("payments",
                                         parser=parse_v2 if version == 2 else parse_v1)},
        keys=("topic", "partition", "offset"), unique_keys=True,
        expectations=(expect_or_drop(NOT_POSITIVE, "amount > 0"),),
    )
    payment_totals = StreamingTable(
        name="payment_totals", sources={"payments": upstream("payments")}, transform=totals,
        sink=DeltaMerge(stamp_column=None), keys=("customer",),
    )
    payments_typed = StreamingTable(
        name="payments_typed",
        sources={"payments": kafka_topic(
            "payments", schema=TYPED if version == 2 else TYPED + " NOT NULL",
            wrong_types="rescue" if version == 2 else "dead_letter")},
        keys=("topic", "partition", "offset"), unique_keys=True,
    )
    return [payments, payment_totals, payments_typed]


def definitions(version: int, resources: dict | None = None) -> Definitions:
    return build_definitions(tables(version), resources=resources or {
        "spark": SparkResource(master="local[2]", spark_config={
            "spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"}),
        "lake": DeltaLake(),
        "stream_source": KafkaSource(topic_names={"payments": os.environ.get(TOPIC_ENV,
                                                                              "payments")}),
    })


defs = definitions(2)
