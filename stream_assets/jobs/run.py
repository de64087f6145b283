"""The continuous job: one op that runs a Supervisor until the run is terminated."""

import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from dagster import (
    DagsterExecutionInterruptedError,
    DagsterRun,
    DagsterRunStatus,
    HookContext,
    JobDefinition,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
    success_hook,
)

from stream_assets.continuous_runs import CONTINUOUS, MODE_TAG, OP_NAME, select_tables
from stream_assets.jobs.config import ContinuousConfig, check_trigger_names
from stream_assets.jobs.reports import DerivedChecks, Event
from stream_assets.jobs.sessions import QuerySessions
from stream_assets.jobs.supervisor import Supervisor
from stream_assets.monitoring.alerts import carried_health
from stream_assets.monitoring.listener import QueryEventListener
from stream_assets.tables.assets import resource_keys
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.pools import pool_slots
from stream_assets.tables.runner import StreamContext, exclusive

JOB_NAME = "continuous_streams"


def resource_keys_of(catalog: Sequence[StreamingTable]) -> set[str]:
    """Every resource the tables' queries read through (Spark, the lake, Kafka clusters)."""
    return set().union({"spark", "lake"}, *(resource_keys(t) for t in catalog))


def _session_keeping_dagster_interrupts(resource: Any) -> Any:
    """The SparkSession, without PySpark's SIGINT handler, which would cancel running jobs.

    Dagster turns a terminate request into SIGINT; PySpark's handler (installed when the
    session starts on the main thread) would cancel the batch in flight instead of letting
    the op stop the queries between batches.
    """
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    session = resource.spark_session
    if main and handler is not None:
        signal.signal(signal.SIGINT, handler)
    return session


def _termination_requested(context: OpExecutionContext) -> bool:
    """The run was marked for termination but no interrupt reached this process.

    Dagster's run launchers deliver a terminate request as an interrupt; this covers
    launchers and in-process executions that cannot signal the op.
    """
    try:
        run = context.instance.get_run_by_id(context.run_id)
    except Exception:
        return False
    return run is not None and run.status == DagsterRunStatus.CANCELING


def _ignore_further_interrupts() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: None)


def run_continuously(
    context: OpExecutionContext, config: ContinuousConfig, catalog: Sequence[StreamingTable],
    checks: Mapping[str, DerivedChecks] | None = None,
) -> Iterator[Event]:
    tables = select_tables(catalog, config.tables)
    check_trigger_names(catalog, config.trigger_intervals)
    bound = {key: getattr(context.resources, key) for key in resource_keys_of(catalog)}
    ctx = StreamContext.of_run(_session_keeping_dagster_interrupts(context.resources.spark),
                               bound, kafka_batch_limit=config.max_records_per_batch)
    listener = QueryEventListener()
    sessions = QuerySessions(ctx.spark, listener, context.log)
    supervisor = Supervisor(tables, ctx, config, context.log, session_for=sessions.for_query,
                            checks=checks,
                            health=lambda table: carried_health(context.instance, table))
    context.log.info(f"running {', '.join(t.name for t in tables)} until terminated")
    with ExitStack() as locks:
        try:
            for table in tables:
                locks.enter_context(exclusive(table, ctx))
            began = last_look = time.time()
            while config.max_runtime_s is None or time.time() - began < config.max_runtime_s:
                supervisor.start_due()
                supervisor.handle(listener.drain())
                supervisor.poll()
                supervisor.probe_sources()
                if supervisor.fatal is not None:
                    raise supervisor.fatal
                yield from supervisor.reports()
                time.sleep(config.poll_interval_s)
                if time.time() - last_look >= 5:
                    last_look = time.time()
                    if _termination_requested(context):
                        raise DagsterExecutionInterruptedError()
            context.log.info(f"max_runtime_s ({config.max_runtime_s:g} s) reached: stopping")
            supervisor.stop_all(config.stop_timeout_s)
            supervisor.handle(listener.drain())
            yield from supervisor.reports(force=True)
        except (DagsterExecutionInterruptedError, KeyboardInterrupt):
            _ignore_further_interrupts()
            context.log.info("termination requested: stopping every query between batches")
            supervisor.stop_all(config.stop_timeout_s)
            supervisor.handle(listener.drain())
            yield from supervisor.reports(force=True)
            if not _termination_requested(context):
                raise
            # Terminate is how a continuous run ends: the queries stopped cleanly and reported,
            # so the step succeeds, and the job's hook ends the run Canceled (end_as_canceled).
            context.log.info("every query stopped; the run ends Canceled")
        except Exception:
            supervisor.stop_all(config.stop_timeout_s)
            yield from supervisor.reports(force=True)
            raise
        finally:
            supervisor.stop_all(0)
            sessions.close()


# The RUN_CANCELED event of a run whose queries stopped cleanly (issue 27, item 1).
CANCELED_MESSAGE = "Terminated: every query stopped between batches after its last report."


@success_hook(name="end_as_canceled")
def end_as_canceled(context: HookContext) -> None:
    """A run that was terminated and whose op stopped its queries cleanly ends Canceled.

    Dagster has no outcome for an op that ends because its run was terminated: an interrupt
    raised in the op fails the step (a red step and a stack trace for an expected stop), and a
    clean return ends the run successful. So the hook, after the step's success, reports the
    run Canceled itself (a plain message, no error), then raises the interrupt so that Dagster
    does not end it successful: for a run already Canceled, Dagster notes the interrupt in a
    debug engine event instead of a second RUN_CANCELED carrying the interrupt's stack trace.
    """
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and run.status == DagsterRunStatus.CANCELING:
        context.instance.report_run_canceled(run, message=CANCELED_MESSAGE)
        raise DagsterExecutionInterruptedError(CANCELED_MESSAGE)


def _continuous(run: DagsterRun) -> bool:
    return run.tags.get(MODE_TAG) == CONTINUOUS


def build_continuous_job(
    catalog: Sequence[StreamingTable], name: str = JOB_NAME,
    checks: Mapping[str, DerivedChecks] | None = None,
) -> JobDefinition:
    """The continuous job over the given declarations.

    A builder rather than a module-level job, so that this module does not pick the project's
    tables: project.build_definitions passes the ones it is given, tests pass their own.
    `checks` are the queries' derived checks (monitoring/checks.table_checks), which the run
    evaluates every `checks_interval_s` on the tables it wrote.
    """

    @op(
        name=OP_NAME,
        out={},
        required_resource_keys=resource_keys_of(catalog),
        description="Runs the selected streaming queries until the run is terminated.",
    )
    def run_streams(context: OpExecutionContext, config: ContinuousConfig) -> Iterator[Event]:
        # Every query's pool slot, before the SparkSession starts: a catch-up run of one of
        # the tables makes this run wait for it, another continuous run refuses it.
        with pool_slots(context, select_tables(catalog, config.tables), refuse=_continuous):
            yield from run_continuously(context, config, catalog, checks)

    @job(
        name=name,
        executor_def=in_process_executor,
        hooks={end_as_canceled},
        tags={MODE_TAG: CONTINUOUS},
        description="Continuous mode: every streaming query (or a selection) with "
        "processing-time triggers in one SparkSession, until the run is terminated.",
    )
    def continuous_job() -> None:
        run_streams()

    return continuous_job
