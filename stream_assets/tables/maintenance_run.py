"""One table's maintenance, run: compaction, VACUUM, and the figures the UI shows (I/O).

What may run beside the table's writer, and why nothing is lost or written twice:

* Compaction (`OPTIMIZE`) commits files with `dataChange: false`. Against an append (Delta's
  streaming sink or an idempotent append) Delta finds no conflict: the append read nothing the
  compaction removed. Against a MERGE, whichever commits second fails with Delta's
  concurrent-modification error having committed nothing, and tries again on the new snapshot
  (`sinks.retry_on_conflict`, used by both sides); the MERGE's transaction id keeps a batch
  from being merged twice.
* VACUUM deletes only files removed longer ago than the table's retention, and does not run
  while a query streaming from the table has not read versions older than that
  (`reader_hold`), so a reader that lags never finds its files gone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pyspark.sql import SparkSession

from stream_assets.checkpoint_log import batch_ids, last_committed_batch
from stream_assets.delta_log import delta_log_version
from stream_assets.lake_files import LakeFiles
from stream_assets.monitoring.lag import parse_delta_offset
from stream_assets.sinks import is_delta_table, retry_on_conflict, sql_path
from stream_assets.tables.maintenance import (
    DEFAULT_VACUUM_RETENTION,
    RETENTION_PROPERTY,
    Maintenance,
    parse_interval,
)

# Between the storage's clock (commit file times) and Delta's when VACUUM runs.
CLOCK_MARGIN = timedelta(hours=1)


@dataclass
class MaintenanceReport:
    """What one run did to one table, and the table's figures after it."""

    table: str
    figures: dict[str, Any] = field(default_factory=dict)
    compaction: dict[str, Any] | None = None
    vacuum: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def metadata(self, now: float) -> dict[str, Any]:
        meta: dict[str, Any] = dict(self.figures)
        if self.compaction is not None:
            meta.update({f"compaction_{k}": v for k, v in self.compaction.items()})
            if self.compaction.get("files_removed"):
                meta["last_compaction_at"] = now
        if self.vacuum is not None:
            meta.update({f"vacuum_{k}": v for k, v in self.vacuum.items()})
            meta["last_vacuum_at"] = now
        if self.notes:
            meta["maintenance_notes"] = "; ".join(self.notes)
        return meta


def table_figures(spark: SparkSession, path: str, files: LakeFiles) -> dict[str, Any]:
    """Live files, their size, and the size of the `_delta_log` (its own folder's files)."""
    detail = spark.sql(f"DESCRIBE DETAIL {sql_path(path)}").first()
    live = int(detail["numFiles"] or 0)
    size = int(detail["sizeInBytes"] or 0)
    figures: dict[str, Any] = {
        "live_files": live,
        "table_bytes": size,
        "average_file_bytes": size // live if live else 0,
    }
    if files.resolve(path) is not None:
        log_files, log_bytes = files.folder_size(f"{path.rstrip('/')}/_delta_log")
        figures["log_files"] = log_files
        figures["log_bytes"] = log_bytes
    return figures


def compact(spark: SparkSession, path: str, zorder_by: tuple[str, ...] = ()) -> dict[str, Any]:
    """Bin-packing OPTIMIZE (ZORDER BY the columns given), retried after a conflict with a
    concurrent MERGE; commits nothing when there is nothing to compact."""
    statement = f"OPTIMIZE {sql_path(path)}"
    if zorder_by:
        statement += " ZORDER BY (" + ", ".join(f"`{c}`" for c in zorder_by) + ")"
    started = time.monotonic()
    row = retry_on_conflict(lambda: spark.sql(statement).first())
    metrics = row["metrics"] if row is not None else None
    return {
        "files_removed": int(metrics["numFilesRemoved"]) if metrics else 0,
        "files_added": int(metrics["numFilesAdded"]) if metrics else 0,
        "seconds": round(time.monotonic() - started, 3),
    }


