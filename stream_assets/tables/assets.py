"""Dagster assets derived from table declarations."""


import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    multi_asset,
)
from pydantic import Field, create_model

from stream_assets.delta_log import commit_of, quiet_versions
from stream_assets.errors import StreamFailed
from stream_assets.monitoring.asset_events import (
    AssetEvents,
    CheckEvent,
    Materialization,
    asset_key,
)
from stream_assets.monitoring.delta_writes import table_metadata
from stream_assets.monitoring.metadata import (
    PROPERTIES_KEY,
    query_metadata,
    recorded_column_schema,
    recorded_columns,
    recorded_properties,
    recorded_state,
    table_schema,
    table_state,
)
from stream_assets.tables import dead_letters, refresh
from stream_assets.tables import expectations as quality
from stream_assets.tables.declaration import StreamingTable, describe
from stream_assets.tables.pending import InputCheck, pending_input
from stream_assets.tables.pools import check_pool_settings
from stream_assets.tables.runner import CatchUpResult, StreamContext, catch_up

# A catch-up run reports from its asset's step: results that fulfil its outputs and checks.
CATCH_UP = AssetEvents()


class CatchUpConfig(Config):
    full_refresh: bool = Field(
        default=False,
        description="Delete the checkpoint and the tables, then rebuild them from the sources; "
        "also reset the queries streaming from them (each asset's field names them).",
    )


def catch_up_config(table: StreamingTable, cascade: refresh.Cascade) -> type[CatchUpConfig]:
    """CatchUpConfig whose `full_refresh` names what this asset's refresh deletes (Launchpad)."""
    description = refresh.field_description(table, cascade)
    return create_model(CatchUpConfig.__name__, __base__=CatchUpConfig,
                        full_refresh=(bool, Field(default=False, description=description)))


def source_specs(tables: Sequence[StreamingTable]) -> list[AssetSpec]:
    """What the tables read from outside the project (Kafka topics): the lineage's roots."""
    specs: dict[AssetKey, AssetSpec] = {}
    for table in tables:
        for source in table.sources.values():
            spec = source.external_spec()
            if spec is not None:
                specs.setdefault(spec.key, spec)
    return [specs[key] for key in sorted(specs, key=lambda k: k.to_user_string())]


def resource_keys(table: StreamingTable) -> set[str]:
    """The resources a table's run needs: Spark, the lake and what its sources read through."""
    return {"spark", "lake", *(s.resource for s in table.sources.values() if s.resource)}


