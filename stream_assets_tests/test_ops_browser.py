"""The Dagster UI in headless Chromium: the lineage graph, a materialization, its success; a
continuous run's checks, late rows, a broker outage and Terminate; a full refresh from the
Launchpad.

Needs Debian's Chromium (scripts/ensure-chromium.sh) and the `playwright` Python package, which
drives that Chromium directly (no browser download): the `browser` fixture of dagster_dev.py.
Screenshots go to $STREAM_ASSETS_ARTIFACTS (default: this test's temporary folder), and their
paths are printed.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest

pytest_plugins = ["stream_assets_tests.dagster_dev"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

def test_ui_shows_the_lineage_and_a_materialization_launched_from_it_succeeds(
    dagster_dev, browser, artifacts
):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)

    page.goto(f"{dagster_dev.url}/locations/stream_assets/asset-groups/streaming",
              wait_until="networkidle")
    for asset in ("raw_events", "dead_letter_queue", "event_counts"):
        page.get_by_text(asset, exact=True).first.wait_for(state="visible")
    page.get_by_text("events", exact=True).first.wait_for(state="visible")  # the topic
    lineage = artifacts / "lineage.png"
    page.screenshot(path=str(lineage))

    # The batch table the streams join to: the cheapest asset to materialize for real.
    page.goto(f"{dagster_dev.url}/assets/user_dimension", wait_until="networkidle")
    page.locator("button", has_text="Materialize").first.click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).first
    toast.wait_for(state="visible")
    short = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
    run_id = next(r for r in dagster_dev.run_ids() if r.startswith(short))
    page.goto(f"{dagster_dev.url}/runs/{run_id}", wait_until="networkidle")

    status = dagster_dev.wait_for_status(run_id, ("SUCCESS", "FAILURE", "CANCELED"), 400)
    assert status == "SUCCESS", dagster_dev.log_tail()
    deadline = time.monotonic() + 60
    while "Success" not in page.inner_text("body") and time.monotonic() < deadline:
        page.reload(wait_until="networkidle")
        page.wait_for_timeout(1000)
    assert "Success" in page.inner_text("body")
    run_page = artifacts / "run_success.png"
    page.screenshot(path=str(run_page))
    print(f"screenshots: {lineage} {run_page}")
    assert lineage.stat().st_size > 10_000 and run_page.stat().st_size > 10_000


# A check's row in an asset's Checks tab: its name, then its status in the UI's words.
CHECK_ROW = re.compile(r"^(\w+)\n(Succeeded|Failed|Warning|Not evaluated|Evaluating|Skipped|"
                       r"Execution failed|In progress)$", re.MULTILINE | re.IGNORECASE)
NOT_EVALUATED = re.compile(r"not evaluated", re.IGNORECASE)
# The tables the continuous run below writes: raw_events' query writes the dead letters too.
WRITTEN = ("raw_events", "dead_letter_queue", "event_counts")
LATE_ROWS = 1100  # above the demo's late_rows_alert (1,000 in 10 minutes)


def check_statuses(page, dev, asset: str) -> dict[str, str]:
    """The asset's Checks tab: each check's status as the list shows it."""
    page.goto(f"{dev.url}/assets/{asset}?view=checks", wait_until="networkidle")
    page.get_by_text(re.compile(r"^Checks \(\d+\)$")).first.wait_for(state="visible")
    deadline = time.monotonic() + 20
    while True:  # the list's rows render after its header
        body = page.inner_text("body")
        listed = int(re.search(r"Checks \((\d+)\)", body).group(1))
        statuses = {name: status for name, status in CHECK_ROW.findall(body)}
        if len(statuses) == listed or time.monotonic() > deadline:
            break
        page.wait_for_timeout(250)
    assert len(statuses) == listed, f"{asset}: {listed} checks, read {statuses}; {body[:2000]}"
    return statuses


def wait_for_checks(page, dev, asset: str, ready, timeout_s: float, what: str
                    ) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = check_statuses(page, dev, asset)
        if ready(statuses):
            return statuses
        page.wait_for_timeout(2000)
    raise AssertionError(f"{asset}: {what} not seen within {timeout_s:g} s: {statuses}")


def none_grey(statuses: dict[str, str]) -> bool:
    return bool(statuses) and not any(NOT_EVALUATED.fullmatch(s) for s in statuses.values())


def test_ui_shows_a_continuous_run_live_its_late_rows_an_outage_and_a_clean_terminate(
    dagster_dev, alert_receiver, browser, artifacts
):
    """Issue 27, item 11. While a continuous run of raw_events and event_counts goes on, every
    check of the tables it writes shows a result (the demo's numeric_duration expectation among
    them), rows sent behind event_counts' watermark show on its stream_health check, a broker
    outage shows on raw_events' within a minute and resolves when the broker returns, the UI's
    Terminate ends the run Canceled with no errored step, and no check is grey after it."""
    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.jobs.run import CANCELED_MESSAGE
    from stream_assets.resources.kafka import KafkaConnection

    dev = dagster_dev
    connection = KafkaConnection(bootstrap_servers=dagster_dev.broker.bootstrap)
    produce(list(generate_events(300, bad_ratio=0.02, seed=31, id_prefix="ui-check")),
            connection)
    alerts_before = len(alert_receiver.received())
    run_id = dev.launch_run("continuous_streams", {"ops": {"run_streams": {"config": {
        "tables": ["raw_events", "event_counts"], "trigger_interval": "2 seconds",
        "event_interval_s": 2.0}}}})
    shots = []
    try:
        dev.wait_for_status(run_id, ("STARTED",), timeout_s=180)
        # Late rows: once event_counts has a watermark (a batch written), events stamped
        # years earlier, each in its own 5-minute window, are dropped behind it; more of them
        # than the table's late_rows_alert opens an incident its stream_health shows.
        wait_until_written(dev, run_id, "event_counts")
        produce(list(generate_events(LATE_ROWS, seed=32, id_prefix="ui-late",
                                     start=datetime(2000, 1, 1, 0, 2, tzinfo=UTC),
                                     spacing=timedelta(minutes=5), jitter=timedelta(0))),
                connection)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)

        # Live (while the late rows go through): every check of the tables the run writes
        # shows a result, the running stream's expectation and stream_health among them.
        live = wait_for_checks(page, dev, "raw_events", none_grey, 120,
                               "every check evaluated")
        assert {"numeric_duration", "stream_health"} <= live.keys(), live
        assert dev.run_status(run_id) == "STARTED"
        shots.append(artifacts / "checks_live_raw_events.png")
        page.screenshot(path=str(shots[-1]))
        assert none_grey(check_statuses(page, dev, "dead_letter_queue"))

        late = wait_for_checks(page, dev, "event_counts",
                               lambda s: s.get("stream_health") == "Failed", 180,
                               "stream_health failing on late rows")
        assert none_grey(late), late
        page.get_by_text("stream_health", exact=True).first.click()
        detail = page.get_by_text(re.compile(r"late_rows: the watermark dropped [\d,]+ late "
                                             r"rows in the last 10\.0 min")).first
        detail.wait_for(state="visible")
        assert int(re.search(r"dropped ([\d,]+)", detail.inner_text()).group(1)
                   .replace(",", "")) >= LATE_ROWS
        shots.append(artifacts / "late_rows_event_counts.png")
        page.screenshot(path=str(shots[-1]))
        assert dev.run_status(run_id) == "STARTED"

        # An outage (item 6): the scene's broker stops. The alert comes within a minute, long
        # before Spark would give up, and raw_events' stream_health says so in the UI; the
        # broker's return resolves it and the run goes on.
        outage_alerts = len(alert_receiver.received())
        dev.broker.stop()
        try:
            stopped = time.monotonic()
            alert_receiver.wait_for(lambda m: m.get("text", "").endswith(
                "raw_events: source unreachable"), 60, since=outage_alerts)
            assert time.monotonic() - stopped <= 60
            wait_for_checks(page, dev, "raw_events",
                            lambda s: s.get("stream_health") == "Failed", 60,
                            "stream_health failing on the outage")
            page.get_by_text("stream_health", exact=True).first.click()
            page.get_by_text(re.compile(
                rf"source_unreachable: no Kafka broker answered at "
                rf"{re.escape(dev.broker.bootstrap)}")).first.wait_for(state="visible")
            shots.append(artifacts / "source_unreachable_raw_events.png")
            page.screenshot(path=str(shots[-1]))
        finally:
            dev.broker.start()
        alert_receiver.wait_for(lambda m: m.get("text", "").endswith(
            "raw_events: source unreachable - resolved"), 90, since=outage_alerts)
        assert dev.run_status(run_id) == "STARTED"

        # Terminate from the run's page, as a user stops a continuous run.
        page.goto(f"{dev.url}/runs/{run_id}", wait_until="networkidle")
        page.locator("button", has_text="Terminate").first.click()
        page.locator('[role="dialog"] button', has_text="Terminate").last.click()
        status = dev.wait_for_status(run_id, ("CANCELED", "FAILURE", "SUCCESS"), 180)
        assert status == "CANCELED", dev.log_tail()
        # The step list is filled from the run's logs: wait for them before reading it.
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            page.reload(wait_until="networkidle")
            page.wait_for_timeout(1000)
            body = page.inner_text("body")
            if "Canceled" in body and "Loading run logs" not in body:
                break
        shots.append(artifacts / "terminated_run.png")
        page.screenshot(path=str(shots[-1]))
        assert "Canceled" in body, body[:3000]
        # The one step ended as a success: a green bar, "Errored (0)"; the run's end is a plain
        # RUN_CANCELED line, no interrupt's stack trace (the list ends in view: its last rows).
        assert "Errored (0)" in body and "Succeeded (1)" in body, body[:3000]
        assert CANCELED_MESSAGE in body, body[-3000:]
        assert "STEP_FAILURE" not in body and "InterruptedError" not in body, body[-3000:]

        # After the stop: still no grey check on any table the run wrote.
        for asset in WRITTEN:
            statuses = check_statuses(page, dev, asset)
            assert none_grey(statuses), (asset, statuses)
        shots.append(artifacts / "checks_after_stop_event_counts.png")
        page.screenshot(path=str(shots[-1]))
        print(f"screenshots: {' '.join(map(str, shots))}")

        # The late-rows incident, alerted once, ends with the run (nothing left open for
        # the session's next tests).
        alert_receiver.wait_for(lambda m: m.get("text", "").endswith(
            "event_counts: late rows dropped - resolved"), 60, since=alerts_before)
        texts = [m["text"] for m in alert_receiver.received()[alerts_before:]]
        assert sum("event_counts: late rows dropped" in t for t in texts) == 2, texts
    finally:
        if dev.run_status(run_id) not in ("CANCELED", "FAILURE", "SUCCESS"):
            dev.terminate(run_id)
            dev.wait_for_status(run_id, ("CANCELED", "FAILURE", "SUCCESS"), 180)


def wait_until_written(dev, run_id: str, asset: str, timeout_s: float = 180) -> None:
    """Until the run has materialized `asset` with rows written."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(e["run_id"] == run_id and e["kind"] == "assetMaterializations"
               and int(e["metadata"].get("rows_written") or 0) > 0
               for e in dev.asset_events(asset, limit=20)):
            return
        time.sleep(1)
    raise AssertionError(f"{asset} not written by run {run_id} within {timeout_s:g} s; "
                         f"{dev.log_tail()}")


