"""A full refresh from a materialization: which tables it resets, said before, recorded after.

Run config `full_refresh: true` on a table's asset deletes its query's checkpoint and tables
and those of every query streaming from them (project.refresh_closure: their checkpoints hold
the old table's id), then rebuilds the table. The queries it resets besides are rebuilt by
this run when the run materializes them (Dagster runs them after their upstream), else by
their next materialization or the catch-up sensor. The log says all that before anything is
deleted; each reset query's asset gets an observation of what was deleted, and its next
materialization in the same run carries it in its metadata. docs/guarantees.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    DagsterInstance,
    MetadataValue,
)

from stream_assets.errors import TableBusy
from stream_assets.monitoring.asset_events import AssetEvents
from stream_assets.tables.declaration import StreamingTable

# Metadata keys, on the materialization (and the observation) of every table a refresh reset.
DELETED = "full_refresh_deleted"
CASCADE = "full_refresh_cascade"
CASCADE_OF = "reset_as_cascade_of"
REBUILT_BY = "rebuilt_by"
LATER = "its next materialization (or the catch-up sensor); not selected in the refresh's run"
# Continuous runs writing some of the named queries: query -> run id.
Writers = Callable[[DagsterInstance, Sequence[str]], Mapping[str, str]]


@dataclass(frozen=True)
class Cascade:
    """What a full refresh of one query resets besides it: only build_definitions knows every
    table, so it computes this per asset (project.refresh_closure) and passes it in."""

    downstream: tuple[StreamingTable, ...] = ()
    # Who writes tables now; None where no Dagster instance knows (a bare build_asset).
    writers: Writers | None = None

    def names(self) -> list[str]:
        return [t.name for t in self.downstream]


def field_description(table: StreamingTable, cascade: Cascade) -> str:
    """The `full_refresh` field's text in the Launchpad: what it will delete, by name."""
    text = (f"Delete the checkpoint of {table.name} and its tables ({', '.join(table.tables)}), "
            "then rebuild them from the sources.")
    if cascade.downstream:
        text += (f" Also resets, before deleting anything, the queries streaming from it: "
                 f"{', '.join(cascade.names())}. Those selected in the same run are rebuilt "
                 "after it; the others by their next materialization or the catch-up sensor.")
    return text


def run_asset_keys(context: AssetExecutionContext) -> set[AssetKey]:
    """The assets this run materializes (its selection, else every asset of its job)."""
    selection = context.dagster_run.asset_selection
    if selection is not None:
        return set(selection)
    return set(context.job_def.asset_layer.selected_asset_keys)


def announce(context: AssetExecutionContext, table: StreamingTable, cascade: Cascade
             ) -> set[str]:
    """Say what the refresh will delete, then refuse it if a continuous run writes any of it.

    Returns the reset queries besides `table` that this run rebuilds.
    """
    keys = run_asset_keys(context)
    in_run = {t.name for t in cascade.downstream if t.asset_key in keys}
    later = [n for n in cascade.names() if n not in in_run]
    text = f"full refresh of {table.name}: deleting the checkpoint and tables of {table.name}"
    if cascade.downstream:
        text += (f" and, because their queries stream from it, of {', '.join(cascade.names())}"
                 f"; rebuilt by this run after {table.name}: "
                 f"{', '.join(n for n in cascade.names() if n in in_run) or 'none'}")
        if later:
            text += f"; rebuilt by their next materialization or the catch-up sensor: " \
                    f"{', '.join(later)}"
    context.log.warning(text)
    if cascade.writers is not None:
        closure = [table.name, *cascade.names()]
        busy = cascade.writers(context.instance, closure)
        if busy:
            name = next(n for n in closure if n in busy)  # the refreshed table first
            run_id = busy[name]
            raise TableBusy(
                f"full refresh of {table.name} refused: continuous run {run_id} writes {name}"
                + (f" (a query the refresh would reset with {table.name})"
                   if name != table.name else "")
                + "; nothing was deleted. Terminate that run (Runs -> the run -> Terminate), "
                "then launch the refresh again"
            )
    return in_run


def reset_events(table: StreamingTable, cascade: Cascade, deleted: Mapping[str, list[str]],
                 in_run: set[str]) -> list[AssetObservation]:
    """An observation on each table the refresh reset besides `table`: what went, who rebuilds."""
    events = []
    for query in cascade.downstream:
        for name in query.tables:
            events.append(AssetEvents().observation(name, {
                CASCADE_OF: table.name,
                DELETED: MetadataValue.json({query.name: deleted.get(query.name, [])}),
                REBUILT_BY: "this run, after " + table.name if query.name in in_run else LATER,
            }))
    return events


def refreshed_metadata(table: StreamingTable, cascade: Cascade,
                       deleted: Mapping[str, list[str]], in_run: set[str]) -> dict[str, Any]:
    """For the refreshed table's materializations: everything its refresh deleted."""
    meta: dict[str, Any] = {DELETED: MetadataValue.json(dict(deleted))}
    if cascade.downstream:
        later = [n for n in cascade.names() if n not in in_run]
        meta[CASCADE] = (
            f"reset with {table.name} (their queries stream from it): "
            f"{', '.join(cascade.names())}; rebuilt by this run: "
            f"{', '.join(n for n in cascade.names() if n in in_run) or 'none'}"
            + (f"; rebuilt by their next materialization or the catch-up sensor: "
               f"{', '.join(later)}" if later else "")
        )
    return meta


def cascade_metadata(context: AssetExecutionContext, table: StreamingTable) -> dict[str, Any]:
    """For a query this run reset as a cascade of another one: what that refresh deleted."""
    records = context.instance.fetch_observations(table.asset_key, limit=20).records
    for record in records:
        event = record.asset_event
        if record.run_id == context.run_id and event is not None \
                and CASCADE_OF in event.metadata:
            return {CASCADE_OF: event.metadata[CASCADE_OF].value,
                    DELETED: event.metadata[DELETED]}
    return {}
