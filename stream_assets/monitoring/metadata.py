"""Turn Spark progress reports and Delta history into Dagster metadata.

Pure functions over plain dicts, so they are the same for catch-up runs and for the
continuous job's listener, and unit-testable without Spark. Numbers stay numbers so the
UI can plot them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dagster import DagsterInstance, MetadataValue, TableColumn, TableSchema
from pyspark.sql.types import StructType

from stream_assets.monitoring.asset_events import asset_key
from stream_assets.monitoring.lag import parse_offsets

# Delta's operation metrics that count the rows a MERGE changed; its numOutputRows also counts
# the unchanged rows it copied into rewritten files, so it is no count of rows written.
_MERGED = ("numTargetRowsInserted", "numTargetRowsUpdated")
# Operations that never change the table's rows: compaction rewrites them into other files
# (its files carry dataChange false), VACUUM deletes only files no version reads any more, and
# table properties and added columns (nullable: rows read null there) move no row.
ROWS_UNCHANGED = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES",
                            "UNSET TBLPROPERTIES", "ADD COLUMNS"})


def kafka_ranges(
    progress: list[dict], initial: Mapping[str, Mapping[str, int]] | None = None
) -> dict[str, dict[str, list[int]]]:
    """Per topic and partition, [first offset read, offset after the last] over the run.

    Spark reports no start offset for a checkpoint's first batch; `initial` (the broker's
    earliest offsets, measured before the run) fills that gap.
    """
    initial = initial or {}
    ranges: dict[str, dict[str, list[int]]] = {}
    for report in progress:
        for source in report.get("sources", []):
            if not str(source.get("description", "")).startswith("KafkaV2"):
                continue
            start = parse_offsets(source.get("startOffset"))
            end = parse_offsets(source.get("endOffset"))
            for topic, parts in end.items():
                for partition, end_offset in parts.items():
                    first = start.get(topic, {}).get(partition)
                    if first is None:
                        first = initial.get(topic, {}).get(partition, end_offset)
                    current = ranges.setdefault(topic, {}).get(partition)
                    if current is None:
                        ranges[topic][partition] = [first, end_offset]
                    else:
                        current[0] = min(current[0], first)
                        current[1] = max(current[1], end_offset)
    return ranges


def _state(progress: list[dict]) -> dict[str, float]:
    rows = memory = dropped = 0
    for op in progress[-1].get("stateOperators", []) if progress else []:
        rows += op.get("numRowsTotal", 0)
        memory += op.get("memoryUsedBytes", 0)
    for report in progress:
        for op in report.get("stateOperators", []):
            dropped += op.get("numRowsDroppedByWatermark", 0)
    return {"state_rows": rows, "state_memory_bytes": memory, "rows_dropped_by_watermark": dropped}


def watermark(progress: list[dict]) -> str | None:
    for report in reversed(progress):
        mark = report.get("eventTime", {}).get("watermark")
        if mark:
            return mark
    return None


def query_metadata(
    progress: list[dict], initial_offsets: Mapping[str, Mapping[str, int]] | None = None
) -> dict[str, Any]:
    """What the query did over a run: rows read, batches, rates, offsets, state, watermark."""
    read = sum(int(p.get("numInputRows", 0)) for p in progress)
    batches = [p for p in progress if int(p.get("numInputRows", 0)) > 0]
    durations = [p.get("durationMs", {}).get("triggerExecution", 0) for p in batches]
    meta: dict[str, Any] = {
        "rows_read": read,
        "batches": len(batches),
        "batch_duration_ms_max": max(durations, default=0),
        "processed_rows_per_second": max(
            (float(p.get("processedRowsPerSecond", 0.0)) for p in batches), default=0.0
        ),
    }
    ranges = kafka_ranges(progress, initial_offsets)
    if ranges:
        meta["kafka_offsets"] = MetadataValue.json(ranges)
        meta["kafka_records_in_range"] = sum(
            end - start for parts in ranges.values() for start, end in parts.values()
        )
    if any(p.get("stateOperators") for p in progress):
        meta.update(_state(progress))
    mark = watermark(progress)
    if mark:
        meta["watermark"] = mark
    return meta


def rows_written(history: Iterable[Mapping[str, Any]]) -> int:
    """Rows the given Delta commits wrote (appends and MERGE inserts/updates)."""
    total = 0
    for commit in history:
        metrics = commit.get("operationMetrics") or {}
        if any(k in metrics for k in _MERGED):
            total += sum(int(metrics.get(k, 0) or 0) for k in _MERGED)
        else:
            total += int(metrics.get("numOutputRows", 0) or 0)
    return total


def row_count_after(
    commits: Iterable[Mapping[str, Any]],
    before: int | None,
    after: int,
    recorded: tuple[int, int] | None,
) -> int | None:
    """The table's row count after `commits`, derived from a count recorded at `before`.

    Counting a Delta table costs a pass over its log (seconds on a busy driver), which a
    small catch-up run would otherwise pay every time. `recorded` is the (Delta version,
    row count) of the last materialization; the count carries forward only when it was
    taken at `before`, the new commits cover every version up to `after`, and each is an
    append or a MERGE whose metrics say how rows changed, or changes no row (ROWS_UNCHANGED:
    a compaction, a VACUUM, a property set). Otherwise None: count the table.
    """
    if before is None:
        base, first = 0, 0
    elif recorded is not None and recorded[0] == before:
        base, first = recorded[1], before + 1
    else:
        return None
    commits = sorted(commits, key=lambda c: c["version"])
    if [c["version"] for c in commits] != list(range(first, after + 1)):
        return None
    for commit in commits:
        metrics = commit.get("operationMetrics") or {}
        params = commit.get("operationParameters") or {}
        if commit.get("operation") == "WRITE" and params.get("mode") == "Append":
            base += int(metrics.get("numOutputRows", 0) or 0)
        elif commit.get("operation") == "MERGE" and "numTargetRowsInserted" in metrics:
            base += int(metrics["numTargetRowsInserted"] or 0)
            base -= int(metrics.get("numTargetRowsDeleted", 0) or 0)
        elif commit.get("operation") in ROWS_UNCHANGED:
            continue
        else:
            return None
    return base


def table_uri(path: str) -> Any:
    """A table's location as the UI links it: a file URL for a local path, else the URI."""
    return MetadataValue.url(f"file://{path}") if "://" not in path else path