# The Overview's status row: "Freshness policy" over its state (Not evaluated, Passing, ...).
FRESHNESS = re.compile(r"Freshness policy\s*\n\s*(Not evaluated|Passing|Warning|Failing|\w+)")


def test_ui_full_refresh_from_the_launchpad_rebuilds_the_table_and_shows_it_fresh(
    dagster_dev, browser, artifacts
):
    """Issue 13, items 3 and 5: a user refreshes raw_events from the asset's Launchpad (the
    run config `full_refresh: true`), the run rebuilds it from what the topic holds, and the
    UI then shows the table's freshness policy passing."""
    from deltalake import DeltaTable

    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection, KafkaSource

    produce(list(generate_events(200, bad_ratio=0.1, seed=41, id_prefix="ui-refresh")),
            KafkaConnection(bootstrap_servers=dagster_dev.broker.bootstrap))
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{dagster_dev.url}/assets/raw_events", wait_until="networkidle")
    before = set(dagster_dev.run_ids())
    # Shift+click opens the Launchpad, as the button's tooltip says.
    page.locator("button", has_text="Materialize").first.click(modifiers=["Shift"])
    # The dead letters come with raw_events (one query writes both): the UI asks first.
    page.get_by_role("button", name="Confirm").click()
    editor = page.locator(".CodeMirror").first
    editor.wait_for(state="visible")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text("ops: {raw_events: {config: {full_refresh: true}}}")
    page.wait_for_timeout(1500)  # the Launchpad validates the config before launching
    launchpad = artifacts / "full_refresh_launchpad.png"
    page.screenshot(path=str(launchpad))
    page.locator('[role="dialog"] button', has_text="Materialize").last.click()

    deadline = time.monotonic() + 60
    new: list[str] = []
    while not new and time.monotonic() < deadline:
        new = [r for r in dagster_dev.run_ids() if r not in before]
        time.sleep(1)
    assert len(new) == 1, f"expected one run launched from the Launchpad, got {new}"
    status = dagster_dev.wait_for_status(new[0], ("SUCCESS", "FAILURE", "CANCELED"), 600)
    assert status == "SUCCESS", dagster_dev.log_tail()

    [refreshed] = [e for e in dagster_dev.asset_events("raw_events")
                   if e["run_id"] == new[0] and e["kind"] == "assetMaterializations"]
    assert "full_refresh_deleted" in refreshed["metadata"]
    assert "event_counts" in refreshed["metadata"]["full_refresh_cascade"]
    # Rebuilt from everything the topic holds, each record once (read with delta-rs).
    broker = KafkaSource(bootstrap_servers=dagster_dev.broker.bootstrap).offsets("events")
    held = sum(latest - earliest for earliest, latest in broker.values())
    tables = dagster_dev.stream_home / "tables"
    rows = [row for name in ("raw_events", "dead_letter_queue")
            for row in DeltaTable(str(tables / name)).to_pyarrow_table(
                columns=["partition", "offset"]).to_pylist()]
    assert len(rows) == held == len({(r["partition"], r["offset"]) for r in rows})
    assert refreshed["metadata"]["dagster/row_count"] == len(DeltaTable(
        str(tables / "raw_events")).to_pyarrow_table(columns=["offset"]))

    # Dagster's daemon evaluates the declared freshness policy; the asset page shows it.
    deadline = time.monotonic() + 120
    status = ""
    while time.monotonic() < deadline:
        page.goto(f"{dagster_dev.url}/assets/raw_events", wait_until="networkidle")
        page.wait_for_timeout(2000)
        found = FRESHNESS.search(page.inner_text("body"))
        status = found.group(1) if found else ""
        if status == "Passing":
            break
    fresh = artifacts / "freshness_passing.png"
    page.screenshot(path=str(fresh))
    print(f"screenshots: {launchpad} {fresh}")
    assert status == "Passing", page.inner_text("body")[:3000]
