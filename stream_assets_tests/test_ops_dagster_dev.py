"""End to end through `dagster dev`: what a user does in the UI, driven by its GraphQL API.

The continuous job is launched the way the Launchpad launches it, reports its batches on the
assets, breaks (a file where a partition directory must go) and recovers while the daemon's
health sensor posts exactly one alert and one resolved notice to a local webhook, and is
terminated the way the UI's Terminate button does it. The tables then hold every record of
the topic exactly once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from stream_assets.dev.generator import GOOD, Record, generate_events
from stream_assets.dev.producer import produce
from stream_assets.resources import KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets_tests.dagster_dev import SENSOR_INTERVAL_S

pytest_plugins = ["stream_assets_tests.dagster_dev"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONTINUOUS_CONFIG = {"ops": {"run_streams": {"config": {
    "tables": ["raw_events"], "trigger_interval": "2 seconds", "event_interval_s": 2.0,
    "heartbeat_interval_s": 10.0, "restart_backoff_s": 2.0, "max_restart_backoff_s": 4.0,
}}}}


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str,
               diagnostics: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; {diagnostics()}")


def reports(dev, run_id: str) -> list[dict[str, Any]]:
    """The continuous run's stream reports on raw_events, newest first."""
    return [e for e in dev.asset_events("raw_events")
            if e["run_id"] == run_id and "stream_status" in e["metadata"]]


def rows_reported(dev, run_id: str) -> int:
    return sum(int(e["metadata"].get("input_rows") or 0) for e in reports(dev, run_id))


def boom(topic: str) -> Record:
    event = {"event_id": "e2e-boom", "event_type": "boom", "user_id": "u",
             "timestamp": "2026-01-01T00:00:00Z", "properties": {}}
    return Record(topic, b"u", json.dumps(event).encode(), GOOD, event)


def is_about(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: text in message.get("text", "")


def show_the_incident_in_the_ui(request, dev, artifacts) -> None:
    """raw_events' Checks tab while the incident is open: stream_health failed, with the alert
    the sensor posted. Only where Chromium is at hand (the browser fixture skips otherwise):
    the scene itself does not need it."""
    try:
        browser = request.getfixturevalue("browser")
    except pytest.skip.Exception:
        return
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{dev.url}/assets/raw_events?view=checks", wait_until="networkidle")
        page.get_by_text("stream_health", exact=True).first.click()
        page.get_by_text("raw_events: query failed (firing)").first.wait_for(state="visible")
        body = page.inner_text("body")
        assert re.search(r"stream_health\nFailed\n", body), body[:3000]
        assert re.search(r"^failed: ", body, re.MULTILINE), body[:3000]
        shot = artifacts / "query_failed_alert.png"
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
    finally:
        page.close()


def test_continuous_job_from_launch_to_terminate_with_one_alert_per_incident(
    dagster_dev, alert_receiver, spark, request, artifacts
):
    dev = dagster_dev
    connection = KafkaConnection(bootstrap_servers=dagster_dev.broker.bootstrap)
    sent = list(generate_events(1000, bad_ratio=0.02, seed=21, id_prefix="e2e-a"))
    produce(sent, connection)
    before = len(alert_receiver.received())

    run_id = dev.launch_run("continuous_streams", CONTINUOUS_CONFIG)
    dev.wait_for_status(run_id, ("STARTED",), timeout_s=180)
    wait_until(lambda: rows_reported(dev, run_id) >= len(sent), 240,
               "per-batch events covering the first 1000 records", dev.log_tail)
    latest = reports(dev, run_id)[0]["metadata"]
    for key in ("input_rows_per_second", "processed_rows_per_second", "batch_duration_ms",
                "kafka_lag", "rows_written"):
        assert key in latest, key

    # Break the table: the next batch cannot create its partition directory.
    blocker = dev.stream_home / "tables" / "raw_events" / "event_type=boom"
    blocker.write_text("not a directory")
    more = [boom("events"), *generate_events(200, seed=22, id_prefix="e2e-b")]
    produce(more, connection)
    sent += more
    alert_receiver.wait_for(is_about("raw_events: query failed"), 180, since=before)
    # Restarts keep failing while the sensor keeps ticking: still one alert.
    wait_until(lambda: any(int(e["metadata"].get("consecutive_failures") or 0) >= 2
                           for e in reports(dev, run_id)), 120, "a failed restart")
    looked = time.monotonic()
    show_the_incident_in_the_ui(request, dev, artifacts)  # what a user sees meanwhile
    time.sleep(max(0.0, 2 * SENSOR_INTERVAL_S - (time.monotonic() - looked)))  # two ticks
    blocker.unlink()
    alert_receiver.wait_for(is_about("query failed - resolved"), 180, since=before)
    wait_until(lambda: rows_reported(dev, run_id) >= len(sent), 120, "the records after the fix")

    dev.terminate(run_id)
    assert dev.wait_for_status(run_id, ("CANCELED", "FAILURE", "SUCCESS"), 180) == "CANCELED"
    messages = [m["text"] for m in alert_receiver.received()[before:]
                if "raw_events" in m["text"]]
    assert messages == [":red_circle: raw_events: query failed",
                        ":large_green_circle: raw_events: query failed - resolved"]
    logs = dev.run_logs(run_id)
    stopping = [e["message"] for e in logs if e.get("message")]
    assert any("stopping every query between batches" in m for m in stopping)
    # Terminate is the expected end of a continuous run: its step is not shown as errored.
    kinds = {e["__typename"] for e in logs}
    assert "ExecutionStepSuccessEvent" in kinds and "ExecutionStepFailureEvent" not in kinds

    # Exactly once: every record of the topic in one of the two tables, once.
    offsets = KafkaSource(bootstrap_servers=dagster_dev.broker.bootstrap).offsets("events")
    in_topic = sum(high - low for low, high in offsets.values())
    tables = dev.stream_home / "tables"
    events = spark.read.format("delta").load(str(tables / "raw_events"))
    dead = spark.read.format("delta").load(str(tables / "dead_letter_queue"))
    positions = events.select("partition", "offset").union(dead.select("partition", "offset"))
    assert positions.count() == positions.distinct().count() == in_topic
    ours = {r.event["event_id"] for r in sent if r.kind == GOOD}
    found = [r.event_id for r in events.where(events.event_id.startswith("e2e-"))
             .select("event_id").collect()]
    assert sorted(found) == sorted(ours)


def test_a_failed_streaming_run_alerts(dagster_dev, alert_receiver):
    before = len(alert_receiver.received())
    run_id = dagster_dev.launch_run(
        "continuous_streams", {"ops": {"run_streams": {"config": {"tables": ["no_such_table"]}}}})
    assert dagster_dev.wait_for_status(run_id, ("FAILURE", "SUCCESS", "CANCELED"), 180) == (
        "FAILURE")
    message = alert_receiver.wait_for(is_about("run of continuous_streams failed"), 120,
                                      since=before)
    assert "unknown table(s) no_such_table" in json.dumps(message)