def build_asset(table: StreamingTable, cascade: refresh.Cascade | None = None):
    """The catch-up asset of a declared table: one materialization per table it writes.

    `cascade`: the queries its full refresh resets besides it (build_definitions knows them).
    """
    cascade = cascade or refresh.Cascade()
    config_class = catch_up_config(table, cascade)
    specs = [
        AssetSpec(
            key=asset_key(name),
            deps=list(table.dependencies),
            description=table.description if name == table.name
            else dead_letters.description(table.name),
            group_name=table.group,
            kinds={"delta", "spark"},
            tags=dict(table.tags),
            owners=list(table.owners),
            metadata=spec_metadata(table, name),
            # The dead letters change only when records are refused: no staleness to judge.
            freshness_policy=table.freshness if name == table.name else None,
        )
        for name in table.tables
    ]
    resources = resource_keys(table)

    @multi_asset(
        name=table.name,
        specs=specs,
        check_specs=expectation_check_specs(table),
        required_resource_keys=resources,
        can_subset=False,
        description=table.description,
        # One writer per query across machines: the run waits in the queue while another
        # run holds the slot (tables/pools.py).
        pool=table.pool,
    )
    def _catch_up(context: AssetExecutionContext, config: config_class
                  ) -> Iterator[MaterializeResult]:
        warning = check_pool_settings(context.instance, table)
        if warning:
            context.log.warning(warning)
        bound = {key: getattr(context.resources, key) for key in resources}
        check = None if config.full_refresh else input_check(table, bound)
        if check is not None and not check.new:
            check = properties_check(context.instance, table, check)
        if check is not None and not check.new:
            check = schema_check(context.instance, table, check)
        if check is not None and not check.new:
            skipped = skipped_results(context, table, bound["lake"], check)
            if skipped is not None:
                yield from skipped
                return
        ctx = StreamContext.of_run(context.resources.spark.spark_session, bound)
        # Said (and checked against continuous runs) before anything is deleted.
        in_run = refresh.announce(context, table, cascade) if config.full_refresh else set()

        def deleted(paths: dict[str, list[str]]) -> None:
            context.log.info(f"{table.name}: full refresh deleted {paths}")
            for event in refresh.reset_events(table, cascade, paths, in_run):
                context.log_event(event)

        started = time.monotonic()
        try:
            result: CatchUpResult = catch_up(table, ctx, refresh=config.full_refresh,
                                             cascade=cascade.downstream, on_reset=deleted)
        except StreamFailed as exc:
            # The batch that broke a fail expectation was not written: say which rule failed
            # on the table's checks before the run fails.
            yield from failed_expectation_results(table, str(exc))
            raise
        shared = query_metadata(result.progress, result.initial_offsets)
        shared["query_seconds"] = round(time.monotonic() - started, 3)
        shared.update(result.cleanup.metadata())
        if check is not None:
            shared.update(check.metadata())
        shared.update(refresh.cascade_metadata(context, table))
        if config.full_refresh:
            shared.update(refresh.refreshed_metadata(table, cascade, result.deleted, in_run))
        # Leftovers kept in a committed checkpoint stay there: said quietly, every run.
        result.cleanup.say(context.log, table.name)
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
                    recorded_state(context.instance, name),
                    table.descriptions_of(name),
                    ctx.lake.files,
                )
            )
            meta.update(properties_metadata(table, name))
            yield CATCH_UP.materialization(name, meta)
        yield from expectation_results(table, result.progress)

    return _catch_up


def input_check(table: StreamingTable, bound: Mapping[str, Any]) -> InputCheck:
    """Whether the table's query has anything to read, without Spark (tables/pending.py)."""
    lake = bound["lake"]
    try:
        return pending_input(
            lake.checkpoint_path(table.name),
            {name: lake.table_path(name) for name in table.tables},
            [(bound[key].run_look(), topics)
             for key, topics in table.kafka_topics_by_resource.items()],
            {name: lake.table_path(name) for name in table.upstream_tables},
            lake.files,
        )
    except Exception as exc:  # e.g. an unreachable broker: the query's start says it in full
        return InputCheck(True, f"the sources' positions could not be read "
                          f"({type(exc).__name__})")


def properties_check(instance: Any, table: StreamingTable, check: InputCheck) -> InputCheck:
    """`check`, unless the declared table properties differ from those the table's last
    materialization recorded: then the query starts, as its start sets them (runner.start)."""
    if not table.property_pairs:  # no read of the event log for tables that declare none
        return check
    recorded = recorded_properties(instance, table.name)
    changed = [key for key, value in table.property_pairs if recorded.get(key) != value]
    if not changed:
        return check
    return InputCheck(True, f"{check.reason}, but the declared table properties changed "
                      f"({', '.join(changed)})", check.positions)


def schema_check(instance: Any, table: StreamingTable, check: InputCheck) -> InputCheck:
    """`check`, unless the declared schema differs from the columns the table's last
    materialization recorded: then the query starts, and its start grows the table to the
    declaration or refuses the change (tables/schema_evolution.py)."""
    declared = table.schema_of(table.name)
    if declared is None:
        return check
    recorded = recorded_columns(instance, table.name)
    if recorded is None or dict(recorded) == {f.name: f.dataType.simpleString()
                                              for f in declared.fields}:
        return check
    return InputCheck(True, f"{check.reason}, but the declared schema changed", check.positions)


