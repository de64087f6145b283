"""The re-drive job, `redrive_dead_letters`: dead letters through a table's current declaration.

Launched from the Launchpad (Jobs -> redrive_dead_letters) or by `stream-assets redrive
TABLE`, which runs this job. Its one op refuses while a continuous run writes the table
(naming the run), takes the table's concurrency pool slot like any writer (waiting for a
catch-up run of it), and re-drives under the table's writer lock (tables/redrive.py). What it
did is reported by redrive_report.py.
"""

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from dagster import (
    AssetMaterialization,
    AssetObservation,
    Config,
    DagsterRun,
    Failure,
    JobDefinition,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
)
from pydantic import Field, create_model

from stream_assets.continuous_runs import CONTINUOUS, MODE_TAG, continuous_writers
from stream_assets.errors import TableBusy
from stream_assets.jobs.redrive_report import events, headline
from stream_assets.tables.context import StreamContext
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.pools import pool_slots
from stream_assets.tables.redrive import redrive
from stream_assets.tables.redrive_plan import Selection, refusal

JOB_NAME = "redrive_dead_letters"
OP_NAME = "redrive"


class RedriveConfig(Config):
    table: str = Field(description="The table whose dead letters to re-drive (or the name of "
                       "its dead-letter table).")
    reasons: list[str] = Field(
        default_factory=list,
        description="Only dead letters refused for one of these reasons (their `error`, "
        "exactly); empty: every reason.")
    refused_since: str | None = Field(
        default=None, description="Only dead letters refused at or after this time "
        "(`error_time`; ISO-8601, e.g. 2026-05-01T10:00:00Z; no offset means UTC).")
    refused_until: str | None = Field(
        default=None, description="Only dead letters refused before this time (ISO-8601).")
    dry_run: bool = Field(
        default=False, description="Parse the dead letters again and report, per reason, how "
        "many would pass and how many still fail, with a sample of each; write nothing.")


def redrive_config(catalog: Sequence[StreamingTable]) -> type[RedriveConfig]:
    """RedriveConfig whose `table` field names the tables that can be re-driven (Launchpad)."""
    names = ", ".join(t.name for t in catalog if refusal(t) is None) or "none"
    return create_model(RedriveConfig.__name__, __base__=RedriveConfig, table=(str, Field(
        description=f"The table whose dead letters to re-drive (or its dead-letter table's "
        f"name); one of: {names}.")))


def when(text: str | None, field: str) -> datetime | None:
    """An ISO-8601 time of the config, UTC when it names no offset."""
    if text is None or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Failure(description=f"{field}: {text!r} is not an ISO-8601 time, e.g. "
                      "2026-05-01T10:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def selection_of(config: RedriveConfig) -> Selection:
    return Selection(tuple(config.reasons), when(config.refused_since, "refused_since"),
                     when(config.refused_until, "refused_until"))


def chosen_table(catalog: Sequence[StreamingTable], name: str) -> StreamingTable:
    """The declaration named (by its table or its dead letters), refused if it cannot be
    re-driven."""
    by_name = {n: t for t in catalog for n in t.tables}
    if name not in by_name:
        raise Failure(description=f"unknown table {name!r}; tables with dead letters to "
                      f"re-drive: {', '.join(t.name for t in catalog if refusal(t) is None)}")
    table = by_name[name]
    problem = refusal(table)
    if problem:
        raise Failure(description=f"cannot re-drive {table.name}: {problem}")
    return table


def _continuous(run: DagsterRun) -> bool:
    return run.tags.get(MODE_TAG) == CONTINUOUS


def build_redrive_job(catalog: Sequence[StreamingTable], name: str = JOB_NAME
                      ) -> JobDefinition:
    """The re-drive job over the given declarations (project.build_definitions adds it)."""
    catalog = list(catalog)
    config_class = redrive_config(catalog)

    @op(name=OP_NAME, out={}, required_resource_keys={"spark", "lake"},
        description="Re-drives a table's dead letters through its current declaration.")
    def redrive_op(context: OpExecutionContext, config: config_class  # type: ignore[valid-type]
                   ) -> Iterator[AssetMaterialization | AssetObservation]:
        table = chosen_table(catalog, config.table)
        selection = selection_of(config)
        busy = continuous_writers(context.instance, catalog, [table.name])
        if busy:
            raise TableBusy(
                f"re-drive of {table.name} refused: continuous run {busy[table.name]} writes "
                f"{table.name}; nothing was written. Terminate that run (Runs -> the run -> "
                "Terminate), then launch the re-drive again")
        with pool_slots(context, [table], refuse=_continuous):
            lake = context.resources.lake
            ctx = StreamContext(spark=context.resources.spark.spark_session, lake=lake,
                                source=None)
            report = redrive(table, ctx, selection, dry_run=config.dry_run)
        context.log.info(headline(report))
        yield from events(report, ctx.spark, lake, context.instance)

    @job(name=name, executor_def=in_process_executor,
         description="Re-drive a table's dead letters through its current declaration "
         "(parser or record schema, expectations included), exactly once; `dry_run` reports "
         "what would pass (docs/operations.md, 'Dead letters: inspect and re-drive').")
    def redrive_job() -> None:
        redrive_op()

    return redrive_job
