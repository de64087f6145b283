"""Where tables and checkpoints live: one root, a folder per table under each."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from stream_assets import paths


class DeltaLake(ConfigurableResource):
    """Locations of Delta tables and streaming checkpoints.

    Local paths by default (under STREAM_ASSETS_HOME); any Hadoop URI the Spark session can
    write (abfss://, s3a://, hdfs://) works for cluster and Spark Connect deployments.
    """

    tables_root: str = Field(
        default_factory=lambda: str(paths.tables_dir()), description="Root of the Delta tables."
    )
    checkpoints_root: str = Field(
        default_factory=lambda: str(paths.checkpoints_dir()),
        description="Root of the streaming checkpoints (one folder per query).",
    )

    def table_path(self, table: str) -> str:
        return f"{self.tables_root.rstrip('/')}/{table}"

    def checkpoint_path(self, query: str) -> str:
        return f"{self.checkpoints_root.rstrip('/')}/{query}"
