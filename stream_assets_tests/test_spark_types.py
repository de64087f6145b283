"""A type built in Python reaches Spark as DDL (stream_assets/spark_types.py), and Spark reads
that DDL as the very same type: names that need quoting, NOT NULL and comments of struct
fields, and collations other than the default included. Through Spark Connect, the same DDL
gives plain strings where the DataType object gave collated ones (test_spark_connect.py)."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    ByteType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from stream_assets import schemas
from stream_assets.records.json_records import JsonRecords
from stream_assets.spark_types import ddl
from stream_assets.tables import dead_letters

pytestmark = pytest.mark.integration

RECORD = StructType([
    StructField("id", StringType(), False, {"comment": "the producer's id, it's unique"}),
    StructField("odd name `with` ticks", ByteType()),
    StructField("ünïcode", ShortType()),
    StructField("amount", DecimalType(12, 2), False),
    StructField("flags", ArrayType(BooleanType())),
    StructField("attributes", MapType(StringType(), ArrayType(DoubleType()))),
    StructField("customer", StructType([
        StructField("id", LongType(), False),
        StructField("since", DateType()),
        StructField("seen", TimestampNTZType()),
        StructField("photo", BinaryType()),
        StructField("score", FloatType()),
    ])),
    StructField("at", TimestampType(), False),
    StructField("n", IntegerType()),
])

TYPES: dict[str, DataType] = {
    "dead letters": dead_letters.SCHEMA,
    "raw_events": schemas.RAW_EVENTS,
    "a record parser's return type": StructType(
        [*JsonRecords(RECORD).columns.fields, StructField("error", StringType())]),
    "a collated string": StructType([StructField("name", StringType("UTF8_LCASE"), False)]),
}


@pytest.mark.parametrize("data_type", TYPES.values(), ids=TYPES.keys())
def test_spark_reads_the_ddl_as_the_same_type(spark, data_type):
    cast = spark.range(0).select(F.lit(None).cast(ddl(data_type)).alias("c"))
    assert cast.schema["c"].dataType == data_type


def test_the_default_collation_is_not_named():
    # Naming UTF8_BINARY is what makes a string explicitly collated.
    assert "COLLATE" not in ddl(dead_letters.SCHEMA)
    assert ddl(StringType()) == "STRING"
    assert ddl(StringType("UNICODE_CI")) == "STRING COLLATE `UNICODE_CI`"
