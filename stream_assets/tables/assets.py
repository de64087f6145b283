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

from stream_assets.monitoring.metadata import (
    query_metadata,
    row_count_after,
    rows_written,
    table_schema,
)
from stream_assets.sinks import delta_history
from stream_assets.tables.declaration import KafkaTopic, StreamingTable
from stream_assets.tables.runner import CatchUpResult, StreamContext, catch_up

RESOURCE_KEYS = {"spark", "lake", "stream_source"}


class CatchUpConfig(Config):
    full_refresh: bool = Field(
        default=False,
        description="Delete the checkpoint and the tables, then rebuild them from the sources.",
    )


def table_metadata(
    spark: SparkSession,
    path: str,
    before: int | None,
    after: int | None,
    recorded: tuple[int, int, float] | None = None,
) -> dict[str, Any]:
    """What a table looks like after a run, and what the run's commits wrote to it.

    `recorded` is the (Delta version, row count, commit time) of the table's last
    materialization; it spares a count of the whole table when the run's commits say how
    the count changed. The commit time tells a table recreated since then from the same one.
    """
    if after is None:
        return {"path": MetadataValue.path(path), "delta_version": -1, "dagster/row_count": 0}
    first = 0 if before is None else before + 1
    # One commit more than the run made: the one at `before` anchors the recorded count.
    history = delta_history(spark, path, after - first + 2)
    new_commits = [c for c in history if c["version"] >= first]
    anchor = next((c for c in history if c["version"] == before), None)
    known = None
    if recorded is not None and anchor is not None and recorded[0] == before \
            and abs(recorded[2] - anchor["timestamp"].timestamp()) < 0.001:
        known = recorded[:2]
    count = row_count_after(new_commits, before, after, known)
    frame = spark.read.format("delta").load(path)
    return {
        "path": MetadataValue.path(path),
        "delta_version": after,
        "delta_commit_time": MetadataValue.timestamp(history[0]["timestamp"].timestamp()),
        "rows_written": rows_written(new_commits),
        "dagster/row_count": frame.count() if count is None else count,
        "dagster/column_schema": table_schema(frame.schema),
        "dagster/uri": MetadataValue.url(f"file://{path}") if "://" not in path else path,
    }


def recorded_count(context: AssetExecutionContext, name: str) -> tuple[int, int, float] | None:
    """(Delta version, row count, commit time) from the asset's last materialization."""
    event = context.instance.get_latest_materialization_event(AssetKey(name))
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return None
    meta = materialization.metadata
    if not {"delta_version", "dagster/row_count", "delta_commit_time"} <= meta.keys():
        return None
    return (int(meta["delta_version"].value), int(meta["dagster/row_count"].value),
            float(meta["delta_commit_time"].value))


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
        shared.update(result.cleanup.metadata())
        for key, text in result.cleanup.metadata().items():
            # Leftovers kept in a committed checkpoint stay there: say so quietly, every run.
            log = context.log.info if key == "checkpoint_leftovers" else context.log.warning
            log(f"{table.name}: {key}: {text}")
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
                    recorded_count(context, name),
                )
            )
            yield MaterializeResult(asset_key=AssetKey(name), metadata=meta)

    return _catch_up