def reader_hold(path: str, readers: Mapping[str, str], files: LakeFiles, now: float
                ) -> tuple[timedelta, str | None] | str:
    """How far back VACUUM must keep removed files for the queries streaming from the table
    (`readers`: query name -> checkpoint), and which reader needs the most; or why it cannot
    be told (then no VACUUM this time).

    A reader whose last committed batch ended at Delta offset (v, i) reads version v and later
    next (or the snapshot at v): every file removed at v or after must stay, so the retention
    covers the age of version v's commit. Offset lines do not name their table, so a reader of
    several Delta tables is held by the oldest of its positions (never less than needed).
    """
    latest = delta_log_version(path, files)
    hold, holder = timedelta(0), None
    for name, checkpoint in readers.items():
        batch = last_committed_batch(checkpoint, files)
        if isinstance(batch, str):
            if files.resolve(checkpoint) is not None and not batch_ids(
                    files, f"{checkpoint.rstrip('/')}/offsets"):
                continue  # never planned a batch: it will start from the table as it is then
            return f"the position of reader {name} cannot be told ({batch})"
        versions = [p.version for p in map(parse_delta_offset, batch.source_lines)
                    if p is not None]
        if not versions or latest is None:
            continue
        needed = min(versions)
        if needed > latest:
            continue  # caught up: it reads only versions still to come
        committed = files.mtime(f"{path.rstrip('/')}/_delta_log/{needed:020d}.json")
        if committed is None:
            return f"reader {name} stands at version {needed}, no longer in the table's log"
        age = timedelta(seconds=max(0.0, now - committed)) + CLOCK_MARGIN
        if age > hold:
            hold, holder = age, name
    return hold, holder


def vacuum(spark: SparkSession, path: str) -> dict[str, Any]:
    """VACUUM at the table's own retention (`delta.deletedFileRetentionDuration`, which the
    declaration's `vacuum_retention` sets): Delta 4 ignores any other RETAIN (delta-io/delta
    #5028), so a reader that needs more is served by not running VACUUM (`maintain`)."""
    started = time.monotonic()
    mode = "lite"
    try:
        # LITE finds what to delete in the log's tombstones instead of listing every file
        # under the table (FULL: one listing task per folder, minutes for a table of millions
        # of small files); it refuses when the log no longer reaches back to the last
        # VACUUM, and FULL then does it, also catching files no commit ever referenced.
        spark.sql(f"VACUUM {sql_path(path)} LITE").collect()
    except Exception as exc:
        if "LITE" not in str(exc).upper():
            raise
        mode = "full"
        spark.sql(f"VACUUM {sql_path(path)}").collect()
    return {"mode": mode, "seconds": round(time.monotonic() - started, 3)}


def table_retention(spark: SparkSession, path: str) -> timedelta:
    """The table's `delta.deletedFileRetentionDuration` (Delta's 7 days when unset)."""
    properties = spark.sql(f"DESCRIBE DETAIL {sql_path(path)}").first()["properties"] or {}
    text = properties.get(RETENTION_PROPERTY)
    parsed = parse_interval(text) if text else None
    return DEFAULT_VACUUM_RETENTION if parsed is None else parsed


def maintain(
    spark: SparkSession, name: str, path: str, plan: Maintenance, readers: Mapping[str, str],
    files: LakeFiles, last_vacuum_at: float | None, now: float | None = None,
) -> MaintenanceReport:
    """Compact and, when due, VACUUM one table as its declaration says, then measure it."""
    now = time.time() if now is None else now
    report = MaintenanceReport(name)
    if not is_delta_table(spark, path):
        report.notes.append("no Delta table yet")
        return report
    if plan.compact:
        report.compaction = compact(spark, path, plan.zorder_by)
    due = last_vacuum_at is None or now - last_vacuum_at >= plan.vacuum_every.total_seconds()
    if plan.vacuum and due:
        hold = reader_hold(path, readers, files, now)
        retention = table_retention(spark, path)
        if isinstance(hold, str):
            report.notes.append(f"VACUUM skipped: {hold}")
        elif hold[0] > retention:
            report.notes.append(
                f"VACUUM skipped: {hold[1]} has not read versions committed "
                f"{hold[0].total_seconds() / 3600:.1f} h ago, and the table keeps removed "
                f"files {retention.total_seconds() / 3600:.1f} h; it runs once {hold[1]} "
                "has caught up")
        else:
            report.vacuum = vacuum(spark, path)
            report.vacuum["retention_hours"] = round(retention.total_seconds() / 3600, 3)
    elif plan.vacuum:
        report.notes.append("VACUUM not due yet")
    report.figures = table_figures(spark, path, files)
    return report
