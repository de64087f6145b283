"""Pytest fixtures: a real `dagster dev` (webserver + daemon + code server) and an alert receiver.

Register with `pytest_plugins = ["stream_assets_tests.dagster_dev"]`.

- `alert_receiver`: a local HTTP server that records every JSON body POSTed to its secret-looking
  path, like a Slack incoming webhook would.
- `browser`: headless Chromium (Debian's, scripts/ensure-chromium.sh) driven by the `playwright`
  Python package, one per test module; skips when either is missing. `artifacts`: the folder
  screenshots go to ($STREAM_ASSETS_ARTIFACTS, default the test's temporary folder).
- `dagster_dev`: `dagster dev` on a free port with a temporary DAGSTER_HOME, its own
  STREAM_ASSETS_HOME, STREAM_ASSETS_KAFKA_BOOTSTRAP at the session's test broker, the alert
  webhook pointed at `alert_receiver`, and sensors ticking every few seconds. It loads
  `stream_assets.definitions`, as a deployment does. One per test session; torn down (runs
  terminated, process group stopped) at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from stream_assets.dev.kafka_broker import LocalBroker
from stream_assets_tests.fixtures_kafka import broker_of_its_own, free_ports

PROJECT = Path(__file__).resolve().parent.parent
DAGSTER = Path(sys.executable).parent / "dagster"
SENSOR_INTERVAL_S = 5
WEBHOOK_PATH = "/services/T0TEST/B0TEST/not-a-real-secret-token"

IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


# -- the alert receiver ------------------------------------------------------------------------

@dataclass
class AlertReceiver:
    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    refuse: int = 0  # answer the next N posts with HTTP 503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, predicate: Callable[[dict[str, Any]], bool] = lambda m: True
                 ) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if predicate(m)]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 60,
                 since: int = 0) -> dict[str, Any]:
        """The first message from index `since` on that matches, waiting for it if need be."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [m for m in self.received()[since:] if predicate(m)]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(
            f"no matching alert within {timeout_s:g} s; received: "
            f"{[m.get('text') for m in self.received()]}"
        )


@pytest.fixture(scope="session")
def alert_receiver() -> Iterator[AlertReceiver]:
    (port,) = free_ports(1)
    receiver = AlertReceiver(url=f"http://127.0.0.1:{port}{WEBHOOK_PATH}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != WEBHOOK_PATH:
                self.send_response(404)
            elif receiver.refuse > 0:
                receiver.refuse -= 1
                self.send_response(503)
            else:
                with receiver.lock:
                    receiver.messages.append(json.loads(body))
                self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="alert-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# -- the browser -------------------------------------------------------------------------------

CHROMIUM = os.environ.get("STREAM_ASSETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser test needs `pip install playwright`")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}; run scripts/ensure-chromium.sh")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("STREAM_ASSETS_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- dagster dev -------------------------------------------------------------------------------

