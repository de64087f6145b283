"""One writer per query across machines: Dagster concurrency pools, one per query, limit 1.

Each query has a pool (StreamingTable.pool). The catch-up asset declares it (`pool=` in
tables/assets.py), so Dagster claims its slot for the step, and the queued run coordinator
keeps a second catch-up run of the table in the queue while the slot is taken. The
continuous job runs several queries in one op, and an op has one pool: `pool_slots` claims
the slot of every query the run writes, the way Dagster claims a step's, and holds them
until the op ends. Slots live in the instance's storage, which every machine of a
deployment shares; the local lock (runner.writer_lock) stays as a second guard.

What the instance must say (deploy/dagster.yaml, deploy/local/dagster.yaml):
`concurrency.pools.default_limit: 1` (or limit 1 on each pool) and op granularity: with
`granularity: run` Dagster never claims slots inside a run, so the continuous job's claims
would keep nobody out. `check_pool_settings` refuses that and a limit above 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from dagster import (
    DagsterExecutionInterruptedError,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Failure,
    OpExecutionContext,
)

# Dagster's own claim loop for a step's slot (the executor's): priority from the run's
# `dagster/priority` tag, the pool's default limit set on first use, back-off between tries
# and pending claims withdrawn on exit. Dagster 1.13 has no public API to claim a pool slot
# for anything but a whole op, and the continuous op needs one slot per query.
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.instance.config import PoolGranularity

from stream_assets.errors import TableBusy
from stream_assets.tables.declaration import StreamingTable

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
POOL_PAGE = "Deployment -> Concurrency"
SET_LIMIT = ("set `concurrency: pools: default_limit: 1` in dagster.yaml (deploy/dagster.yaml "
             "does), or this pool's limit to 1 on its page ({page}) or with `dagster instance "
             "concurrency set {pool} 1`")


def check_pool_settings(instance: DagsterInstance, table: StreamingTable) -> str | None:
    """Refuse settings under which the pool lets two writers in; say when it keeps none out.

    Returns a warning when the pool has no limit (only the local lock then guards the
    table), None when all is well.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None  # an in-memory instance: one process, the local lock is the guard
    granularity = instance.get_concurrency_config().pool_config.pool_granularity
    if granularity == PoolGranularity.RUN:
        raise Failure(
            description=f"{table.name}: the instance's pools are enforced per run "
            "(`concurrency: pools: granularity: run`), so a continuous run's slots keep no "
            "catch-up run out; set `granularity: op` in dagster.yaml (docs/guarantees.md)"
        )
    # The limit, or the instance's default for a pool not used yet; no public API reads it.
    limit = storage.get_concurrency_info(table.pool).limit
    fix = SET_LIMIT.format(page=POOL_PAGE, pool=table.pool)
    if limit is not None and limit > 1:
        raise Failure(
            description=f"{table.name}: pool {table.pool} lets {limit} runs write the table "
            f"at once; one writer per checkpoint needs limit 1: {fix}"
        )
    if limit is None:
        return (f"{table.name}: pool {table.pool} has no limit, so only this machine's lock "
                f"keeps a second writer out; {fix}")
    return None


def holders(instance: DagsterInstance, pool: str) -> list[DagsterRun]:
    """The runs holding the pool's slots now (what the pool page lists as in progress)."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    runs = (instance.get_run_by_id(run_id) for run_id in sorted(info.active_run_ids))
    return [run for run in runs if run is not None]


def describe(run: DagsterRun) -> str:
    text = f"run {run.run_id} ({run.job_name}, {run.status.value})"
    if run.status in FINISHED:
        text += (", which has ended: the daemon frees its slot after run_monitoring's "
                 f"free_slots_after_run_end_seconds, or free it on the pool page ({POOL_PAGE})")
    return text


@contextmanager
def pool_slots(
    context: OpExecutionContext,
    tables: Sequence[StreamingTable],
    refuse: Callable[[DagsterRun], bool] = lambda run: False,
    poll_s: float = 1.0,
    report_every_s: float = 60.0,
) -> Iterator[None]:
    """Hold the pool slot of every table's query for as long as the block runs.

    Waits while another run holds a slot (saying which run), unless `refuse` says that run
    never ends by itself: then the block is refused at once. Claims are taken in pool order,
    so two runs claiming overlapping sets never wait for each other in a circle. The slots
    are freed when the block ends; a run that dies without ending it leaves them to the
    daemon, which frees the slots of ended runs (run_monitoring in deploy/dagster.yaml).
    """
    instance = context.instance
    for table in tables:
        warning = check_pool_settings(instance, table)
        if warning:
            context.log.warning(warning)
    if not instance.event_log_storage.supports_global_concurrency_limits:
        yield
        return
    run_id = context.run_id
    claimed: list[str] = []
    with InstanceConcurrencyContext(instance, context.dagster_run) as slots:
        try:
            for table in sorted(tables, key=lambda t: t.pool):
                # The pool page lists a slot by run and step key: name the query in it.
                step_key = f"{context.op_handle}[{table.name}]"
                reported = -report_every_s
                while not slots.claim(table.pool, step_key):
                    others = [r for r in holders(instance, table.pool) if r.run_id != run_id]
                    for other in others:
                        if refuse(other) and other.status not in FINISHED:
                            raise TableBusy(
                                f"{table.name} is written by {describe(other)}; terminate "
                                f"that run or leave {table.name} out of this run's tables"
                            )
                    if time.monotonic() - reported >= report_every_s:
                        reported = time.monotonic()
                        held_by = "; ".join(describe(r) for r in others) or "runs queued first"
                        context.log.info(f"{table.name}: waiting for a slot of pool "
                                         f"{table.pool}, held by {held_by}")
                    current = instance.get_run_by_id(run_id)
                    if current is not None and current.status == DagsterRunStatus.CANCELING:
                        raise DagsterExecutionInterruptedError()
                    time.sleep(poll_s)
                claimed.append(step_key)
            context.log.info("holding pool(s) " + ", ".join(sorted(t.pool for t in tables)))
            yield
        finally:
            for step_key in claimed:
                slots.free_step(step_key)