# On the main table's materialization: the declared Delta table properties the table holds, so
# a run with nothing new can tell a declaration whose properties changed (tables/assets.py).
PROPERTIES_KEY = "table_properties"


def table_state(path: str, version: int, row_count: int, commit_time: float) -> dict[str, Any]:
    """The standard keys of a table after a commit, the same for catch-up and continuous runs,
    so the asset's Overview and its Plots do not depend on the mode that wrote it."""
    return {
        "path": MetadataValue.path(path),
        "delta_version": version,
        "delta_commit_time": MetadataValue.timestamp(commit_time),
        "dagster/row_count": row_count,
        "dagster/uri": table_uri(path),
    }


def recorded_state(instance: DagsterInstance, name: str) -> tuple[int, int, float] | None:
    """(Delta version, row count, commit time) from the table's last materialization, as
    `table_state` wrote them; None when there is none or it lacks them."""
    meta = _last_metadata(instance, name)
    if not {"delta_version", "dagster/row_count", "delta_commit_time"} <= meta.keys():
        return None
    return (int(meta["delta_version"].value), int(meta["dagster/row_count"].value),
            float(meta["delta_commit_time"].value))


def recorded_properties(instance: DagsterInstance, name: str) -> dict[str, str]:
    """The declared table properties the table's last materialization recorded
    (`PROPERTIES_KEY`), {} when it recorded none."""
    recorded = _last_metadata(instance, name).get(PROPERTIES_KEY)
    return dict(recorded.value) if recorded is not None else {}


def recorded_column_schema(instance: DagsterInstance, name: str) -> TableSchema | None:
    """The columns the table's last materialization recorded, None when it recorded none."""
    recorded = _last_metadata(instance, name).get("dagster/column_schema")
    return recorded.value if recorded is not None else None


def recorded_columns(instance: DagsterInstance, name: str) -> list[tuple[str, str]] | None:
    """(name, type) of each column the table's last materialization recorded."""
    schema = recorded_column_schema(instance, name)
    return None if schema is None else [(c.name, c.type) for c in schema.columns]


def _last_metadata(instance: DagsterInstance, name: str) -> Mapping[str, Any]:
    """The metadata of the table's last materialization, {} when there is none."""
    event = instance.get_latest_materialization_event(asset_key(name))
    materialization = event.asset_materialization if event is not None else None
    return materialization.metadata if materialization is not None else {}


def table_schema(schema: StructType, descriptions: Mapping[str, str] | None = None
                 ) -> TableSchema:
    descriptions = descriptions or {}
    return TableSchema(
        columns=[
            TableColumn(
                name=f.name,
                type=f.dataType.simpleString(),
                constraints=None,
                description=descriptions.get(f.name),
            )
            for f in schema.fields
        ]
    )