@dataclass
class DagsterDev:
    url: str
    dagster_home: Path
    stream_home: Path
    log_path: Path
    process: subprocess.Popen
    # The scene's own broker: a test may stop it (an outage the UI must show) without cutting
    # off the session broker's other tests on the same worker.
    broker: LocalBroker

    def graphql(self, query: str, variables: dict[str, Any] | None = None,
                timeout_s: float = 60) -> dict[str, Any]:
        response = requests.post(f"{self.url}/graphql",
                                 json={"query": query, "variables": variables or {}},
                                 timeout=timeout_s)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def launch_run(self, job: str, run_config: dict[str, Any] | None = None) -> str:
        """launchRun, as the Launchpad does."""
        data = self.graphql(
            """
            mutation Launch($params: ExecutionParams!) {
              launchRun(executionParams: $params) {
                __typename
                ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message stack }
                ... on RunConfigValidationInvalid { errors { message } }
                ... on InvalidSubsetError { message }
                ... on UnauthorizedError { message }
                ... on PipelineNotFoundError { message }
              }
            }
            """,
            {"params": {
                "selector": {"repositoryLocationName": "stream_assets",
                             "repositoryName": "__repository__", "jobName": job},
                "runConfigData": run_config or {},
                "mode": "default",
            }},
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise AssertionError(f"launchRun failed: {data}")
        return data["run"]["runId"]

    def terminate(self, run_id: str) -> None:
        """terminateRun with the UI's default policy (safe termination)."""
        data = self.graphql(
            """
            mutation Terminate($runId: String!) {
              terminateRun(runId: $runId, terminatePolicy: SAFE_TERMINATE) {
                __typename
                ... on TerminateRunFailure { message }
                ... on PythonError { message }
              }
            }
            """,
            {"runId": run_id},
        )["terminateRun"]
        if data["__typename"] != "TerminateRunSuccess":
            raise AssertionError(f"terminateRun failed: {data}")

    def run_status(self, run_id: str) -> str:
        data = self.graphql(
            """query Run($runId: ID!) { runOrError(runId: $runId) {
                 __typename ... on Run { status } } }""",
            {"runId": run_id},
        )["runOrError"]
        return data.get("status", data["__typename"])

    def wait_for_status(self, run_id: str, statuses: tuple[str, ...], timeout_s: float = 180
                        ) -> str:
        deadline = time.monotonic() + timeout_s
        status = ""
        while time.monotonic() < deadline:
            status = self.run_status(run_id)
            if status in statuses:
                return status
            time.sleep(1)
        raise AssertionError(
            f"run {run_id} is {status}, not {statuses}, after {timeout_s:g} s; "
            f"{self.log_tail()}"
        )

    def run_logs(self, run_id: str) -> list[dict[str, Any]]:
        data = self.graphql(
            """query Logs($runId: ID!) { logsForRun(runId: $runId, limit: 5000) {
                 __typename ... on EventConnection { events {
                   __typename ... on MessageEvent { message level stepKey } } } } }""",
            {"runId": run_id},
        )["logsForRun"]
        return data.get("events", [])

    def asset_events(self, asset: str, limit: int = 200) -> list[dict[str, Any]]:
        """Materializations and observations of an asset, newest first, with metadata."""
        data = self.graphql(
            """
            query Events($key: AssetKeyInput!, $limit: Int) {
              assetOrError(assetKey: $key) {
                __typename
                ... on Asset {
                  assetMaterializations(limit: $limit) { runId timestamp description
                    metadataEntries { label ... on IntMetadataEntry { intValue }
                      ... on FloatMetadataEntry { floatValue } ... on TextMetadataEntry { text } } }
                  assetObservations(limit: $limit) { runId timestamp description
                    metadataEntries { label ... on IntMetadataEntry { intValue }
                      ... on FloatMetadataEntry { floatValue } ... on TextMetadataEntry { text } } }
                }
              }
            }
            """,
            {"key": {"path": [asset]}, "limit": limit},
        )["assetOrError"]
        if data["__typename"] != "Asset":
            return []
        events = []
        for kind in ("assetMaterializations", "assetObservations"):
            for event in data[kind]:
                meta = {}
                for entry in event["metadataEntries"]:
                    value = next((entry[k] for k in ("intValue", "floatValue", "text")
                                  if k in entry), None)
                    meta[entry["label"]] = value
                events.append({"kind": kind, "run_id": event["runId"],
                               "timestamp": float(event["timestamp"]),
                               "description": event["description"], "metadata": meta})
        return sorted(events, key=lambda e: e["timestamp"], reverse=True)

    def run_ids(self) -> list[str]:
        data = self.graphql("""{ runsOrError { __typename ... on Runs { results { runId } } } }""")
        return [r["runId"] for r in data["runsOrError"].get("results", [])]

    def in_progress_runs(self) -> list[str]:
        data = self.graphql(
            """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) {
                 __typename ... on Runs { results { runId status } } } }""",
            {"filter": {"statuses": list(IN_PROGRESS)}},
        )["runsOrError"]
        return [r["runId"] for r in data.get("results", [])]

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no dagster dev log)"
        return "dagster dev log tail:\n" + "\n".join(text)


def _workspace(root: Path) -> Path:
    workspace = root / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: stream_assets.definitions\n"
        "      location_name: stream_assets\n      working_directory: " + str(PROJECT) + "\n"
    )
    return workspace


