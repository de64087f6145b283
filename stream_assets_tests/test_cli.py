"""The `stream-assets` commands as a user types them, in their own processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from stream_assets_tests.fixtures_kafka import free_ports

CLI = [sys.executable, "-m", "stream_assets.cli"]


def run(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stdout}{result.stderr}")
    return result


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    (port,) = free_ports(1)
    return {
        **os.environ,
        "STREAM_ASSETS_HOME": str(tmp_path / "home"),
        "STREAM_ASSETS_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
    }


@pytest.mark.integration
def test_kafka_start_status_reuse_produce_stop(cli_env):
    assert run(["kafka", "status"], cli_env, check=False).returncode == 1
    first = run(["kafka", "start"], cli_env).stdout
    assert "kafka running at" in first and "events, impressions, clicks" in first
    status = run(["kafka", "status"], cli_env).stdout
    assert status.startswith("kafka running")
    second = run(["kafka", "start"], cli_env).stdout
    pid = first.split("(pid ")[1].split(")")[0]
    assert f"(pid {pid})" in second, "a second start must reuse the running broker"

    produced = run(["produce", "--events", "500", "--bad-ratio", "0.1", "--seed", "3"], cli_env)
    # 500 events, 50 impressions and their clicks, as the generator makes them.
    from stream_assets.dev.generator import generate_ad_traffic

    expected = 500 + sum(1 for _ in generate_ad_traffic(50, seed=3))
    assert f"produced {expected} records" in produced.stdout
    again = run(["produce", "--events", "500", "--if-empty"], cli_env).stdout
    assert "already holds 500 records" in again
    # With --rate, each event is stamped about when it is sent (within the generator's 30 s of
    # disorder); without, the 500 events are a history of one a second that ends now.
    before = time.time()
    run(["produce", "--events", "200", "--rate", "400", "--seed", "5", "--impressions", "0"],
        cli_env)
    after = time.time()
    times = _event_times_by_seed(cli_env)
    assert len(times["5"]) == 200
    assert all(before - 31 <= t <= after + 31 for t in times["5"]), (before, after)
    assert min(times["3"]) < before - 400

    # A project's own topics, for tables of its own.
    assert "topics ready: orders" in run(["kafka", "create-topics", "orders"], cli_env).stdout
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": cli_env["STREAM_ASSETS_KAFKA_BOOTSTRAP"]})
    assert len(admin.list_topics(timeout=10).topics["orders"].partitions) == 3

    assert "stopped" in run(["kafka", "stop"], cli_env).stdout
    assert run(["kafka", "status"], cli_env, check=False).returncode == 1
    run(["kafka", "stop"], cli_env)  # stopping a stopped broker is fine


def _event_times_by_seed(cli_env: dict[str, str]) -> dict[str, list[float]]:
    """The event times on the broker's events topic, by the seed in the ids (evt-<seed>-…);
    the deliberately bad records are left out."""
    from stream_assets_tests.fault_driver import broker_messages

    found: dict[str, list[float]] = {}
    for value in broker_messages(cli_env["STREAM_ASSETS_KAFKA_BOOTSTRAP"], "events").values():
        try:
            event = json.loads(value or b"")
            seed = event["event_id"].split("-")[1]
            found.setdefault(seed, []).append(datetime.fromisoformat(event["timestamp"])
                                              .timestamp())
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            continue
    return found


def test_produce_to_missing_broker_says_what_to_do(cli_env):
    result = run(["produce", "--events", "5"], cli_env, check=False)
    assert result.returncode == 1
    assert "stream-assets kafka" in result.stderr


def test_missing_jars_name_the_setup_command(tmp_path, cli_env):
    from stream_assets import jars
    from stream_assets.errors import MissingJars

    env = {**cli_env, "STREAM_ASSETS_JARS": str(tmp_path / "nowhere")}
    result = subprocess.run(
        [sys.executable, "-c", "from stream_assets.resources import SparkResource;"
         "SparkResource().spark_session"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "stream-assets setup" in result.stderr
    assert MissingJars.__name__ in result.stderr
    assert jars.GROUPS == ("spark", "udf", "kafka")


def test_setup_builds_the_parser_jar_from_its_sources_once(tmp_path, monkeypatch):
    import zipfile

    from stream_assets import jars

    monkeypatch.setenv("STREAM_ASSETS_JARS", str(tmp_path))
    assert not jars.is_resolved("udf")
    folder = jars.resolve("udf")
    built = jars.jars("udf")
    assert [j.name for j in built] == [jars.UDF_JAR] and folder == tmp_path / "udf"
    names = zipfile.ZipFile(built[0]).namelist()
    assert "io/github/streamassets/udf/ParseJsonRecord.class" in names
    stamp = built[0].stat().st_mtime_ns
    assert jars.is_resolved("udf") and jars.resolve("udf") == folder
    assert built[0].stat().st_mtime_ns == stamp  # unchanged sources: nothing rebuilt


def test_reset_finds_a_projects_tables_by_module_and_refuses_what_is_not_one(cli_env):
    missing = run(["reset", "orders", "--yes", "--tables", "no_such_module:TABLES"], cli_env,
                  check=False)
    assert missing.returncode != 0 and "cannot load tables from 'no_such_module:TABLES'" in (
        missing.stderr)
    wrong = run(["reset", "orders", "--yes", "--tables", "stream_assets.schemas:TOPICS"],
                cli_env, check=False)
    assert wrong.returncode != 0 and "is not a sequence of StreamingTable" in wrong.stderr
    unknown = run(["reset", "orders", "--yes"], cli_env, check=False)
    assert unknown.returncode != 0 and "unknown table" in unknown.stderr


@pytest.mark.integration
def test_seeded_users_are_a_materialization_the_ui_shows(cli_env, tmp_path):
    """`make demo` seeds user_dimension through Dagster (issue 13, item 6): the instance at
    DAGSTER_HOME records it with its metadata, and a second seed leaves it alone."""
    from dagster import AssetKey, DagsterInstance
    from deltalake import DeltaTable

    from stream_assets.dev.users import generate_users

    home = tmp_path / "dagster"
    home.mkdir()
    env = {**cli_env, "DAGSTER_HOME": str(home)}
    run(["seed-users", "--users", "7", "--if-missing"], env)
    again = run(["seed-users", "--users", "7", "--if-missing"], env)
    assert "leaving it" in again.stdout

    path = Path(env["STREAM_ASSETS_HOME"]) / "tables" / "user_dimension"
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    assert sorted(r["user_id"] for r in rows) == sorted(u["user_id"] for u in generate_users(7))
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(AssetKey("user_dimension"), limit=10).records
        assert len(records) == 1  # the second seed ran nothing
        meta = records[0].asset_event.metadata
        assert meta["dagster/row_count"].value == 7
        assert meta["delta_version"].value == DeltaTable(str(path)).version()
        assert [c.name for c in meta["dagster/column_schema"].value.columns] == list(rows[0])
        assert all(c.description for c in meta["dagster/column_schema"].value.columns)

        # Materialized again with the table as it was: the recorded figures, no Spark read.
        from dagster import materialize

        from stream_assets.demo_assets import user_dimension
        from stream_assets.resources import DeltaLake, SparkResource

        home_dir = Path(env["STREAM_ASSETS_HOME"])
        lake = DeltaLake(tables_root=str(home_dir / "tables"),
                         checkpoints_root=str(home_dir / "checkpoints"))
        again = materialize([user_dimension], instance=instance,
                            resources={"spark": SparkResource(), "lake": lake})
        [unchanged] = again.asset_materializations_for_node("user_dimension")
        assert unchanged.metadata["unchanged"].value is True
        assert unchanged.metadata["dagster/row_count"].value == 7
