"""The demo's user dimension: a small batch table that enriched_events joins to."""

from __future__ import annotations

import random
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DateType, StringType, StructField, StructType

USER_DIMENSION = StructType(
    [
        StructField("user_id", StringType(), False),
        StructField("user_name", StringType(), True),
        StructField("user_segment", StringType(), True),
        StructField("registration_date", DateType(), True),
    ]
)
SEGMENTS = ("free", "pro", "enterprise")
FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Donald")


def generate_users(count: int, *, seed: int = 0) -> list[dict]:
    """Users `user-0` … `user-{count-1}`, matching the ids the event generator uses."""
    rng = random.Random(seed)
    return [
        {
            "user_id": f"user-{i}",
            "user_name": f"{rng.choice(FIRST)} {i}",
            "user_segment": rng.choice(SEGMENTS),
            "registration_date": date(2024, 1, 1) + timedelta(days=rng.randrange(700)),
        }
        for i in range(count)
    ]


def user_frame(spark: SparkSession, users: list[dict]) -> DataFrame:
    return spark.createDataFrame(
        [tuple(u[f.name] for f in USER_DIMENSION.fields) for u in users], USER_DIMENSION
    )


def demo_users(spark: SparkSession, count: int) -> DataFrame:
    """`count` demo users as a frame: the seed of the demo's user_dimension asset."""
    return user_frame(spark, generate_users(count))
