"""What a re-drive tells Dagster: one text and one set of figures, for the UI and the CLI alike.

A re-drive that wrote materializes the table (the rows it appended) and its dead letters
(the marks), each with the table's standard figures and the re-drive's; a dry run, which
writes nothing, is an observation of the dead letters with the same figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dagster import AssetMaterialization, AssetObservation, MetadataValue
from pyspark.sql import SparkSession

from stream_assets.monitoring.asset_events import asset_key
from stream_assets.monitoring.delta_writes import table_metadata
from stream_assets.monitoring.metadata import recorded_state
from stream_assets.sinks import delta_version
from stream_assets.tables.redrive import RedriveReport

SUMMARY = "redrive_summary"
SAMPLE_CHARS = 80


def headline(report: RedriveReport) -> str:
    """One sentence: what was chosen, what passed, where it went, what still fails."""
    verb = "would re-drive" if report.dry_run else "re-drove"
    text = (f"{report.table}: {verb} {report.redriven} of {report.chosen} dead letter(s) "
            f"({report.selection.describe()})")
    if report.table_version is not None:
        text += f" into version {report.table_version} of {report.table}"
    failing = sum(report.still_failing.values())
    text += f"; {failing} still fail" + (
        " (" + ", ".join(f"{n} {reason}" for reason, n in report.still_failing.items()) + ")"
        if failing else "")
    if report.finished:
        text += (f"; first finished an interrupted re-drive: {report.finished} letter(s) "
                 f"into version {report.finished_into}")
    return text


def _cell(text: str | None) -> str:
    if text is None:
        return ""
    clipped = text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "…"
    return "`" + clipped.replace("|", "\\|").replace("`", "'").replace("\n", " ") + "`"


def markdown(report: RedriveReport) -> str:
    """The per-reason table the UI shows: reason, re-driven, still failing (why now), sample."""
    lines = [headline(report), "",
             "| reason when refused | re-driven | still failing (reason now) | sample |",
             "| --- | ---: | --- | --- |"]
    for entry in report.by_reason:
        now = ", ".join(f"{n} ({reason})" for reason, n in entry.still_failing.items()) or "0"
        lines.append(f"| {entry.reason.replace('|', '/')} | {entry.redriven} | {now} | "
                     f"{_cell(entry.sample)} |")
    if not report.by_reason:
        lines.append("| (no dead letter matched) | 0 | 0 | |")
    return "\n".join(lines)


def figures(report: RedriveReport) -> dict[str, Any]:
    """The re-drive's metadata, the same on every event it reports."""
    meta: dict[str, Any] = {
        SUMMARY: MetadataValue.md(markdown(report)),
        "redriven": report.redriven,
        "still_failing": sum(report.still_failing.values()),
        "still_failing_by_reason": MetadataValue.json(report.still_failing),
        "redriven_by_reason": MetadataValue.json(
            {e.reason: e.redriven for e in report.by_reason if e.redriven}),
        "redrive_selection": report.selection.describe(),
        "dry_run": report.dry_run,
    }
    if report.plan is not None:
        meta["redrive_plan"] = report.plan
    if report.table_version is not None:
        meta["redriven_into_version"] = report.table_version
    if report.finished:
        meta["redrive_finished_interrupted"] = report.finished
    return meta


def events(report: RedriveReport, spark: SparkSession, lake: Any, instance: Any
           ) -> Iterator[AssetMaterialization | AssetObservation]:
    """A materialization of each table the re-drive wrote; an observation when it wrote none."""
    shared = figures(report)
    wrote_table = report.table_version is not None or report.finished_into is not None
    wrote_letters = report.dead_letter_version_after not in (
        None, report.dead_letter_version_before)
    if report.dry_run or not (wrote_table or wrote_letters):
        yield AssetObservation(asset_key=asset_key(report.dead_letter_table), metadata=shared)
        return
    for name, before, wrote in (
        (report.table, report.table_version_before, wrote_table),
        (report.dead_letter_table, report.dead_letter_version_before, wrote_letters),
    ):
        if not wrote:
            continue
        path = lake.table_path(name)
        after = lake_version(spark, lake, name)
        meta = table_metadata(spark, path, before, after, recorded_state(instance, name),
                              files=lake.files)
        yield AssetMaterialization(asset_key=asset_key(name), metadata={**meta, **shared})


def lake_version(spark: SparkSession, lake: Any, name: str) -> int | None:
    return delta_version(spark, lake.table_path(name), lake.files)
