"""Batch tables that streams join to."""

from collections.abc import Callable

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field
from pyspark.sql import DataFrame, SparkSession

from stream_assets.monitoring.metadata import table_schema
from stream_assets.sinks import delta_version, is_delta_table

# Writes `count` users as a frame of user_dimension's columns.
UserSeed = Callable[[SparkSession, int], DataFrame]


class UserDimensionConfig(Config):
    users: int = Field(default=50, description="How many demo users to write when seeding.")
    overwrite: bool = Field(
        default=False,
        description="Replace an existing table with demo users (off: a user's own table is kept).",
    )


def build_user_dimension(seed: UserSeed) -> AssetsDefinition:
    """The `user_dimension` asset, seeded with `seed(spark, config.users)` when missing.

    The seed is a parameter because the users are the demo's (dev/users.py): the deployed
    definitions plug them in, and this module does not depend on the demo.
    """

    @asset(
        name="user_dimension",
        group_name="dimensions",
        kinds={"delta", "spark"},
        required_resource_keys={"spark", "lake"},
        description="Users (user_id, user_name, user_segment, registration_date), joined into "
        "enriched_events. Seeded with demo users when missing; replace it with your own table "
        "at the same path and enriched events pick it up from the next micro-batch.",
    )
    def user_dimension(context: AssetExecutionContext, config: UserDimensionConfig
                       ) -> MaterializeResult:
        spark = context.resources.spark.spark_session
        path = context.resources.lake.table_path("user_dimension")
        if config.overwrite or not is_delta_table(spark, path):
            seed(spark, config.users).write.format("delta").mode(
                "overwrite"
            ).option("overwriteSchema", "true").save(path)
            context.log.info(f"wrote {config.users} demo users to {path}")
        frame = spark.read.format("delta").load(path)
        return MaterializeResult(
            metadata={
                "path": MetadataValue.path(path),
                "delta_version": delta_version(spark, path),
                "dagster/row_count": frame.count(),
                "dagster/column_schema": table_schema(frame.schema),
            }
        )

    return user_dimension
