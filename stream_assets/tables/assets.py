"""Dagster assets derived from table declarations."""


import time
from collections.abc import Iterator, Sequence
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pydantic import Field
from pyspark.sql import SparkSession

from stream_assets.monitoring.metadata import query_metadata, rows_written, table_schema
from stream_assets.sinks import delta_history
from stream_assets.tables.declaration import KafkaTopic, StreamingTable
from stream_assets.tables.runner import CatchUpResult, StreamContext, catch_up

RESOURCE_KEYS = {"spark", "lake", "stream_source"}


class CatchUpConfig(Config):
    full_refresh: bool = Field(
        default=False,
        description="Delete the checkpoint and the tables, then rebuild them from the sources.",
    )


def table_metadata(spark: SparkSession, path: str, before: int | None, after: int | None
                   ) -> dict[str, Any]:
    """What a table looks like after a run, and what the run's commits wrote to it."""
    if after is None:
        return {"path": MetadataValue.path(path), "delta_version": -1, "dagster/row_count": 0}
    new_commits = []
    if before is None or after > before:
        first = 0 if before is None else before + 1
        new_commits = [
            commit for commit in delta_history(spark, path, after - first + 1)
            if commit["version"] >= first
        ]
    frame = spark.read.format("delta").load(path)
    return {
        "path": MetadataValue.path(path),
        "delta_version": after,
        "rows_written": rows_written(new_commits),
        "dagster/row_count": frame.count(),
        "dagster/column_schema": table_schema(frame.schema),
        "dagster/uri": MetadataValue.url(f"file://{path}") if "://" not in path else path,
    }


def source_specs(tables: Sequence[StreamingTable]) -> list[AssetSpec]:
    """Kafka topics as external assets: the roots of the lineage graph."""
    topics = sorted({s.topic for t in tables for s in t.sources if isinstance(s, KafkaTopic)})
    return [
        AssetSpec(
            key=AssetKey(["kafka", topic]),
            description=f"Kafka topic `{topic}` (or the Event Hub the stream source maps it to).",
            group_name="sources",
            kinds={"kafka"},
        )
        for topic in topics
    ]


def build_asset(table: StreamingTable):
    """The catch-up asset of a declared table: one materialization per table it writes."""
    specs = [
        AssetSpec(
            key=AssetKey(name),
            deps=list(table.dependencies),
            description=table.description if name == table.name
            else f"Written by the {table.name} query: {table.description}",
            group_name=table.group,
            kinds={"delta", "spark"},
            tags=table.tags,
            metadata={"query": table.name, "keys": ", ".join(table.keys) or "-"},
        )
        for name in table.tables
    ]

    @multi_asset(
        name=table.name,
        specs=specs,
        required_resource_keys=RESOURCE_KEYS,
        can_subset=False,
        description=table.description,
    )
    def _catch_up(context: AssetExecutionContext, config: CatchUpConfig
                  ) -> Iterator[MaterializeResult]:
        ctx = StreamContext(
            spark=context.resources.spark.spark_session,
            lake=context.resources.lake,
            source=context.resources.stream_source,
        )
        started = time.monotonic()
        result: CatchUpResult = catch_up(table, ctx, refresh=config.full_refresh)
        shared = query_metadata(result.progress, result.initial_offsets)
        shared["query_seconds"] = round(time.monotonic() - started, 3)
        context.log.info(
            f"{table.name}: read {shared['rows_read']} rows in {shared['batches']} batch(es) "
            f"in {shared['query_seconds']:.1f} s"
        )
        for name in table.tables:
            meta = dict(shared)
            meta.update(
                table_metadata(
                    ctx.spark,
                    ctx.lake.table_path(name),
                    result.versions_before[name],
                    result.versions_after[name],
                )
            )
            yield MaterializeResult(asset_key=AssetKey(name), metadata=meta)

    return _catch_up
