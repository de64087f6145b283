"""Run the ready steps of a run at the same time, in threads of the run's one process.

Tables of a run that do not depend on each other (raw_events and impression_clicks; later the
tables downstream of raw_events, and the checks of tables already written) can run their
catch-up queries at once in the run's SparkSession: Spark schedules the queries' tasks side by
side, and while one query waits on its driver-side work (planning, commits, the Delta log) the
others use the cores. Dagster's multiprocess executor would start a JVM per step, and its
in-process executor runs one step after the other; Dagster has no threaded executor, so this
is one, built on the same pieces as the in-process one (docs/architecture.md).

What it uses from Dagster's internals, and why it holds with threads (Dagster 1.13):
* `ActiveExecution` sequences the steps, claims each step's concurrency pool (the one-writer
  guarantee of tables/pools.py is untouched) and limits them to `max_concurrent`; only the
  main thread calls it.
* `dagster_event_sequence_for_step` runs one step and writes its events to the instance's
  event log, as a multiprocess executor's children do from their processes; the main thread
  passes each event on to the run and to `ActiveExecution`.
* Compute logs are captured once for the whole process, as the in-process executor does.
* A terminated run's interrupt reaches only the main thread: it asks the worker threads'
  queries to stop (runner.request_stop) and waits for their steps to end.

Upgrading Dagster: re-run stream_assets_tests/test_parallel_executor.py first.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

from dagster import DagsterEvent, Executor, Field, executor
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import (
    PlanExecutionContext,
    PlanOrchestrationContext,
    StepExecutionContext,
)
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import (
    _trigger_hook,
    dagster_event_sequence_for_step,
)
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.execution.step_dependency_config import StepDependencyConfig

from stream_assets.tables import runner

# As many steps as cores, 2 to 4: a catch-up query spends much of its time on its driver
# (planning, commits, the Delta log), so two keep even two cores busy, and more than a few
# only share the same cores (each already runs twice the cores in tasks, resources/spark.py).
DEFAULT_MAX_CONCURRENT = max(2, min(4, os.cpu_count() or 2))
_DONE = object()
# How long a failing run waits for its running steps to stop their queries (each looks every
# second, tables/runner.py); a query that does not stop by then is stopped with the session.
_STOP_WAIT_S = 30


class ParallelInProcessExecutor(Executor):
    """Every step in the run's process; up to `max_concurrent` ready steps at once."""

    def __init__(self, retries: RetryMode, max_concurrent: int) -> None:
        self._retries = retries
        self.max_concurrent = max_concurrent

    @property
    def retries(self) -> RetryMode:
        return self._retries

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
                ) -> Iterator[DagsterEvent]:
        steps = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()}), up to {self.max_concurrent} "
            "at once",
            event_specific_data=EngineEventData.in_process(os.getpid(), steps),
        )

        def iterate(job_context: PlanExecutionContext, execution_plan: ExecutionPlan
                    ) -> Iterator[DagsterEvent]:
            return _threaded_steps(job_context, execution_plan, self.max_concurrent)

        began = time.monotonic()
        yield from ExecuteRunWithPlanIterable(
            execution_plan=plan_context.execution_plan,
            iterator=iterate,
            execution_context_manager=PlanExecutionContextManager(
                job=plan_context.job,
                retry_mode=plan_context.retry_mode,
                execution_plan=plan_context.execution_plan,
                run_config=plan_context.run_config,
                dagster_run=plan_context.dagster_run,
                instance=plan_context.instance,
                raise_on_error=plan_context.raise_on_error,
                output_capture=plan_context.output_capture,
                step_dependency_config=StepDependencyConfig.default(),
            ),
        )
        yield DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in process (pid: {os.getpid()}) in "
            f"{time.monotonic() - began:.1f} s",
            event_specific_data=EngineEventData.in_process(os.getpid(), steps),
        )


def _run_step(step_context: StepExecutionContext, events: queue.Queue) -> None:
    """A worker thread: the step's events onto the queue, then _DONE (or what broke it)."""
    key = step_context.step.key
    try:
        for event in dagster_event_sequence_for_step(step_context):
            events.put((key, event))
        events.put((key, _DONE))
    except BaseException as exc:  # handed to the main thread, which raises it
        events.put((key, exc))


