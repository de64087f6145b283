"""The run's executor runs independent steps at the same time in one process (issue 15, item 3).

Real Dagster runs (execute_job on a reconstructable job, an instance with SQLite storage on
disk, so events are written from the worker threads as in a UI run): the times each step saw
are compared with the plan's dependencies, not with what the executor logged. With Spark:
test_streaming_tables.py runs the demo's tables through it, two steps at once, against the
plain-Python reference; test_raw_events.py stops a running catch-up as a terminated run does;
runs launched in their own processes (test_ops_pools.py, the UI tests) use it as a user's do.
"""

import os
import signal
import threading
import time

import pytest
from dagster import (
    AssetExecutionContext,
    AssetKey,
    DagsterEventType,
    Definitions,
    Failure,
    asset,
    define_asset_job,
    execute_job,
    instance_for_test,
    reconstructable,
)
from dagster._utils.interrupts import capture_interrupts

from stream_assets.parallel_executor import parallel_in_process_executor
from stream_assets.tables import runner

WINDOWS: dict[str, tuple[float, float, str]] = {}
SLEEP_S = 1.0


def _work(name: str) -> None:
    began = time.monotonic()
    time.sleep(SLEEP_S)
    WINDOWS[name] = (began, time.monotonic(), threading.current_thread().name)


@asset
def left() -> None:
    _work("left")


@asset
def right() -> None:
    _work("right")


@asset(deps=[left, right])
def joined() -> None:
    _work("joined")


@asset
def broken() -> None:
    raise Failure("broken on purpose")


@asset(deps=[broken])
def after_broken() -> None:
    _work("after_broken")


@asset
def waits_for_stop() -> None:
    """Stands for a catch-up query: it ends only when the run asks its queries to stop."""
    WINDOWS["waits_for_stop"] = (time.monotonic(), 0.0, threading.current_thread().name)
    if not runner._stop_requested.wait(30):
        raise Failure("never asked to stop")
    raise Failure("stopped: the run was terminated")


@asset
def terminates_the_run(context: AssetExecutionContext) -> None:
    time.sleep(SLEEP_S)  # the other step is running by now
    # What the UI's Terminate does to a run in its own process: the run is marked CANCELING
    # and its process gets an interrupt.
    context.instance.report_run_canceling(context.run)
    os.kill(os.getpid(), signal.SIGINT)


def demo_job():
    return Definitions(
        assets=[left, right, joined, broken, after_broken, waits_for_stop,
                terminates_the_run],
        jobs=[define_asset_job("everything")],
        executor=parallel_in_process_executor,
    ).resolve_job_def("everything")


def run(instance, selection: list[str], max_concurrent: int | None = None):
    WINDOWS.clear()
    config = {} if max_concurrent is None else {"execution": {"config": {
        "max_concurrent": max_concurrent}}}
    return execute_job(reconstructable(demo_job), instance=instance, run_config=config,
                       asset_selection=[AssetKey(s) for s in selection], raise_on_error=False)


def overlap(a: str, b: str) -> bool:
    return WINDOWS[a][0] < WINDOWS[b][1] and WINDOWS[b][0] < WINDOWS[a][1]


def test_independent_steps_run_at_once_and_a_dependent_step_after_both(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = run(instance, ["left", "right", "joined"])
        assert result.success
        assert overlap("left", "right"), WINDOWS
        assert WINDOWS["joined"][0] >= max(WINDOWS["left"][1], WINDOWS["right"][1])
        # Each asset's own events, from the instance's storage.
        records = instance.get_records_for_run(
            result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
        assert sorted(r.event_log_entry.dagster_event.asset_key.path[0] for r in records) == [
            "joined", "left", "right"]

        result = run(instance, ["left", "right", "joined"], max_concurrent=1)
        assert result.success
        assert not overlap("left", "right"), WINDOWS  # one at a time, as in-process


def test_a_failed_step_skips_what_depends_on_it_and_the_others_finish(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = run(instance, ["left", "right", "broken", "after_broken"])
        assert not result.success
        assert {"left", "right"} <= WINDOWS.keys() and "after_broken" not in WINDOWS
        failures = instance.get_records_for_run(
            result.run_id, of_type=DagsterEventType.STEP_FAILURE).records
        assert [r.event_log_entry.step_key for r in failures] == ["broken"]
        assert "broken on purpose" in str(
            failures[0].event_log_entry.dagster_event.step_failure_data.error.message)
        # As with the in-process executor: a step whose upstream failed never starts.
        started = instance.get_records_for_run(
            result.run_id, of_type=DagsterEventType.STEP_START).records
        assert sorted(r.event_log_entry.step_key for r in started) == ["broken", "left", "right"]


@pytest.mark.parametrize("limit", [0, -3])
def test_a_limit_below_one_runs_steps_one_at_a_time(tmp_path, limit):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = run(instance, ["left", "right"], max_concurrent=limit)
        assert result.success
        assert not overlap("left", "right")


def test_a_terminated_run_asks_the_running_steps_to_stop_and_is_canceled(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance, capture_interrupts():
        began = time.monotonic()
        result = run(instance, ["waits_for_stop", "terminates_the_run"])
        assert time.monotonic() - began < 20  # not the step's 30 s: it was told to stop
    assert not result.success
    assert instance.get_run_by_id(result.run_id).status.value == "CANCELED"
    # The request was for that run: later catch-ups in this process must not see it.
    assert not runner._stop_requested.is_set()
    failures = instance.get_records_for_run(
        result.run_id, of_type=DagsterEventType.STEP_FAILURE).records
    assert "waits_for_stop" in {r.event_log_entry.step_key for r in failures}
