"""The `maintain_tables` job and its schedule: every table compacted and vacuumed by Dagster.

One op per query (its table and its dead letters), so a table that fails to compact fails
its own step and the others go on; each op records an AssetObservation per table with the
figures (live files, average file size, log size) and what it did (last compaction, last
vacuum). Chosen over a step of the continuous job between batches: it runs the same whether
the tables are written continuously or by catch-up runs, its cost never lands in a batch's
latency, and it shows as runs of its own. It takes no pool slot: compaction may run beside an
append, and a MERGE and a compaction settle Delta's conflicts by retrying
(tables/maintenance_run.py).
"""


import os
import time
from collections.abc import Sequence

from dagster import (
    DefaultScheduleStatus,
    JobDefinition,
    OpExecutionContext,
    ScheduleDefinition,
    job,
    op,
)

from stream_assets.monitoring.asset_events import AssetEvents, asset_key
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.maintenance_run import maintain

JOB_NAME = "maintain_tables"
# Hourly: raw_events gains about 14,000 small files an hour at its 5 s trigger.
DEFAULT_CRON = "0 * * * *"
# Overrides the schedule's cron in a deployment without a code change; "off": no schedule.
CRON_ENV = "STREAM_ASSETS_MAINTENANCE_CRON"


def readers_of(tables: Sequence[StreamingTable], name: str) -> list[StreamingTable]:
    """The queries that read table `name` as a Delta stream."""
    return [t for t in tables if name in t.upstream_tables]


def last_vacuum_at(context: OpExecutionContext, name: str) -> float | None:
    """When the job last vacuumed the table, from the table's last observation that says."""
    records = context.instance.fetch_observations(asset_key(name), limit=20).records
    for record in records:
        observation = record.asset_observation
        value = observation.metadata.get("last_vacuum_at") if observation else None
        if value is not None:
            return float(value.value)
    return None


def _maintain_op(table: StreamingTable, tables: Sequence[StreamingTable]):
    readers = {name: readers_of(tables, name) for name in table.tables}

    @op(name=f"maintain_{table.name}", required_resource_keys={"spark", "lake"},
        description=f"Compacts and vacuums {', '.join(table.tables)} as declared.")
    def _maintain(context: OpExecutionContext) -> None:
        lake = context.resources.lake
        spark = context.resources.spark.spark_session
        lake.attach(spark)
        for name in table.tables:
            report = maintain(
                spark, name, lake.table_path(name), table.maintenance,
                {r.name: lake.checkpoint_path(r.name) for r in readers[name]},
                lake.files, last_vacuum_at(context, name))
            now = time.time()
            for note in report.notes:
                context.log.info(f"{name}: {note}")
            context.log_event(AssetEvents().observation(name, report.metadata(now)))

    return _maintain


def build_maintenance_job(tables: Sequence[StreamingTable]) -> JobDefinition:
    """One op per query, independent of each other (the run's executor runs them at once)."""
    ops = [_maintain_op(t, tables) for t in tables]

    @job(name=JOB_NAME, description="Compaction (OPTIMIZE) and VACUUM of every streaming table, "
         "as each declaration's `maintenance` says; records each table's files and log size.")
    def maintain_tables() -> None:
        for maintain_one in ops:
            maintain_one()

    return maintain_tables


def maintenance_cron(declared: str | None) -> str | None:
    """The schedule's cron: $STREAM_ASSETS_MAINTENANCE_CRON when set ("off": none), else
    the one build_definitions was given."""
    raw = os.environ.get(CRON_ENV)
    if raw is None:
        return declared
    return None if raw.strip().lower() in ("", "off", "none") else raw.strip()


def build_maintenance_schedule(job_def: JobDefinition, cron: str = DEFAULT_CRON
                               ) -> ScheduleDefinition:
    """The job on `cron`, running from the start: tables stay in shape without a thought."""
    return ScheduleDefinition(name=f"{JOB_NAME}_schedule", job=job_def, cron_schedule=cron,
                              default_status=DefaultScheduleStatus.RUNNING)
