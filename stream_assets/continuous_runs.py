"""What identifies a continuous run and the tables it runs.

The continuous job (jobs/) starts such runs and the sensors (monitoring/sensors.py) find
them in Dagster's storage, read the tables they run from their run config, and leave those
tables alone. Both import these names from here, so the sensors do not load the job's module
(the Spark supervision loop) and the job does not know who watches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, Failure, RunsFilter

from stream_assets.tables.declaration import StreamingTable

OP_NAME = "run_streams"
MODE_TAG = "stream_assets/mode"
CONTINUOUS = "continuous"
# A continuous run in these states writes its tables, or is about to, or still does.
WRITING = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def select_tables(
    catalog: Sequence[StreamingTable], names: Sequence[str]
) -> list[StreamingTable]:
    """The declarations to run, upstream queries first; unknown names are refused."""
    by_name = {t: decl for decl in catalog for t in decl.tables}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise Failure(
            description=f"unknown table(s) {', '.join(unknown)}; the continuous job runs "
            f"{', '.join(sorted(by_name))}"
        )
    chosen = {by_name[n].name: by_name[n] for n in names} if names else {
        t.name: t for t in catalog
    }
    ordered: list[StreamingTable] = []
    remaining = list(chosen.values())
    while remaining:
        ready = [
            t for t in remaining
            if not any(u in chosen and chosen[u] not in ordered for u in t.upstream_tables)
        ] or remaining[:1]  # a cycle cannot be ordered: start it anyway, it will wait
        for t in ready:
            ordered.append(t)
            remaining.remove(t)
    return ordered


def continuous_runs(instance: DagsterInstance, statuses: Sequence[DagsterRunStatus]
                    ) -> list[DagsterRun]:
    return list(instance.get_runs(RunsFilter(tags={MODE_TAG: CONTINUOUS}, statuses=statuses)))


def run_tables(run: DagsterRun, catalog: Sequence[StreamingTable]) -> set[str]:
    """The queries a continuous run runs (from its run config; all when none are named)."""
    config = ((run.run_config or {}).get("ops", {}).get(OP_NAME, {}) or {}).get("config") or {}
    names = config.get("tables") or []
    try:
        return {t.name for t in select_tables(catalog, names)}
    except Exception:
        return {t.name for t in catalog}


def continuous_writers(instance: DagsterInstance, catalog: Sequence[StreamingTable],
                       queries: Iterable[str]) -> dict[str, str]:
    """Which of `queries` a continuous run writes now (or is about to): query -> run id."""
    wanted = set(queries)
    writers: dict[str, str] = {}
    for run in continuous_runs(instance, WRITING):
        for name in sorted(run_tables(run, catalog) & wanted):
            writers.setdefault(name, run.run_id)
    return writers
