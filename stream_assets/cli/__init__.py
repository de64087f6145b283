"""`stream-assets`: set up the JVM jars, run the local broker, produce demo data, reset tables,
re-drive dead letters."""

from __future__ import annotations

import click

from stream_assets.cli import local, tables


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Real-time Delta tables from Kafka, as Dagster assets."""


for command in (local.setup, local.kafka, local.produce, local.seed_users, tables.reset,
                tables.redrive):
    main.add_command(command)
