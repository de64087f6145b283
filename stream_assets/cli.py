"""`stream-assets`: set up the JVM jars, run the local broker, produce demo data, reset tables,
re-drive dead letters."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack, suppress

import click

from stream_assets.errors import StreamAssetsError, TableBusy


def _fail(exc: StreamAssetsError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Real-time Delta tables from Kafka, as Dagster assets."""


@main.command()
def setup() -> None:
    """Resolve the JVM jars (Delta, Spark-Kafka connector, Kafka broker) with Maven and build
    the project's own (jvm/udf, the event parser) with the JDK, once."""
    from stream_assets import jars

    try:
        for group in jars.GROUPS:
            fresh = not jars.is_resolved(group)
            folder = jars.resolve(group)
            state = "resolved" if fresh else "up to date"
            click.echo(f"{group} jars {state}: {folder} ({len(jars.jars(group))} jars)")
    except StreamAssetsError as exc:
        _fail(exc)


@main.group()
def kafka() -> None:
    """The local single-node Kafka broker (KRaft, 127.0.0.1)."""


def _broker(port: int | None):
    from stream_assets.dev.kafka_broker import LocalBroker

    return LocalBroker(port=port)


@kafka.command("start")
@click.option("--port", type=int, default=None, help="Listener port (default 9092).")
@click.option("--partitions", type=int, default=3, show_default=True,
              help="Partitions of the demo topics created on start.")
def kafka_start(port: int | None, partitions: int) -> None:
    """Start the broker (or reuse a running one) and create the demo topics."""
    from stream_assets import schemas

    try:
        broker = _broker(port)
        status = broker.start()
        broker.create_topics(schemas.TOPICS, partitions=partitions)
    except StreamAssetsError as exc:
        _fail(exc)
    click.echo(f"kafka running at {status.bootstrap} (pid {status.pid}); topics: "
               f"{', '.join(schemas.TOPICS)}")


@kafka.command("create-topics")
@click.argument("topics", nargs=-1, required=True)
@click.option("--port", type=int, default=None, help="Listener port (default 9092).")
@click.option("--partitions", type=int, default=3, show_default=True)
def kafka_create_topics(topics: tuple[str, ...], port: int | None, partitions: int) -> None:
    """Create your own project's TOPICS on the local broker (existing ones are kept)."""
    try:
        _broker(port).create_topics(topics, partitions=partitions)
    except StreamAssetsError as exc:
        _fail(exc)
    click.echo(f"topics ready: {', '.join(topics)}")


@kafka.command("stop")
@click.option("--port", type=int, default=None)
def kafka_stop(port: int | None) -> None:
    """Stop the broker cleanly."""
    try:
        status = _broker(port).stop()
    except StreamAssetsError as exc:
        _fail(exc)
    click.echo(f"kafka stopped ({status.detail})")


@kafka.command("status")
@click.option("--port", type=int, default=None)
def kafka_status(port: int | None) -> None:
    """Say whether the broker runs; exit 1 when it does not."""
    status = _broker(port).status()
    click.echo(f"kafka {'running' if status.running else 'not running'} at {status.bootstrap}"
               + (f" (pid {status.pid})" if status.pid else "") + f": {status.detail}")
    sys.exit(0 if status.running else 1)


@main.command()
@click.option("--events", "count", type=int, required=True, help="How many event records.")
@click.option("--bad-ratio", type=float, default=0.0, show_default=True,
              help="Share of records that are deliberately invalid.")
@click.option("--rate", type=float, default=None, help="Records per second (default: as fast "
              "as the broker takes them).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--impressions", type=int, default=None,
              help="Ad impressions (and their clicks) to produce; default events / 10.")
@click.option("--bootstrap", default=None, help="Broker address (default "
              "$STREAM_ASSETS_KAFKA_BOOTSTRAP or 127.0.0.1:9092).")
