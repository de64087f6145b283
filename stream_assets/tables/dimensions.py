"""Batch tables that streams join to."""

from collections.abc import Callable
from typing import Any

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

from stream_assets.delta_log import commit_of
from stream_assets.lake_files import LakeFiles
from stream_assets.monitoring.metadata import table_schema
from stream_assets.sinks import delta_version, is_delta_table

# The newest commit the metadata describes (version@commit file time), to tell it unchanged.
COMMIT = "delta_commit"

# Writes `count` users as a frame of user_dimension's columns.
UserSeed = Callable[[SparkSession, int], DataFrame]


class UserDimensionConfig(Config):
    users: int = Field(default=50, description="How many demo users to write when seeding.")
    overwrite: bool = Field(
        default=False,
        description="Replace an existing table with demo users (off: a user's own table is kept).",
    )


USER_COLUMNS = {
    "user_id": "The user's id, as events carry it in user_id.",
    "user_name": "Display name.",
    "user_segment": "Marketing segment.",
    "registration_date": "When the user registered.",
}


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
        lake = context.resources.lake
        path = lake.table_path("user_dimension")
        unchanged = None if config.overwrite else unchanged_since_recorded(context, path,
                                                                           lake.files)
        if unchanged is not None:
            # Nothing to seed and nothing changed: no SparkSession for a figure already known.
            context.log.info("user_dimension unchanged since its last materialization")
            return MaterializeResult(metadata=unchanged)
        spark = context.resources.spark.spark_session
        lake.attach(spark)
        if config.overwrite or not is_delta_table(spark, path):
            seed(spark, config.users).write.format("delta").mode(
                "overwrite"
            ).option("overwriteSchema", "true").save(path)
            context.log.info(f"wrote {config.users} demo users to {path}")
        # Before the count: a later commit makes it differ, not lie.
        commit = commit_of(path, lake.files)
        frame = spark.read.format("delta").load(path)
        meta = {
            "path": MetadataValue.path(path),
            "delta_version": delta_version(spark, path, lake.files),
            "dagster/row_count": frame.count(),
            "dagster/column_schema": table_schema(frame.schema, USER_COLUMNS),
        }
        if commit is not None:
            meta[COMMIT] = commit_key(commit)
        return MaterializeResult(metadata=meta)

    return user_dimension


def unchanged_since_recorded(context: AssetExecutionContext, path: str, files: LakeFiles
                             ) -> dict[str, Any] | None:
    """The last materialization's metadata when the table is still at the version it
    recorded (told from the Delta log's listing, without Spark), else None."""
    commit = commit_of(path, files)
    event = context.instance.get_latest_materialization_event(context.asset_key)
    recorded = event.asset_materialization if event is not None else None
    if commit is None or recorded is None:
        return None
    meta = recorded.metadata
    if COMMIT not in meta or meta[COMMIT].value != commit_key(commit):
        return None
    return {**meta, "unchanged": True}


def commit_key(commit: tuple[int, float]) -> str:
    return f"{commit[0]}@{commit[1]:.6f}"
