"""One writer per table across machines: Dagster concurrency pools, enforced by the instance.

A real instance (SQLite in a temporary DAGSTER_HOME) with the queued run coordinator and the
pool settings of deploy/local/dagster.yaml; runs launched through GraphQL (what the UI's
Launchpad and Terminate do) into a real gRPC code server (stream_assets_tests/pools_location.py),
dequeued by Dagster's own QueuedRunCoordinatorDaemon, run by DefaultRunLauncher in their own
processes with their own Spark, against the real broker and Delta. Nothing here holds a lock on
their behalf: what keeps them apart is only what the instance's storage says.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Failure,
    instance_for_test,
)
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import PythonFileTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster_graphql.client.client_queries import TERMINATE_RUN_JOB_MUTATION
from dagster_graphql.client.query import LAUNCH_PIPELINE_EXECUTION_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql, infer_job_selector
from deltalake import DeltaTable

from stream_assets.dev.generator import GOOD, Record, generate_events
from stream_assets.dev.producer import produce
from stream_assets.jobs import JOB_NAME, build_continuous_job
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.assets import build_asset
from stream_assets.tables.catalog import TABLES, raw_events
from stream_assets.tables.pools import check_pool_settings
from stream_assets_tests.test_ops_continuous import wait_until

ROOT = Path(__file__).resolve().parent.parent
LOCATION = Path(__file__).with_name("pools_location.py")
POOL = raw_events.pool
WAITING = {DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED}
# The step of each kind of run that holds the pool: the continuous op, the catch-up asset.
WRITING_STEPS = {"run_streams", "raw_events"}
TABLES_OF_QUERY = list(raw_events.tables)
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
CONTINUOUS_CONFIG = {"ops": {"run_streams": {"config": {
    "trigger_interval": "1 second", "event_interval_s": 1.0, "poll_interval_s": 0.5,
    "stop_timeout_s": 20.0,
}}}}
POOL_QUERY = """
query Pool($pool: String!) {
  instance {
    poolConfig { poolGranularity defaultPoolLimit }
    concurrencyLimit(concurrencyKey: $pool) {
      limit claimedSlots { runId stepKey } pendingSteps { runId stepKey assignedTimestamp }
    }
  }
}"""
QUEUE_QUERY = """
query Criteria($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run { status rootConcurrencyKeys allPools hasUnconstrainedRootNodes }
  }
}"""


def local_instance_settings() -> dict[str, Any]:
    """What deploy/local/dagster.yaml says about the queue, the pools and run monitoring."""
    local = yaml.safe_load((ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    return {key: local[key] for key in ("run_coordinator", "concurrency", "run_monitoring")}


# -- the declaration and the definitions (no Spark) -----------------------------------------

def test_every_query_has_its_own_pool_that_names_one_url_segment():
    pools = [t.pool for t in TABLES]
    assert len(set(pools)) == len(pools) == len(TABLES)
    assert raw_events.pool == "stream_assets.raw_events"
    for pool in pools:
        # The UI links Deployment -> Concurrency -> pool with encodeURIComponent(pool).
        assert urllib.parse.quote(pool, safe="") == pool


def test_the_catch_up_asset_declares_its_pool_and_the_continuous_op_none():
    asset = build_asset(raw_events)
    assert asset.op.pool == POOL
    # One op runs every query: it claims their slots itself (tables/pools.py), a single
    # `pool` could name only one of them.
    assert build_continuous_job(TABLES).nodes[0].definition.pool is None


def test_settings_that_let_two_writers_in_are_refused_and_no_limit_is_said(tmp_path):
    settings = local_instance_settings()
    with instance_for_test(overrides=settings) as instance:
        assert check_pool_settings(instance, raw_events) is None
        instance.event_log_storage.set_concurrency_slots(POOL, 2)
        with pytest.raises(Failure, match=r"lets 2 runs write .* limit 1: set `concurrency"):
            check_pool_settings(instance, raw_events)
    run_granularity = {**settings, "concurrency": {"pools": {"granularity": "run",
                                                             "default_limit": 1}}}
    with (instance_for_test(overrides=run_granularity) as instance,
          pytest.raises(Failure, match=r"granularity: op")):
        check_pool_settings(instance, raw_events)
    with instance_for_test() as instance:
        warning = check_pool_settings(instance, raw_events)
        assert warning and "has no limit, so only this machine's lock" in warning


# -- runs through the queue, in their own processes ------------------------------------------

class Deployment:
    """The instance, a workspace with the code server, the queue's daemon, GraphQL."""

    def __init__(self, instance: DagsterInstance, workspace, topic: str, bootstrap: str,
                 lake: Path) -> None:
        self.instance = instance
        self.workspace = workspace
        self.topic, self.bootstrap, self.lake = topic, bootstrap, lake
        self.stop = threading.Event()
        self.daemon_errors: list[Any] = []
        self.thread = threading.Thread(target=self._dequeue, name="run-queue", daemon=True)
        # Status of every run at every look, to check overlaps from what the storage said.
        self.seen: list[tuple[float, dict[str, DagsterRunStatus]]] = []

    def _dequeue(self) -> None:
        with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
            while not self.stop.is_set():
                self.daemon_errors += [e for e in daemon.run_iteration(self.workspace) if e]
                self.seen.append((time.time(), {
                    r.run_id: r.status for r in self.instance.get_runs()}))
                self.stop.wait(0.5)

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        result = execute_dagster_graphql(self.workspace.create_request_context(), query,
                                         variables)
        return result.data

    def launch(self, job: str, run_config: dict[str, Any] | None = None,
               assets: list[str] | None = None) -> str:
        context = self.workspace.create_request_context()
        # The asset's own step: the derived checks (other steps, no pool) would add minutes.
        own_checks = [{"assetKey": {"path": [raw_events.name]}, "name": e.name}
                      for e in raw_events.expectations]
        selector = infer_job_selector(
            context, job, asset_selection=[{"path": [a]} for a in assets] if assets else None,
            asset_check_selection=own_checks if assets else None)
        data = self.graphql(LAUNCH_PIPELINE_EXECUTION_MUTATION, {"executionParams": {
            "selector": selector, "runConfigData": run_config or {}}})
        launched = data["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def status(self, run_id: str) -> DagsterRunStatus:
        return self.instance.get_run_by_id(run_id).status

    def pool(self) -> dict[str, Any]:
        return self.graphql(POOL_QUERY, {"pool": POOL})["instance"]

    def statuses_over_time(self, *run_ids: str, between: tuple[float, float] = (0, 1e12)
                           ) -> list[tuple[DagsterRunStatus | None, ...]]:
        return [tuple(seen.get(r) for r in run_ids) for at, seen in self.seen
                if between[0] <= at <= between[1]]


@pytest.fixture
def deployment(kafka_broker, topic_factory, tmp_path, monkeypatch) -> Iterator[Deployment]:
    topic = topic_factory("pool_events")
    monkeypatch.setenv("POOLS_TEST_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("POOLS_TEST_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("POOLS_TEST_TOPIC", topic)
    monkeypatch.setenv("STREAM_ASSETS_HOME", str(tmp_path / "home"))
    target = PythonFileTarget(python_file=str(LOCATION), attribute="defs",
                              working_directory=str(ROOT), location_name="pools_test")
    with (
        instance_for_test(overrides=local_instance_settings()) as instance,
        create_test_daemon_workspace_context(target, instance) as workspace,
    ):
        entry = next(iter(workspace.create_request_context().get_code_location_entries()
                          .values()))
        assert entry.code_location, entry.load_error
        dep = Deployment(instance, workspace, topic, kafka_broker.bootstrap, tmp_path / "lake")
        dep.thread.start()
        try:
            yield dep
        finally:
            for run in instance.get_runs():
                if run.status not in FINISHED:
                    instance.run_launcher.terminate(run.run_id)
            dep.stop.set()
            dep.thread.join(timeout=60)


def step_window(instance: DagsterInstance, run_id: str) -> tuple[float, float, str]:
    """When the run's writing step (the one holding the pool) began and ended."""
    logs = [e for e in instance.all_logs(run_id, of_type={
        DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
        DagsterEventType.STEP_FAILURE}) if e.step_key in WRITING_STEPS]
    starts = [e.timestamp for e in logs if e.dagster_event_type == DagsterEventType.STEP_START]
    ends = [e.timestamp for e in logs if e.dagster_event_type != DagsterEventType.STEP_START]
    assert len(starts) == len(ends) == 1, logs
    return starts[0], ends[0], run_id


def queue_window(instance: DagsterInstance, run_id: str) -> tuple[float, float]:
    """When the run entered the queue and when the queue's daemon launched it."""
    events = {e.dagster_event_type: e.timestamp for e in instance.all_logs(run_id, of_type={
        DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING})}
    return events[DagsterEventType.RUN_ENQUEUED], events[DagsterEventType.RUN_STARTING]


def wrote(instance: DagsterInstance, run_id: str) -> bool:
    return any(r.run_id == run_id for r in instance.fetch_materializations(
        AssetKey("raw_events"), limit=100).records)


def send(dep: Deployment, count: int, seed: int) -> list[Record]:
    records = [Record(dep.topic, r.key, r.value, r.kind, r.event)
               for r in generate_events(count, bad_ratio=0.1, seed=seed, id_prefix=f"s{seed}")]
    produce(records, KafkaConnection(bootstrap_servers=dep.bootstrap))
    return records


@pytest.mark.integration
@pytest.mark.slow
def test_a_second_writer_waits_in_the_queue_until_the_pool_slot_is_free(deployment):
    dep = deployment
    sent = send(dep, 300, seed=1)

    # 1. The continuous run claims raw_events' slot and keeps it while it runs.
    continuous = dep.launch(JOB_NAME, CONTINUOUS_CONFIG)

    def holding() -> bool:
        assert dep.status(continuous) not in FINISHED, dep.status(continuous)
        return any(s["runId"] == continuous
                   for s in dep.pool()["concurrencyLimit"]["claimedSlots"])

    wait_until(holding, 120, "the continuous run to hold raw_events' pool slot")
    wait_until(lambda: wrote(dep.instance, continuous), 120, "the continuous run to write")
    pool = dep.pool()
    assert pool["poolConfig"] == {"poolGranularity": "op", "defaultPoolLimit": 1}
    assert pool["concurrencyLimit"]["limit"] == 1
    # The pool page lists who holds the slot: this run, for its raw_events query.
    assert pool["concurrencyLimit"]["claimedSlots"] == [
        {"runId": continuous, "stepKey": "run_streams[raw_events]"}]

    # 2. Two catch-up runs of the table, as the UI's Materialize or the catch-up sensor make.
    first = dep.launch("__ASSET_JOB", assets=TABLES_OF_QUERY)
    second = dep.launch("__ASSET_JOB", assets=TABLES_OF_QUERY)
    looks = len(dep.seen)
    wait_until(lambda: len(dep.seen) >= looks + 6, 60, "six turns of the run queue")
    assert dep.status(first) == dep.status(second) == DagsterRunStatus.QUEUED
    assert dep.status(continuous) == DagsterRunStatus.STARTED
    # Why they wait, as the run's "Queue criteria" dialog reads it.
    for run_id in (first, second):
        criteria = dep.graphql(QUEUE_QUERY, {"runId": run_id})["runOrError"]
        assert criteria == {"status": "QUEUED", "rootConcurrencyKeys": [POOL],
                            "allPools": [POOL], "hasUnconstrainedRootNodes": False}
    more = send(dep, 200, seed=2)

    # 3. Terminated (the UI's Terminate): it stops, frees the slot, and one catch-up starts.
    result = dep.graphql(TERMINATE_RUN_JOB_MUTATION, {"runId": continuous})
    assert result["terminateRun"]["__typename"] == "TerminateRunSuccess", result
    wait_until(lambda: dep.status(continuous) in FINISHED, 90, "the continuous run to stop")
    assert dep.status(continuous) == DagsterRunStatus.CANCELED
    wait_until(lambda: all(dep.status(r) == DagsterRunStatus.SUCCESS for r in (first, second)),
               240, "both catch-up runs to succeed")
    assert not dep.pool()["concurrencyLimit"]["claimedSlots"]
    assert not dep.daemon_errors

    # Never two writers: the steps that hold the slot (and run the queries) came one after
    # the other, from the event log ...
    windows = sorted(step_window(dep.instance, r) for r in (continuous, first, second))
    assert windows[0][2] == continuous
    assert all(a[1] <= b[0] for a, b in pairwise(windows)), windows
    ordered = [w[2] for w in windows[1:]]
    # ... and the queue let a catch-up run out only once no other run was writing: it stayed
    # QUEUED for as long as the continuous run, then the first catch-up run, held the slot.
    # From the run's own RUN_ENQUEUED / RUN_DEQUEUED events: a catch-up step can be shorter
    # than one turn of the queue, so sampled statuses may not fall inside its window.
    for writer, waiting in ((continuous, first), (continuous, second),
                            (ordered[0], ordered[1])):
        began, ended, _ = next(w for w in windows if w[2] == writer)
        enqueued, dequeued = queue_window(dep.instance, waiting)
        assert enqueued < ended <= dequeued, (writer, waiting, began, ended, enqueued, dequeued)
        looks = [s for (s,) in dep.statuses_over_time(waiting, between=(began, ended))
                 if s is not None]  # None: not launched yet
        assert all(s in WAITING for s in looks), (writer, waiting, looks)

    # What they wrote, against what was sent: every record once, in one of the two tables.
    everything = sent + more
    good = sum(1 for r in everything if r.kind == GOOD)
    assert len(DeltaTable(str(dep.lake / "tables" / "raw_events")).to_pyarrow_table()) == good
    assert len(DeltaTable(str(dep.lake / "tables" / "dead_letter_queue")).to_pyarrow_table()) \
        == len(everything) - good
    timings = {r: (round(w[0] - windows[0][0], 1), round(w[1] - windows[0][0], 1))
               for *w, r in windows}
    print("step windows (s after the continuous step began):", timings)
    last = dep.instance.get_latest_materialization_event(AssetKey("raw_events"))
    assert last.run_id == ordered[1]



def test_an_existing_demo_home_gets_the_pools_and_keeps_its_own_settings(tmp_path):
    from stream_assets.dev.instance_settings import update

    old = tmp_path / "dagster.yaml"  # deploy/local/dagster.yaml before the pools
    old.write_text("telemetry:\n  enabled: false\nrun_coordinator:\n"
                   "  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
                   "  config:\n    max_concurrent_runs: 7\nnux:\n  enabled: false\n")
    notes = update(old)
    assert any("added concurrency.pools" in n for n in notes)
    merged = yaml.safe_load(old.read_text())
    assert merged["concurrency"] == {"pools": {"granularity": "op", "default_limit": 1},
                                     "runs": {"max_concurrent_runs": 7}}
    assert merged["telemetry"] == {"enabled": False} and merged["nux"] == {"enabled": False}
    assert (tmp_path / "dagster.yaml.bak").read_text().count("max_concurrent_runs: 7") == 1
    with instance_for_test(overrides={k: merged[k] for k in (
            "run_coordinator", "concurrency", "run_monitoring")}) as instance:
        assert check_pool_settings(instance, raw_events) is None
    assert update(old) == []  # once is enough

    mine = tmp_path / "mine.yaml"  # a user's own pool choice is reported, not changed
    mine.write_text("concurrency:\n  pools:\n    default_limit: 3\nrun_monitoring:\n"
                    "  free_slots_after_run_end_seconds: 5\n")
    assert any("kept your concurrency.pools.default_limit" in n for n in update(mine))
    assert yaml.safe_load(mine.read_text())["concurrency"]["pools"] == {"default_limit": 3}
