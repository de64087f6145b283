"""The Dagster UI in headless Chromium: the lineage graph, a materialization, its success.

Needs Debian's Chromium (scripts/ensure-chromium.sh) and the `playwright` Python package, which
drives that Chromium directly (no browser download). Screenshots go to $STREAM_ASSETS_ARTIFACTS
(default: this test's temporary folder), and their paths are printed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

pytest_plugins = ["stream_assets_tests.dagster_dev"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

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


EVALUATED = re.compile(r"numeric_duration\s+(?:numeric_duration\s+)?(Succeeded|Failed|Warning)")


def test_ui_shows_an_expectation_check_while_a_continuous_run_is_in_progress(
    dagster_dev, kafka_broker, browser, artifacts
):
    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    produce(list(generate_events(300, seed=31, id_prefix="ui-check")),
            KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))
    run_id = dagster_dev.launch_run("continuous_streams", {"ops": {"run_streams": {"config": {
        "tables": ["raw_events"], "trigger_interval": "2 seconds", "event_interval_s": 2.0}}}})
    try:
        dagster_dev.wait_for_status(run_id, ("STARTED",), timeout_s=180)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        deadline = time.monotonic() + 240
        body = ""
        while time.monotonic() < deadline:
            page.goto(f"{dagster_dev.url}/assets/raw_events?view=checks",
                      wait_until="networkidle")
            page.wait_for_timeout(2000)
            body = page.inner_text("body")
            # The demo's numeric_duration expectation, evaluated by the running stream: its
            # row in the checks list shows a result instead of "Not Evaluated".
            if EVALUATED.search(body):
                break
        assert EVALUATED.search(body), body
        assert dagster_dev.run_status(run_id) == "STARTED"  # seen while the run goes on
        shot = artifacts / "expectation_check_live.png"
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
    finally:
        dagster_dev.terminate(run_id)
        dagster_dev.wait_for_status(run_id, ("CANCELED", "FAILURE", "SUCCESS"), 180)


# The Overview's status row: "Freshness policy" over its state (Not evaluated, Passing, ...).
FRESHNESS = re.compile(r"Freshness policy\s*\n\s*(Not evaluated|Passing|Warning|Failing|\w+)")


def test_ui_full_refresh_from_the_launchpad_rebuilds_the_table_and_shows_it_fresh(
    dagster_dev, kafka_broker, browser, artifacts
):
    """Issue 13, items 3 and 5: a user refreshes raw_events from the asset's Launchpad (the
    run config `full_refresh: true`), the run rebuilds it from what the topic holds, and the
    UI then shows the table's freshness policy passing."""
    from deltalake import DeltaTable

    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection, KafkaSource

    produce(list(generate_events(200, bad_ratio=0.1, seed=41, id_prefix="ui-refresh")),
            KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))
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
    broker = KafkaSource(bootstrap_servers=kafka_broker.bootstrap).offsets("events")
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
