"""The commands on a project's tables: a full refresh (reset) and re-driving dead letters."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

import click

from stream_assets.cli.fail import fail
from stream_assets.errors import StreamAssetsError, TableBusy


def _declared_tables(spec: str) -> list:
    """The tables named by MODULE:ATTRIBUTE (a sequence of StreamingTable)."""
    import importlib

    from stream_assets.tables.declaration import StreamingTable

    module_name, _, attribute = spec.partition(":")
    try:
        tables = list(getattr(importlib.import_module(module_name), attribute or "TABLES"))
    except (ImportError, AttributeError, TypeError) as exc:
        raise click.BadParameter(f"cannot load tables from {spec!r}: {exc}") from None
    if not all(isinstance(t, StreamingTable) for t in tables):
        raise click.BadParameter(f"{spec!r} is not a sequence of StreamingTable")
    return tables


def _lake(spec: str | None):
    """The `lake` resource of the Definitions at MODULE:ATTRIBUTE, its EnvVars resolved; without
    a spec, DeltaLake() from the environment (STREAM_ASSETS_TABLES_ROOT, AWS_*, ...)."""
    from dagster import build_resources

    from stream_assets.resources import DeltaLake

    if spec is None:
        return DeltaLake()
    resource = _definitions(spec).resources.get("lake")
    if not isinstance(resource, DeltaLake):
        raise click.BadParameter(f"{spec!r} is not a Definitions with a DeltaLake 'lake' resource")
    with build_resources({"lake": resource}) as built:
        return built.lake


def _refuse_if_continuous(tables: list, closure: list) -> None:
    """With DAGSTER_HOME set, refuse while a continuous run of that instance writes a table."""
    import os

    if not os.environ.get("DAGSTER_HOME"):
        return  # no instance to ask; the writer locks still refuse a run on this machine
    from dagster import DagsterInstance

    from stream_assets.continuous_runs import continuous_writers

    with DagsterInstance.get() as instance:
        busy = continuous_writers(instance, tables, [t.name for t in closure])
    if busy:
        name = next(t.name for t in closure if t.name in busy)  # the named table first
        run_id = busy[name]
        fail(TableBusy(f"continuous run {run_id} writes {name}; nothing was deleted. "
                        "Terminate that run, then reset again"))


@click.command()
@click.argument("table")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--tables", "tables_spec", default="stream_assets.tables.catalog:TABLES",
              show_default=True,
              help="MODULE:ATTRIBUTE holding your project's tables (the list you pass to "
              "build_definitions).")
@click.option("--definitions", "definitions_spec", default=None,
              help="MODULE:ATTRIBUTE of your Definitions, whose 'lake' resource says where the "
              "tables live (e.g. stream_assets.definitions:defs); default: the environment "
              "(STREAM_ASSETS_TABLES_ROOT, STREAM_ASSETS_CHECKPOINTS_ROOT, AWS_*).")
def reset(table: str, yes: bool, tables_spec: str, definitions_spec: str | None) -> None:
    """Full refresh: delete TABLE's checkpoint and the tables its query writes, and those of
    every query streaming from them (their checkpoints would not resume on a rebuilt table).

    The same code as the asset's run config full_refresh: true. Refused while a
    materialization or a continuous run writes any of those tables: it takes their locks.
    """
    from stream_assets.project import refresh_closure
    from stream_assets.resources import KafkaSource, SparkResource
    from stream_assets.tables import runner

    tables = _declared_tables(tables_spec)
    by_name = {t.name: t for t in tables} | {n: t for t in tables for n in t.tables}
    if table not in by_name:
        raise click.BadParameter(f"unknown table; one of {', '.join(sorted(by_name))}")
    closure = refresh_closure(tables, [table])
    declared, downstream = closure[0], closure[1:]
    plan = f"delete the checkpoint of {declared.name} and the tables {', '.join(declared.tables)}"
    if downstream:
        plan += (f", and, because their queries stream from {declared.name}, the checkpoints "
                 f"and tables of {', '.join(t.name for t in downstream)} "
                 f"({', '.join(n for t in downstream for n in t.tables)})")
    if yes:
        click.echo(f"reset: {plan}")
    else:
        click.confirm(f"{plan}?", abort=True)
    _refuse_if_continuous(tables, closure)
    lake = _lake(definitions_spec)
    targets = [p for q in closure
               for p in (lake.checkpoint_path(q.name), *map(lake.table_path, q.tables))]
    try:
        with ExitStack() as locks:
            # Every lock first: a busy table is refused before anything is deleted.
            for query in closure:
                locks.enter_context(runner.writer_lock(query, lake))
            # The lake's files delete local and object-store paths without a JVM; only
            # another store (hdfs://) needs Spark's Hadoop file systems.
            spark = (None if all(lake.files.resolve(t) is not None for t in targets)
                     else SparkResource(remote=None).spark_session)
            ctx = runner.StreamContext(spark=spark, lake=lake, source=KafkaSource())
            deleted = runner.reset(closure, ctx, held=closure)
    except StreamAssetsError as exc:
        fail(exc)
    for query, gone in deleted.items():
        click.echo(f"{query}: deleted {', '.join(gone) if gone else 'nothing (none existed)'}")
    click.echo(f"reset {', '.join(n for t in closure for n in t.tables)}; the next "
               "materialization of each rebuilds it (upstream first: 'Materialize all')")


@click.command()
@click.argument("table")
@click.option("--reason", "reasons", multiple=True,
              help="Only dead letters refused for this reason (their `error`, exactly); "
              "repeat for several. Default: every reason.")
@click.option("--since", "refused_since", default=None,
              help="Only dead letters refused at or after this time (ISO-8601; UTC when no "
              "offset is given).")
@click.option("--until", "refused_until", default=None,
              help="Only dead letters refused before this time (ISO-8601).")
@click.option("--dry-run", is_flag=True,
              help="Report per reason how many would pass and how many still fail, with a "
              "sample of each; write nothing.")
@click.option("--definitions", "definitions_spec", default="stream_assets.definitions:defs",
              show_default=True,
              help="MODULE:ATTRIBUTE of your project's Definitions (build_definitions' result), "
              "whose redrive_dead_letters job and resources this runs.")
def redrive(table: str, reasons: tuple[str, ...], refused_since: str | None,
            refused_until: str | None, dry_run: bool, definitions_spec: str) -> None:
    """Re-drive TABLE's dead letters through its current declaration, exactly once: those
    that pass now are appended to TABLE (with their Kafka position) and marked, the others
    stay with the reason they get now.

    Runs the project's redrive_dead_letters job, as the Launchpad does, in the Dagster
    instance at DAGSTER_HOME (refused while a continuous run of it writes TABLE).
    """
    from dagster import DagsterInstance

    from stream_assets.jobs.redrive import JOB_NAME, OP_NAME
    from stream_assets.jobs.redrive_report import SUMMARY

    defs = _definitions(definitions_spec)
    try:
        job = defs.resolve_job_def(JOB_NAME)
    except Exception:
        raise click.BadParameter(f"{definitions_spec!r} has no {JOB_NAME} job: none of its "
                                 "tables has dead letters to re-drive") from None
    if not os.environ.get("DAGSTER_HOME"):
        click.echo("DAGSTER_HOME is not set: the run is recorded nowhere the UI reads, and "
                   "continuous runs are not asked (the writer lock still guards this "
                   "machine)", err=True)
    instance = (DagsterInstance.get() if os.environ.get("DAGSTER_HOME")
                else DagsterInstance.ephemeral())
    config = {"table": table, "reasons": list(reasons), "refused_since": refused_since,
              "refused_until": refused_until, "dry_run": dry_run}
    result = job.execute_in_process(run_config={"ops": {OP_NAME: {"config": config}}},
                                    instance=instance, raise_on_error=False)
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        error = failure.step_failure_data.error if failure is not None else None
        while error is not None and error.cause is not None:
            error = error.cause  # Dagster's wrapper around what the op raised
        message = error.message.strip() if error is not None else "see the run's logs"
        click.echo(f"error: re-drive of {table} failed (run {result.run_id}): {message}",
                   err=True)
        sys.exit(1)
    for event in result.all_events:
        data = event.event_specific_data
        found = getattr(data, "materialization", None) or getattr(data, "asset_observation",
                                                                  None)
        if found is not None and SUMMARY in found.metadata:
            click.echo(found.metadata[SUMMARY].value)
            break
    click.echo(f"run {result.run_id}")


def _definitions(spec: str):
    """The Definitions at MODULE:ATTRIBUTE."""
    import importlib

    from dagster import Definitions

    module_name, _, attribute = spec.partition(":")
    try:
        defs = getattr(importlib.import_module(module_name), attribute or "defs")
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load definitions from {spec!r}: {exc}") from None
    if not isinstance(defs, Definitions):
        raise click.BadParameter(f"{spec!r} is not a Definitions")
    return defs