def properties_metadata(table: StreamingTable, name: str) -> dict[str, Any]:
    """The declared table properties the main table holds after a run of either mode (none
    are declared for the dead letters)."""
    if name != table.name or not table.property_pairs:
        return {}
    return {PROPERTIES_KEY: MetadataValue.json(dict(table.property_pairs))}


def skipped_results(context: AssetExecutionContext, table: StreamingTable, lake: Any,
                    check: InputCheck) -> list[Materialization | CheckEvent] | None:
    """A materialization per table saying nothing was new, with the figures of the last one,
    or None when the last one does not describe the table as it stands (then run the query)."""
    results: list[Materialization | CheckEvent] = []
    for name in table.tables:
        path = lake.table_path(name)
        state = state_since(recorded_state(context.instance, name), path, lake.files)
        if state is None:
            return None
        columns = recorded_column_schema(context.instance, name)
        results.append(CATCH_UP.materialization(name, {
            **table_state(path, *state),
            # Carried forward with the state: the table as it stands, which the next run's
            # schema check compares with the declaration (schema_check).
            **({"dagster/column_schema": columns} if columns is not None else {}),
            "rows_read": 0, "batches": 0, "rows_written": 0,
            **check.metadata(), **{k: MetadataValue.json(v) if isinstance(v, dict) else v
                                   for k, v in check.positions.items()},
            **properties_metadata(table, name),
        }))
    context.log.info(f"{table.name}: {check.reason}; query not started")
    results.extend(expectation_results(table, []))
    return results


def state_since(recorded: tuple[int, int, float] | None, path: str, files: Any
                ) -> tuple[int, int, float] | None:
    """(version, row count, commit time) of the table now, from what its last materialization
    recorded, or None when that does not describe it.

    Commits since then that change no row (a compaction, a VACUUM: `delta_log.quiet_versions`)
    carry the recorded count forward to the newest version; the recorded commit must still be
    the table's (same commit time), so a table deleted and rebuilt is counted afresh.
    """
    latest = commit_of(path, files)
    if recorded is None or latest is None or recorded[0] > latest[0]:
        return None
    if recorded[0] == latest[0]:
        return recorded
    anchor = files.mtime(f"{path.rstrip('/')}/_delta_log/{recorded[0]:020d}.json")
    if anchor is None or abs(anchor - recorded[2]) >= 0.001 \
            or not quiet_versions(path, recorded[0] + 1, latest[0], files):
        return None
    return latest[0], recorded[1], latest[1]


def expectation_check_specs(table: StreamingTable) -> list[AssetCheckSpec]:
    """One asset check per expectation, on the table, reported by every run of its query."""
    return [
        AssetCheckSpec(
            e.name, asset=table.asset_key,
            description=e.check_description,
            metadata={"action": e.action, "condition": e.condition},
        )
        for e in table.expectations
    ]


def expectation_results(table: StreamingTable, progress: list[dict]) -> list[CheckEvent]:
    """The expectations' verdicts over the run's batches, as the continuous job judges a
    report's (report_events.expectation_outcomes)."""
    return CATCH_UP.expectations(table.name, quality.judge(progress, table.expectations))


def failed_expectation_results(table: StreamingTable, error: str) -> list[CheckEvent]:
    """The verdicts when a `fail` expectation stopped the query (the continuous job's too)."""
    return CATCH_UP.expectations(table.name, quality.stopped_by(error, table.expectations))


def spec_metadata(table: StreamingTable, name: str) -> dict[str, Any]:
    """What the UI shows of a table before it is ever materialized: its query, keys and the
    declared columns with their descriptions."""
    meta: dict[str, Any] = describe(table)
    declared = table.schema_of(name)
    descriptions = table.descriptions_of(name)
    if declared is not None:
        meta["dagster/column_schema"] = table_schema(declared, descriptions)
    elif descriptions:
        meta["dagster/column_schema"] = TableSchema(
            columns=[TableColumn(name=c, type="?", description=d) for c, d in descriptions.items()]
        )
    if name != table.name:
        meta["keys"] = "topic, partition, offset"
    return meta
