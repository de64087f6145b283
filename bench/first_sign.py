"""How soon a continuous run of the demo shows life on its assets (issue 27, item 3).

The demo as a user starts it (scripts/demo.sh): a broker of its own holding the demo's data
(`stream-assets produce --events N --bad-ratio 0.02`, ad traffic included), user_dimension
seeded, `dg dev` (webserver, daemon, code server) over the demo's definitions in a temporary
DAGSTER_HOME and STREAM_ASSETS_HOME. Then `continuous_streams` is launched through the
webserver's GraphQL API, as the Launchpad does, and the instance is polled (read-only, SQLite)
for each table's first stream report (an observation or materialization carrying its query's
status) and its first materialization. Seconds are counted from the launch; the run's own start
(the daemon dequeues it, a run worker imports the code and starts Spark) is printed apart, so
what the product pays after the run started can be told from what Dagster pays before.

    .venv/bin/python bench/first_sign.py [--events 20000] [--timeout 600]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import broker
from stream_assets.dev.ports import free_ports

PROJECT = Path(__file__).resolve().parent.parent
BIN = PROJECT / ".venv" / "bin"


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}},
                             timeout=30)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Until the code location is loaded and the daemon's run coordinator is healthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dg dev exited with {process.returncode}")
        try:
            data = graphql(url, """{ workspaceOrError { ... on Workspace { locationEntries {
                loadStatus } } } instance { daemonHealth { allDaemonStatuses {
                daemonType healthy required } } } }""")
            entries = data["workspaceOrError"].get("locationEntries") or []
            daemons = {d["daemonType"]: d["healthy"]
                       for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]}
            if entries and all(e["loadStatus"] == "LOADED" for e in entries) \
                    and daemons.get("QUEUED_RUN_COORDINATOR"):
                return
        except (requests.RequestException, KeyError, TypeError):
            pass
        time.sleep(1)
    raise RuntimeError(f"dg dev not ready after {timeout_s:g} s")


def launch(url: str, job: str) -> str:
    data = graphql(url, """mutation Launch($params: ExecutionParams!) {
        launchRun(executionParams: $params) { __typename
          ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                   {"params": {"selector": {"repositoryLocationName": "stream_assets",
                                            "repositoryName": "__repository__",
                                            "jobName": job},
                               "runConfigData": {}, "mode": "default"}})["launchRun"]
    if data["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launchRun failed: {data}")
    return data["run"]["runId"]


def terminate(url: str, run_id: str) -> None:
    graphql(url, """mutation Stop($runId: String!) { terminateRun(runId: $runId) {
        __typename } }""", {"runId": run_id})


def first_events(instance, tables, launched: float, timeout_s: float, run_id: str
                 ) -> tuple[dict[str, dict[str, float | str]], float | None]:
    """Per table: seconds from the launch to its first report and first materialization."""
    from stream_assets.monitoring.stream_report import StreamReport

    seen: dict[str, dict[str, float | str]] = {t.name: {} for t in tables}
    started = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if started is None:
            record = instance.get_run_record_by_id(run_id)
            if record is not None and record.start_time:
                started = record.start_time - launched
        for table in tables:
            found = seen[table.name]
            if "materialized_s" in found:
                continue
            for kind, fetch in (("report", instance.fetch_observations),
                                ("materialized", instance.fetch_materializations)):
                records = fetch(table.asset_key, limit=1, ascending=True).records
                if not records or records[0].timestamp < launched:
                    continue
                record = records[0]
                if kind == "materialized":
                    found["materialized_s"] = record.timestamp - launched
                report = StreamReport.from_metadata(record.asset_event.metadata,
                                                    record.timestamp)
                if report is not None and ("report_s" not in found
                                           or record.timestamp - launched < found["report_s"]):
                    found["report_s"] = record.timestamp - launched
                    found["status"] = str(report.status)
                    if report.started_at:
                        found["query_started_s"] = report.started_at - launched
        if all("materialized_s" in f for f in seen.values()):
            break
        time.sleep(0.5)
    return seen, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    from stream_assets import schemas
    from stream_assets.tables.catalog import TABLES

    root = Path(tempfile.mkdtemp(prefix="stream_assets_bench_first_sign_"))
    print(f"first_sign: the demo's continuous run, {args.events} events; load "
          f"{os.getloadavg()}; work {root}")
    try:
        with broker() as kafka:
            kafka.create_topics(schemas.TOPICS, partitions=3)  # as `stream-assets kafka start`
            dagster_home, stream_home = root / "dagster", root / "home"
            dagster_home.mkdir()
            shutil.copy(PROJECT / "deploy" / "local" / "dagster.yaml", dagster_home)
            env = {**os.environ, "DAGSTER_HOME": str(dagster_home),
                   "STREAM_ASSETS_HOME": str(stream_home),
                   "STREAM_ASSETS_KAFKA_BOOTSTRAP": kafka.bootstrap,
                   "STREAM_ASSETS_MAINTENANCE_CRON": "off", "VIRTUAL_ENV": str(PROJECT / ".venv"),
                   # The jars `make setup` resolved, not a fresh home's empty folder.
                   "STREAM_ASSETS_JARS": os.environ.get(
                       "STREAM_ASSETS_JARS", str(PROJECT / ".stream_assets" / "jars"))}
            for command in (["produce", "--events", str(args.events), "--bad-ratio", "0.02",
                             "--seed", "42"], ["seed-users"]):
                subprocess.run([str(BIN / "stream-assets"), *command], env=env, check=True,
                               cwd=PROJECT, stdout=subprocess.DEVNULL)
            (port,) = free_ports(1)
            url = f"http://127.0.0.1:{port}"
            with open(root / "dg_dev.log", "wb") as log:
                process = subprocess.Popen(
                    [str(BIN / "dg"), "dev", "-h", "127.0.0.1", "-p", str(port)], cwd=PROJECT,
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                began = time.monotonic()
                wait_ready(url, process, 300)
                print(f"dg dev ready in {time.monotonic() - began:.1f} s")
                instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home)))
                launched = time.time()
                run_id = launch(url, "continuous_streams")
                seen, started = first_events(instance, TABLES, launched, args.timeout, run_id)
                terminate(url, run_id)
            finally:
                os.killpg(process.pid, 15)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"run started (dequeued by the daemon, worker launched): "
          f"{'-' if started is None else f'{started:.1f} s'} after the launch")
    print(f"{'table':<24} {'query started s':>15} {'first report s':>15} {'its status':>11} "
          f"{'first materialization s':>24}")

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.1f}"

    for name, found in seen.items():
        print(f"{name:<24} {fmt(found.get('query_started_s')):>15} "
              f"{fmt(found.get('report_s')):>15} {found.get('status', '-'):>11} "
              f"{fmt(found.get('materialized_s')):>24}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
