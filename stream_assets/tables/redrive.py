"""Re-drive a table's dead letters through its current declaration, exactly once.

The order of the writes is what makes it exactly once, also when the process is killed
between any two of them:

1. **Intent** (one MERGE into the dead letters): each letter that passes now gets
   `redrive_plan` = the dead-letter table's version the re-drive planned from, and
   `redriven_at`; a letter that still fails gets the reason the declaration gives now.
2. **Append** the rows of the intended letters to the table, with Delta's transaction ids
   (app id `redrive:<table>`, version = the plan): an append Delta has committed already is
   skipped. The commit's userMetadata names the plan, so the re-drive finds its version.
3. **Mark** (one MERGE): each appended letter gets `redriven_version`, the table's version
   that holds it.

A letter with a plan and no version is the trace of an interrupted re-drive: the next one
finishes it first (`finish`), from the letters themselves, so a stream that wrote new dead
letters in between changes nothing. Every Kafka position is then in the table or among the
dead letters not re-driven, once. Pure planning lives in redrive_plan.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stream_assets.errors import StreamFailed
from stream_assets.sinks import delta_version, noted_commit, sql_path
from stream_assets.tables import dead_letters
from stream_assets.tables import redrive_plan as plans
from stream_assets.tables.context import StreamContext
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.redrive_plan import POSITION, ReasonCount, Selection
from stream_assets.tables.runner import evolve_table, exclusive
from stream_assets.tables.writes import WriteTarget, refuse_failed_batch

PLAN, AT, VERSION = dead_letters.REDRIVE_COLUMNS


@dataclass
class RedriveReport:
    """What one re-drive found and did (or, in a dry run, would do)."""

    table: str
    dead_letter_table: str
    selection: Selection
    dry_run: bool
    # The dead-letter table's version it planned from (the append's transaction version).
    plan: int | None = None
    by_reason: list[ReasonCount] = field(default_factory=list)
    # The table's version that holds the re-driven rows, None when none were written.
    table_version: int | None = None
    table_version_before: int | None = None
    dead_letter_version_before: int | None = None
    dead_letter_version_after: int | None = None
    # Letters of an interrupted re-drive this one finished first, and where they went.
    finished: int = 0
    finished_into: int | None = None

    @property
    def redriven(self) -> int:
        return sum(c.redriven for c in self.by_reason)

    @property
    def still_failing(self) -> dict[str, int]:
        return plans.still_failing(self.by_reason)

    @property
    def chosen(self) -> int:
        return self.redriven + sum(self.still_failing.values())


def redrive(table: StreamingTable, ctx: StreamContext, selection: Selection,
            dry_run: bool = False) -> RedriveReport:
    """Re-drive the selected dead letters of `table` (or report what would happen).

    Holds the table's writer lock, like every writer of its query; the caller holds its pool
    slot and refuses while a continuous run writes it (jobs/redrive.py)."""
    problem = plans.refusal(table)
    if problem:
        raise StreamFailed(f"cannot re-drive {table.name}: {problem}")
    dead = table.dead_letter_table
    assert dead is not None
    report = RedriveReport(table.name, dead, selection, dry_run)
    with exclusive(table, ctx):
        spark, files = ctx.spark, ctx.lake.files
        dead_path = ctx.lake.table_path(dead)
        report.dead_letter_version_before = delta_version(spark, dead_path, files)
        report.table_version_before = delta_version(
            spark, ctx.lake.table_path(table.name), files)
        if report.dead_letter_version_before is None:
            return report  # nothing refused yet
        if not dry_run:
            evolve_table(table, dead, ctx)  # a table from before the re-drive's columns
            report.finished, report.finished_into = finish(table, ctx)
        report.plan = delta_version(spark, dead_path, files)
        letters = (spark.read.format("delta").option("versionAsOf", report.plan)
                   .load(dead_path))
        chosen = plans.candidates(letters, table.name, selection).persist()
        try:
            reparsed = plans.reparse(table, chosen)
            outcomes = reparsed.outcomes.persist()
            try:
                report.by_reason = plans.count_by_reason(outcomes)
                if dry_run or not report.by_reason:
                    return report
                if report.redriven:
                    _refuse_failing_rules(table, reparsed, report.plan)
                _intend(ctx, table, outcomes, report.plan)
            finally:
                outcomes.unpersist()
        finally:
            chosen.unpersist()
        if report.redriven:
            report.table_version = _append_and_mark(table, ctx, report.plan)
        report.dead_letter_version_after = delta_version(spark, dead_path, files)
    return report


def finish(table: StreamingTable, ctx: StreamContext) -> tuple[int, int | None]:
    """Complete a re-drive that was interrupted after its intent: (letters finished, the
    table's version that holds them)."""
    dead_path = ctx.lake.table_path(table.dead_letter_table or "")
    letters = ctx.spark.read.format("delta").load(dead_path)
    plans_left = [r[PLAN] for r in plans.pending(letters, table.name)
                  .select(PLAN).distinct().collect()]
    finished, version = 0, None
    for plan in sorted(plans_left):
        count = plans.pending(letters, table.name).where(F.col(PLAN) == plan).count()
        version = _append_and_mark(table, ctx, plan)
        finished += count
    return finished, version


def _refuse_failing_rules(table: StreamingTable, reparsed: plans.Reparsed, plan: int) -> None:
    failing = [e for e in table.expectations if e.action == "fail"]
    if failing:
        refuse_failed_batch(reparsed.flagged, failing, table.name, plan)


def _intend(ctx: StreamContext, table: StreamingTable, outcomes: DataFrame, plan: int) -> None:
    """Step 1: choose the letters that pass (plan, time), give the others their reason now."""
    changes = outcomes.where(
        F.col(plans.NOW).isNull() | (F.col(plans.NOW) != F.col("error"))
    ).select(*POSITION, F.col(plans.NOW).alias("reason"))
    if changes.isEmpty():
        return
    now = F.lit(datetime.now(UTC)).cast("timestamp")
    _merge(ctx, table, changes, f"{PLAN} IS NULL", {
        "s.reason IS NULL": {PLAN: F.lit(plan).cast("long"), AT: now},
        "s.reason IS NOT NULL": {"error": F.col("s.reason")},
    })


def _append_and_mark(table: StreamingTable, ctx: StreamContext, plan: int) -> int | None:
    """Steps 2 and 3 for the letters of `plan`; returns the table's version holding them."""
    spark = ctx.spark
    dead_path = ctx.lake.table_path(table.dead_letter_table or "")
    path = ctx.lake.table_path(table.name)
    note = plans.commit_note(table.name, plan)
    intended = plans.pending(spark.read.format("delta").load(dead_path), table.name) \
        .where(F.col(PLAN) == plan).persist()
    try:
        # The append cannot be older than the intent (a margin for clocks of other machines).
        since = intended.agg(F.min(AT)).first()[0]
        since = since - timedelta(minutes=10) if since is not None else None
        version = noted_commit(spark, path, note, since)
        if version is None:
            # Not appended yet: the rows come from the letters, through the declaration now.
            reparsed = plans.reparse(table, intended)
            target = WriteTarget(table.name, table.name, path, table.keys, table.partition_by,
                                 table.property_pairs, app_id=plans.app_id(table.name),
                                 note=note)
            table.sink.write_batch(reparsed.rows, plan, target)
            version = noted_commit(spark, path, note, since)
            if version is None:
                raise StreamFailed(f"re-drive of {table.name}: the append of plan {plan} is "
                                   "not in the table's history; run the re-drive again")
        # What the table holds decides, not what was meant: a letter is marked only when its
        # position is in the table (an interrupted run's append may predate a changed
        # declaration); the others go back to the dead letters not re-driven.
        held = spark.read.format("delta").load(path).select(*POSITION)
        landed = intended.join(held, list(POSITION), "left_semi").select(*POSITION)
        missed = intended.join(held, list(POSITION), "left_anti").select(*POSITION)
        marks = (landed.withColumn("landed", F.lit(True))
                 .unionByName(missed.withColumn("landed", F.lit(False))))
        _merge(ctx, table, marks, f"{PLAN} = {int(plan)}", {
            "s.landed": {VERSION: F.lit(version).cast("long")},
            "NOT s.landed": {PLAN: F.lit(None).cast("long"),
                             AT: F.lit(None).cast("timestamp")},
        })
        return version
    finally:
        intended.unpersist()


def _merge(ctx: StreamContext, table: StreamingTable, source: DataFrame, where: str,
           updates: dict[str, dict[str, Column]]) -> None:
    """One MERGE into the dead letters on (refused_by, position), of the letters `where`
    (SQL on the dead letters' own columns) holds for: `updates` by condition on the source."""
    target = sql_path(ctx.lake.table_path(table.dead_letter_table or ""))
    on = " AND ".join(f"{target}.`{c}` = s.`{c}`" for c in POSITION)
    condition = F.expr(f"{on} AND {target}.refused_by = '{table.name}' AND {where}")
    merge = source.alias("s").mergeInto(target, condition)
    for when, assignments in updates.items():
        merge = merge.whenMatched(F.expr(when)).update(assignments)
    merge.merge()