def _threaded_steps(job_context: PlanExecutionContext, execution_plan: ExecutionPlan,
                    max_concurrent: int) -> Iterator[DagsterEvent]:
    compute_logs = job_context.instance.compute_log_manager
    events: queue.Queue = queue.Queue()
    running: dict[str, tuple[StepExecutionContext, list[DagsterEvent]]] = {}
    threads: list[threading.Thread] = []
    stopping = False
    with ExitStack() as stack:
        concurrency = stack.enter_context(
            InstanceConcurrencyContext(job_context.instance, job_context.dagster_run))
        active = stack.enter_context(execution_plan.start(
            retry_mode=job_context.retry_mode, max_concurrent=max_concurrent,
            instance_concurrency_context=concurrency,
            step_dependency_config=job_context.step_dependency_config))
        # The whole process's output in one capture, as the in-process executor does: a
        # capture per step would swap the process's stdout under the other threads.
        log_key = compute_logs.build_log_key_for_run(job_context.run_id,
                                                     create_compute_log_file_key())
        log_context = stack.enter_context(compute_logs.capture_logs(log_key))
        yield DagsterEvent.capture_logs(
            job_context, [s.key for s in execution_plan.get_steps_to_execute_in_topo_order()],
            log_key, log_context)
        runner.clear_stop()
        try:
            while running or not (stopping or active.is_complete):
                if not stopping and active.check_for_interrupts():
                    stopping = True
                    active.mark_interrupted()
                    runner.request_stop()  # the worker threads' queries stop and their steps end
                    yield DagsterEvent.engine_event(
                        job_context, "Run terminated: stopping the running steps' queries",
                        EngineEventData.interrupted(list(running)))
                if not stopping:
                    for step in active.get_steps_to_execute(limit=max_concurrent - len(running)):
                        step_context = job_context.for_step(step, active.get_known_state())
                        running[step.key] = (step_context, [])
                        thread = threading.Thread(target=_run_step, args=(step_context, events),
                                                  name=f"step-{step.key}", daemon=True)
                        thread.start()
                        threads.append(thread)
                yield from active.concurrency_event_iterator(job_context)
                if not running:
                    active.sleep_til_ready()
                    continue
                try:
                    key, item = events.get(timeout=max(active.sleep_interval(), 0.1))
                except queue.Empty:
                    continue
                step_context, step_events = running[key]
                if isinstance(item, BaseException):
                    raise item
                if item is not _DONE:
                    step_events.append(item)
                    yield item
                    active.handle_event(item)
                    continue
                del running[key]
                active.verify_complete(job_context, key)
                for event in active.plan_events_iterator(job_context):
                    step_events.append(event)
                    yield event
                yield from _trigger_hook(step_context, step_events)
        except BaseException:
            # Steps still running would outlive the run: stop their queries, and give them
            # the time to stop before the run's resources (the SparkSession) go.
            runner.request_stop()
            for thread in threads:
                thread.join(_STOP_WAIT_S)
            raise
        finally:
            # The request was for this run's steps: a later run in the same process (a test,
            # an in-process materialize) must not find it.
            runner.clear_stop()
    if stopping:
        raise DagsterExecutionInterruptedError("the run was terminated while its steps ran")


@executor(
    name="parallel_in_process",
    config_schema={
        "retries": get_retries_config(),
        "max_concurrent": Field(
            int, default_value=DEFAULT_MAX_CONCURRENT,
            description="How many ready steps run at once in the run's process; 1 runs them "
            "one after the other, as the in-process executor does.",
        ),
    },
)
def parallel_in_process_executor(init_context) -> ParallelInProcessExecutor:
    """Every step of a run in its one process (one SparkSession), independent steps at once.

    Select it per run with `execution: config: max_concurrent: N` in the run config.
    """
    config = init_context.executor_config
    return ParallelInProcessExecutor(
        retries=RetryMode.from_config(config["retries"]),
        max_concurrent=max(1, int(config["max_concurrent"])),
    )
