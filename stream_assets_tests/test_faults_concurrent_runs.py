"""Two writers of one table at once: the second is refused, never interleaved.

A second *materialization* while a first one (another process) is inside a batch is checked in
test_faults_driver_killed.py (assert_second_run_refused), where a run is held in flight anyway.
Here: the full refresh from the CLI must respect the same lock.
"""

from __future__ import annotations

from click.testing import CliRunner

from stream_assets.cli import main
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.tables import runner
from stream_assets.tables.catalog import raw_events
from stream_assets_tests.fault_driver import session_conf_kept


def test_reset_is_refused_while_a_run_writes_the_table(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_ASSETS_HOME", str(tmp_path))
    lake = DeltaLake()  # the CLI's own lake: below STREAM_ASSETS_HOME
    checkpoint = tmp_path / "checkpoints" / "raw_events"
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "offsets" / "0").write_text("v1\n{}\n{}\n")
    # Spying on the deletion keeps this test harmless whatever reset does.
    deleted = []
    monkeypatch.setattr(runner, "full_refresh", lambda table, ctx: deleted.append(table.name))
    ctx = runner.StreamContext(spark=spark, lake=lake, source=KafkaSource())
    with session_conf_kept(spark), runner.exclusive(raw_events, ctx):
        # The lock is what a running materialization holds.
        result = CliRunner().invoke(main, ["reset", "raw_events", "--yes"])
    assert not deleted, "reset deleted the table while a run was writing it"
    assert result.exit_code != 0 and "being written by another run" in result.output
