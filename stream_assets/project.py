"""From a list of declared tables to a Dagster code location: `build_definitions`.

The one place that knows every table of a project: it checks that they fit together (names,
upstream tables, resources) and derives their assets, checks, sensors and the continuous job.
Nothing else in the package needs to know which tables a project has (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Definitions,
    SensorDefinition,
)

from stream_assets.continuous_runs import continuous_writers
from stream_assets.errors import DeclarationError, StreamAssetsError
from stream_assets.jobs import (
    build_continuous_job,
    build_maintenance_job,
    build_maintenance_schedule,
    build_redrive_job,
)
from stream_assets.jobs.maintenance import DEFAULT_CRON, maintenance_cron
from stream_assets.monitoring.catch_up_sensor import build_catch_up_sensor
from stream_assets.monitoring.check_config import ChecksConfig
from stream_assets.monitoring.checks import build_all_checks, table_checks
from stream_assets.monitoring.sensors import (
    build_health_checks,
    build_health_sensor,
    build_run_failure_sensor,
)
from stream_assets.parallel_executor import parallel_in_process_executor
from stream_assets.resources import DeltaLake, KafkaSource, SparkResource
from stream_assets.resources.alerting import alert_sink_from_env
from stream_assets.tables.assets import build_asset, source_specs
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.redrive_plan import refusal
from stream_assets.tables.refresh import Cascade


def default_resources() -> dict[str, Any]:
    """A local SparkSession, the lake under STREAM_ASSETS_HOME, Kafka at
    STREAM_ASSETS_KAFKA_BOOTSTRAP, alerts as configured by the environment."""
    return {
        "spark": SparkResource(),
        "lake": DeltaLake(),
        "stream_source": KafkaSource(),
        "alerting": alert_sink_from_env(),
    }


def check_tables(tables: Sequence[StreamingTable], other_assets: Iterable[AssetKey] = ()) -> None:
    """Refuse tables that do not fit together, naming the table and the field to fix."""
    owner: dict[str, str] = {}
    for table in tables:
        if not isinstance(table, StreamingTable):
            raise DeclarationError(f"{table!r} is not a StreamingTable")
        for name in table.tables:
            if name in owner:
                raise DeclarationError(
                    f"table {table.name!r}: {name!r} is already written by {owner[name]!r}; "
                    "every table (dead letters included) has one writer"
                )
            owner[name] = table.name
    known = set(owner) | {key.to_user_string() for key in other_assets}
    for table in tables:
        for input_name, source in table.sources.items():
            for upstream in (*source.upstream_tables, *source.static_tables):
                if upstream not in known:
                    raise DeclarationError(
                        f"table {table.name!r}, field 'sources': {input_name!r} reads "
                        f"{upstream!r}, which is neither a declared table nor one of the "
                        f"assets passed to build_definitions (known: {', '.join(sorted(known))})"
                    )
    _refuse_cycles(tables)


def _refuse_cycles(tables: Sequence[StreamingTable]) -> None:
    reads = {t.name: set(t.upstream_tables) for t in tables}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join((*path[path.index(name):], name))
            raise DeclarationError(f"table {name!r}, field 'sources': a cycle ({cycle})")
        if name in done or name not in reads:
            return
        for upstream in reads[name]:
            visit(upstream, (*path, name))
        done.add(name)

    for name in reads:
        visit(name, ())


def refresh_closure(
    tables: Sequence[StreamingTable], names: Iterable[str]
) -> list[StreamingTable]:
    """The queries a full refresh of `names` resets, upstream first: the named ones and every
    query that reads one of their tables as a Delta stream, transitively.

    A query's checkpoint holds the Delta table id of each upstream it streams from; once that
    table is deleted and rebuilt the query cannot resume (stream_assets_tests/test_refresh.py
    quotes Spark's error), so it is reset too. A static join keeps no offsets and is left
    alone. A name may be a query or any table it writes (a dead-letter table names its query).
    """
    tables = list(tables)
    writer = {name: decl for decl in tables for name in decl.tables}
    names = list(names)
    unknown = sorted(set(names) - set(writer))
    if unknown:
        raise StreamAssetsError(
            f"unknown table(s) {', '.join(unknown)}; tables: {', '.join(sorted(writer))}"
        )
    chosen = {writer[name].name for name in names}
    grew = True
    while grew:
        grew = False
        for decl in tables:
            if decl.name not in chosen and any(
                writer[u].name in chosen for u in decl.upstream_tables if u in writer
            ):
                chosen.add(decl.name)
                grew = True
    ordered: list[StreamingTable] = []
    remaining = [decl for decl in tables if decl.name in chosen]
    while remaining:
        done = {decl.name for decl in ordered}
        ready = next((decl for decl in remaining if all(
            writer[u].name in done or writer[u].name not in chosen
            for u in decl.upstream_tables if u in writer
        )), remaining[0])  # only a cycle, which check_tables refuses, leaves none ready
        ordered.append(ready)
        remaining.remove(ready)
    return ordered


def _cascade(tables: Sequence[StreamingTable], table: StreamingTable) -> Cascade:
    return Cascade(
        downstream=tuple(refresh_closure(tables, [table.name])[1:]),
        writers=lambda instance, queries: continuous_writers(instance, tables, queries),
    )


def _check_resources(tables: Sequence[StreamingTable], resources: Mapping[str, Any]) -> None:
    for table in tables:
        for input_name, source in table.sources.items():
            if source.resource and source.resource not in resources:
                raise DeclarationError(
                    f"table {table.name!r}, source {input_name!r}: reads through the resource "
                    f"{source.resource!r}, which is not among the resources "
                    f"({', '.join(sorted(resources))}); pass it to build_definitions"
                )


def build_definitions(
    tables: Sequence[StreamingTable],
    *,
    resources: Mapping[str, Any] | None = None,
    assets: Sequence[AssetsDefinition | AssetSpec] = (),
    checks: ChecksConfig | None = None,
    checks_per_table: Mapping[str, ChecksConfig] | None = None,
    sensors: Sequence[SensorDefinition] = (),
    maintenance_schedule: str | None = DEFAULT_CRON,
) -> Definitions:
    """The Dagster definitions of a project's streaming tables.

    For each table: its catch-up asset (and its dead letters'), its checks, its place in the
    continuous job and in the health and catch-up sensors; the `redrive_dead_letters` job for
    the tables whose dead letters can be parsed again. `resources` are added to (and
    override) `default_resources()`; bind another Kafka cluster under the key its sources name.
    `assets` are the project's other assets, e.g. the batch tables its streams join.
    `checks` sets the derived checks' thresholds for every table, `checks_per_table` for the
    named ones. `maintenance_schedule` is the cron of the `maintain_tables` job (compaction and
    VACUUM as each table's `maintenance` says; hourly by default), None for no schedule;
    $STREAM_ASSETS_MAINTENANCE_CRON overrides it in a deployment ("off": no schedule).
    """
    tables = list(tables)
    bound = {**default_resources(), **(resources or {})}
    other_keys = [key for a in assets for key in (a.keys if isinstance(a, AssetsDefinition)
                                                  else [a.key])]
    check_tables(tables, other_keys)
    _check_resources(tables, bound)
    maintenance = build_maintenance_job(tables)
    cron = maintenance_cron(maintenance_schedule)
    return Definitions(
        assets=[*source_specs(tables), *assets,
                *(build_asset(t, _cascade(tables, t)) for t in tables)],
        asset_checks=[*build_all_checks(tables, checks, checks_per_table),
                      build_health_checks(tables)],
        jobs=[build_continuous_job(
            tables, checks=table_checks(tables, checks, checks_per_table)), maintenance,
            # Re-driving dead letters, when a table has some it can re-drive.
            *([build_redrive_job(tables)] if any(refusal(t) is None for t in tables) else [])],
        schedules=[build_maintenance_schedule(maintenance, cron)] if cron else [],
        sensors=[
            build_health_sensor(tables),
            build_run_failure_sensor(),
            build_catch_up_sensor(tables),
            *sensors,
        ],
        resources=bound,
        # Every step of a run shares one process and so one SparkSession (the default
        # multiprocess executor would start a JVM per asset and per check); steps that do not
        # depend on each other run at the same time in it (parallel_executor.py).
        executor=parallel_in_process_executor,
    )
