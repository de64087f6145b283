"""`catch_up_sensor`: requests a catch-up materialization of a table when its input moved (the
Kafka topics' latest offsets, or the upstream Delta table's version), unless the table is
already being written (continuous run or catch-up run in flight).

Like the other sensors (sensors.py) it runs in the daemon and starts no Spark session: the
broker and the Delta logs on disk tell where the inputs stand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from dagster import (
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from stream_assets.continuous_runs import continuous_runs, run_tables
from stream_assets.delta_log import delta_log_version
from stream_assets.monitoring.sensors import sensor_interval
from stream_assets.resources.kafka import KafkaCompatibleSource
from stream_assets.resources.lake import DeltaLake
from stream_assets.tables.declaration import StreamingTable

CATCH_UP_TAG = "stream_assets/catch_up"
TABLE_MISSING = "table_missing"
_IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def input_positions(
    table: StreamingTable, kafka: Mapping[str, KafkaCompatibleSource], lake: DeltaLake
) -> dict[str, int] | None:
    """Where the table's inputs stand: the sum of each topic's latest offsets, each upstream
    table's Delta version. None when an upstream or joined table does not exist yet.

    A joined (static) table's changes apply to the next micro-batches, so they are not input
    that needs a run of their own.
    """
    if any(delta_log_version(lake.table_path(t), lake.files) is None for t in table.static):
        return None
    positions: dict[str, int] = {}
    for key, topics in table.kafka_topics_by_resource.items():
        for topic in topics:
            offsets = kafka[key].offsets(topic)
            positions[f"kafka:{topic}"] = sum(high for _, high in offsets.values())
    for upstream in table.upstream_tables:
        version = delta_log_version(lake.table_path(upstream), lake.files)
        if version is None:
            return None
        positions[f"delta:{upstream}"] = version
    if delta_log_version(lake.table_path(table.name), lake.files) is None:
        # A full refresh (tables/refresh.py) deletes a table whose input stands where it stood
        # when it was last requested: the marker makes that a move, so the table is rebuilt.
        positions[TABLE_MISSING] = 1
    return positions


def plan_catch_up(
    now_positions: Mapping[str, Mapping[str, int] | None],
    seen: Mapping[str, Mapping[str, int]],
    busy: Iterable[str],
) -> list[str]:
    """Tables to materialize: their input moved since last requested, and nobody writes them.

    A table never requested before is requested when its input holds anything.
    """
    busy = set(busy)
    due = []
    for name, positions in now_positions.items():
        if positions is None or name in busy:
            continue
        before = seen.get(name)
        if before is None:
            if any(v > 0 for k, v in positions.items() if k != TABLE_MISSING):
                due.append(name)
        elif dict(before) != dict(positions):
            due.append(name)
    return due


def busy_tables(instance: DagsterInstance, catalog: Sequence[StreamingTable]) -> set[str]:
    """Queries being written now: by a continuous run, or by a catch-up run in flight."""
    busy: set[str] = set()
    for run in continuous_runs(instance, [*_IN_FLIGHT, DagsterRunStatus.CANCELING]):
        busy |= run_tables(run, catalog)
    for run in instance.get_runs(RunsFilter(statuses=_IN_FLIGHT)):
        keys = {k.to_user_string() for k in (run.asset_selection or [])}
        busy |= {t.name for t in catalog if keys & set(t.tables)}
    return busy


def build_catch_up_sensor(
    catalog: Sequence[StreamingTable],
    name: str = "catch_up_sensor",
    minimum_interval_seconds: int | None = None,
) -> SensorDefinition:
    catalog = tuple(catalog)
    keys = [key for decl in catalog for key in decl.asset_keys]
    # The Kafka resources the tables read through, by the key each source names.
    kafka_keys = sorted({key for t in catalog for key in t.kafka_topics_by_resource})

    @sensor(
        name=name,
        asset_selection=AssetSelection.assets(*keys),
        required_resource_keys={"lake", *kafka_keys},
        minimum_interval_seconds=minimum_interval_seconds or sensor_interval(60),
        default_status=DefaultSensorStatus.STOPPED,
        description="Catch-up mode: materializes a table when its Kafka topics or upstream "
        "Delta table moved, unless it is being written already.",
    )
    # Resources come from the context: which Kafka resources exist depends on the tables, so
    # they cannot be parameters. Direct invocation (tests) passes them as keywords too.
    def catch_up_sensor(context: SensorEvaluationContext, **_resources: object):
        seen: dict[str, dict[str, int]] = json.loads(context.cursor) if context.cursor else {}
        kafka = {key: getattr(context.resources, key) for key in kafka_keys}
        lake: DeltaLake = context.resources.lake
        try:
            positions = {t.name: input_positions(t, kafka, lake) for t in catalog}
        except Exception as exc:
            return SkipReason(f"could not read input positions: {exc}")
        busy = busy_tables(context.instance, catalog)
        due = plan_catch_up(positions, seen, busy)
        requests = []
        for table in catalog:
            if table.name not in due:
                continue
            current = positions[table.name] or {}
            seen[table.name] = dict(current)
            digest = ",".join(f"{k}={v}" for k, v in sorted(current.items()))
            requests.append(RunRequest(
                run_key=f"{table.name}:{digest}",
                asset_selection=list(table.asset_keys),
                tags={CATCH_UP_TAG: table.name},
            ))
        cursor = json.dumps(seen, sort_keys=True)
        if not requests:
            waiting = [n for n, p in positions.items() if p is None]
            reason = "no new input" + (f"; busy: {', '.join(sorted(busy))}" if busy else "") + (
                f"; upstream missing for {', '.join(waiting)}" if waiting else "")
            return SensorResult(skip_reason=reason, cursor=cursor)
        return SensorResult(run_requests=requests, cursor=cursor)

    return catch_up_sensor