def _wait_until_ready(dev: DagsterDev, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "not started"
    while time.monotonic() < deadline:
        if dev.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {dev.process.returncode}; "
                               f"{dev.log_tail()}")
        try:
            data = dev.graphql(
                """{ workspaceOrError { __typename ... on Workspace { locationEntries {
                       name loadStatus locationOrLoadError { __typename
                         ... on PythonError { message } } } } }
                     instance { daemonHealth { allDaemonStatuses {
                       daemonType healthy required } } } }""",
                timeout_s=10,
            )
            entries = data["workspaceOrError"].get("locationEntries", [])
            errors = [e["locationOrLoadError"] for e in entries
                      if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
            if errors:
                raise RuntimeError(f"the code location failed to load: {errors[0]['message']}")
            loaded = entries and all(e["loadStatus"] == "LOADED" for e in entries)
            daemons = {d["daemonType"]: d["healthy"]
                       for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
                       if d["required"]}
            needed = ("SENSOR", "QUEUED_RUN_COORDINATOR")
            if loaded and all(daemons.get(d) for d in needed):
                return
            last = f"location loaded: {bool(loaded)}, daemons: {daemons}"
        except (requests.RequestException, KeyError, TypeError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(1)
    raise RuntimeError(f"dagster dev not ready after {timeout_s:g} s ({last}); {dev.log_tail()}")


@pytest.fixture(scope="session")
def scene_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The dagster dev scene's Kafka broker, apart from the session's (see DagsterDev.broker)."""
    with broker_of_its_own(tmp_path_factory.mktemp("kafka-scene")) as broker:
        yield broker


@pytest.fixture(scope="session")
def dagster_dev(scene_broker, alert_receiver) -> Iterator[DagsterDev]:
    root = Path(tempfile.mkdtemp(prefix="stream_assets_dagster_dev_"))
    dagster_home = root / "dagster_home"
    stream_home = root / "stream_assets_home"
    dagster_home.mkdir()
    stream_home.mkdir()
    shutil.copy(PROJECT / "deploy" / "local" / "dagster.yaml", dagster_home / "dagster.yaml")
    with open(dagster_home / "dagster.yaml", "a") as config:
        config.write("\nnux:\n  enabled: false\n")  # no newsletter dialog over the UI
    scene_broker.create_topics(["events", "impressions", "clicks"], partitions=3)
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "STREAM_ASSETS_HOME": str(stream_home),
        "STREAM_ASSETS_KAFKA_BOOTSTRAP": scene_broker.bootstrap,
        "STREAM_ASSETS_ALERT_WEBHOOK_URL": alert_receiver.url,
        "STREAM_ASSETS_SENSOR_INTERVAL_S": str(SENSOR_INTERVAL_S),
        # No maintenance run at the top of the hour in the middle of a test's run list.
        "STREAM_ASSETS_MAINTENANCE_CRON": "off",
        "STREAM_ASSETS_UI_URL": f"http://127.0.0.1:{port}",
        "PYTHONUNBUFFERED": "1",
        # Freshness policies evaluated every 5 s rather than 30 s, for the browser test.
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": "5",
    }
    log_path = root / "dagster_dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-w", str(_workspace(root)), "-h", "127.0.0.1",
             "-p", str(port)],
            cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev = DagsterDev(f"http://127.0.0.1:{port}", dagster_home, stream_home, log_path, process,
                     scene_broker)
    try:
        _wait_until_ready(dev, timeout_s=240)
        yield dev
    finally:
        _stop(dev)
        shutil.rmtree(root, ignore_errors=True)


def _stop(dev: DagsterDev) -> None:
    """Terminate runs still going, then stop dagster dev and everything it started."""
    if dev.process.poll() is None:
        with contextlib.suppress(Exception):
            for run_id in dev.in_progress_runs():
                with contextlib.suppress(Exception):
                    dev.terminate(run_id)
            deadline = time.monotonic() + 60
            while dev.in_progress_runs() and time.monotonic() < deadline:
                time.sleep(1)
    pgid = dev.process.pid  # its own session: the group id is its pid
    # A short grace only: nothing checks a graceful shutdown of dagster dev here, and its daemon
    # waited out the whole 30 s of a longer one at the end of every full run (a sensor tick in
    # flight), on the suite's critical path.
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            dev.process.wait(timeout=wait_s)
            if sig == signal.SIGTERM:
                # the group may outlive its leader (run workers, JVMs): stop the rest too
                time.sleep(1)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            break