@click.option("--if-empty", is_flag=True, help="Produce only when the events topic is empty.")
def produce(count: int, bad_ratio: float, rate: float | None, seed: int,
            impressions: int | None, bootstrap: str | None, if_empty: bool) -> None:
    """Write generated events (and impressions/clicks) to Kafka, with a progress bar."""
    from datetime import UTC, datetime, timedelta

    from stream_assets import schemas
    from stream_assets.dev.generator import generate_ad_traffic, generate_events
    from stream_assets.dev.producer import produce as send
    from stream_assets.dev.producer import topic_record_count
    from stream_assets.resources.kafka import KafkaConnection, check_reachable, default_bootstrap

    if not 0 <= bad_ratio <= 1:
        raise click.BadParameter("must be between 0 and 1", param_hint="--bad-ratio")
    connection = KafkaConnection(bootstrap_servers=bootstrap or default_bootstrap())
    try:
        # Ten seconds to say the broker is down beats a minute of unacknowledged retries.
        check_reachable(connection, schemas.TOPICS, 10.0,
                        "start one with 'stream-assets kafka start' or pass --bootstrap")
    except StreamAssetsError as exc:
        _fail(exc)
    if if_empty:
        held = topic_record_count(connection, schemas.EVENT_TOPIC)
        if held:
            click.echo(f"topic {schemas.EVENT_TOPIC} already holds {held} records; not producing")
            return
    def timeline() -> tuple[datetime, timedelta]:
        """When the first record happens, and the time between two."""
        if rate:
            # Stamped as they are sent: a continuous run reads current events, where a history
            # hours long would fall behind every watermark and fill no windowed table.
            return datetime.now(UTC), timedelta(seconds=1 / rate)
        # All at once: a history of one event a second that ends now, so windows and
        # freshness look current in the UI.
        return datetime.now(UTC) - timedelta(seconds=count), timedelta(seconds=1)

    try:
        start, spacing = timeline()
        sent = send(generate_events(count, bad_ratio=bad_ratio, seed=seed, start=start,
                                    spacing=spacing),
                    connection, rate=rate, total=count, progress=True)
        ads = count // 10 if impressions is None else impressions
        if ads:
            start, spacing = timeline() if rate else (start, 2 * spacing)
            sent += send(generate_ad_traffic(ads, seed=seed, start=start, spacing=spacing),
                         connection, rate=rate, progress=False)
    except StreamAssetsError as exc:
        _fail(exc)
    click.echo(f"produced {sent} records to {connection.describe()}")


@main.command("seed-users")
@click.option("--users", type=int, default=50, show_default=True)
@click.option("--if-missing", is_flag=True,
              help="Leave an existing user_dimension alone (it is still recorded in Dagster "
              "when Dagster has no materialization of it yet).")
def seed_users(users: int, if_missing: bool) -> None:
    """Write the demo's user_dimension Delta table, as a materialization of its asset.

    It runs the asset through Dagster in the instance at DAGSTER_HOME, so the UI shows the
    table materialized with its metadata from the start, rather than "Never materialized".
    """
    from dagster import DagsterInstance, materialize

    from stream_assets.delta_log import delta_log_version
    from stream_assets.demo_assets import user_dimension
    from stream_assets.monitoring.asset_events import asset_key
    from stream_assets.resources import DeltaLake, SparkResource
    from stream_assets.sinks import is_delta_table

    lake = DeltaLake()
    path = lake.table_path("user_dimension")
    if not os.environ.get("DAGSTER_HOME"):
        click.echo("DAGSTER_HOME is not set: the materialization is recorded nowhere the UI "
                   "reads (scripts/demo.sh sets it)", err=True)
    instance = (DagsterInstance.get() if os.environ.get("DAGSTER_HOME")
                else DagsterInstance.ephemeral())
    recorded = instance.get_latest_materialization_event(asset_key("user_dimension"))
    if (if_missing and recorded is not None
            and delta_log_version(path, lake.files) is not None):
        # The common case of `make demo` run again: no JVM started to find out.
        click.echo(f"user_dimension exists at {path}; leaving it")
        return
    spark = None
    try:
        resource = SparkResource()
        spark = resource.spark_session
        lake.attach(spark)
        exists = is_delta_table(spark, path)
        if if_missing and exists and recorded is not None:
            click.echo(f"user_dimension exists at {path}; leaving it")
            return
        result = materialize(
            [user_dimension],
            instance=instance,
            resources={"spark": resource, "lake": lake},
            run_config={"ops": {"user_dimension": {"config": {
                "users": users, "overwrite": not (if_missing and exists)}}}},
            raise_on_error=False,
        )
    except StreamAssetsError as exc:
        _fail(exc)
    finally:
        if spark is not None:
            with suppress(Exception):
                spark.stop()
    if not result.success:
        raise click.ClickException(f"materializing user_dimension failed (run "
                                   f"{result.run_id}); see its logs in the Dagster UI")
    [materialization] = result.asset_materializations_for_node("user_dimension")
    rows = materialization.metadata["dagster/row_count"].value
    click.echo(f"user_dimension at {path}: {rows} users, recorded by run {result.run_id}")


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
    import importlib

    from dagster import Definitions, build_resources

    from stream_assets.resources import DeltaLake

    if spec is None:
        return DeltaLake()
    module_name, _, attribute = spec.partition(":")
    try:
        defs = getattr(importlib.import_module(module_name), attribute or "defs")
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load definitions from {spec!r}: {exc}") from None
    resource = defs.resources.get("lake") if isinstance(defs, Definitions) else None
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
        _fail(TableBusy(f"continuous run {run_id} writes {name}; nothing was deleted. "
                        "Terminate that run, then reset again"))


@main.command()
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
        _fail(exc)
    for query, gone in deleted.items():
        click.echo(f"{query}: deleted {', '.join(gone) if gone else 'nothing (none existed)'}")
    click.echo(f"reset {', '.join(n for t in closure for n in t.tables)}; the next "
               "materialization of each rebuilds it (upstream first: 'Materialize all')")


@main.command()
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


if __name__ == "__main__":
    main()
