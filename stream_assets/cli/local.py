"""The commands of a local set-up: the JVM jars, the local broker, the demo's data."""

from __future__ import annotations

import os
import sys
from contextlib import suppress

import click

from stream_assets.cli.fail import fail
from stream_assets.errors import StreamAssetsError


@click.command()
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
        fail(exc)


@click.group()
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
        fail(exc)
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
        fail(exc)
    click.echo(f"topics ready: {', '.join(topics)}")


@kafka.command("stop")
@click.option("--port", type=int, default=None)
def kafka_stop(port: int | None) -> None:
    """Stop the broker cleanly."""
    try:
        status = _broker(port).stop()
    except StreamAssetsError as exc:
        fail(exc)
    click.echo(f"kafka stopped ({status.detail})")


@kafka.command("status")
@click.option("--port", type=int, default=None)
def kafka_status(port: int | None) -> None:
    """Say whether the broker runs; exit 1 when it does not."""
    status = _broker(port).status()
    click.echo(f"kafka {'running' if status.running else 'not running'} at {status.bootstrap}"
               + (f" (pid {status.pid})" if status.pid else "") + f": {status.detail}")
    sys.exit(0 if status.running else 1)


@click.command()
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
        fail(exc)
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
        fail(exc)
    click.echo(f"produced {sent} records to {connection.describe()}")


@click.command("seed-users")
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
        fail(exc)
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
