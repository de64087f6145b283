"""Checkpoints that do not belong to their tables: refused with the table's name and the reset.

A checkpoint is the query's memory of what it already wrote. One from another query, one cut
short by a crash on a non-atomic store, or one whose tables were deleted under it would make a
restart skip records or write them twice, so the run must stop and say how to rebuild:
`stream-assets reset TABLE --yes` or Dagster config `full_refresh: true` (both delete the
checkpoint and the tables together).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import materialize

from stream_assets.dev.generator import generate_events
from stream_assets.dev.producer import produce
from stream_assets.errors import CheckpointMismatch
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables import checkpoint_guard, runner
from stream_assets.tables.assets import build_asset
from stream_assets.tables.catalog import raw_events
from stream_assets.tables.sources import kafka_topic
from stream_assets_tests.fault_driver import (
    actual_tables,
    broker_messages,
    expected_tables,
    session_conf_kept,
)

pytestmark = pytest.mark.integration

RESET_WAYS = ("stream-assets reset", "full_refresh: true")


@dataclasses.dataclass
class Lake:
    """One table root and checkpoint root, and how to materialize a declaration against them."""

    root: Path
    bootstrap: str
    topic: str
    spark_resource: object

    @property
    def lake(self) -> DeltaLake:
        return DeltaLake(tables_root=str(self.root / "tables"),
                         checkpoints_root=str(self.root / "checkpoints"))

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoints" / "raw_events"

    def materialize(self, table=raw_events, topic=None, **config):
        topic = topic or self.topic
        source = KafkaSource(bootstrap_servers=self.bootstrap,
                             topic_names={"events": topic, "clicks": topic})
        run_config = {"ops": {table.name: {"config": config}}} if config else None
        return materialize(
            [build_asset(table)],
            resources={"spark": self.spark_resource, "lake": self.lake, "stream_source": source},
            run_config=run_config,
        )

    def copy(self, root: Path) -> Lake:
        shutil.copytree(self.root, root)
        return dataclasses.replace(self, root=root)


@pytest.fixture(scope="module")
def written(kafka_broker, spark_resource, tmp_path_factory):
    """A topic, and a lake where raw_events has read all of it once: the healthy reference."""
    topic = f"ckpt-{uuid.uuid4().hex[:10]}"
    kafka_broker.create_topics([topic], partitions=3)
    records = [r.__class__(topic, r.key, r.value, r.kind, r.event)
               for r in generate_events(120, bad_ratio=0.2, seed=31, id_prefix="ckpt")]
    produce(records, KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))
    lake = Lake(tmp_path_factory.mktemp("healthy"), kafka_broker.bootstrap, topic,
                spark_resource)
    assert lake.materialize().success
    expected = expected_tables(records, broker_messages(kafka_broker.bootstrap, topic))
    yield lake, expected
    kafka_broker.delete_topics([topic])


def assert_refused_with_reset_hint(error: BaseException, table: str = "raw_events") -> None:
    message = str(error)
    assert table in message, message
    assert f"stream-assets reset {table}" in message and "full_refresh: true" in message, message


def test_checkpoint_of_another_query_is_refused_naming_both(written, tmp_path, spark):
    lake, expected = written
    copy = lake.copy(tmp_path / "foreign")
    # The same checkpoint now claimed by a query of another name, and by raw_events reading
    # another topic: both are other queries.
    other_name = dataclasses.replace(raw_events, name="events_copy",
                                     dead_letters="events_copy_dlq")
    shutil.copytree(copy.checkpoint, copy.root / "checkpoints" / "events_copy")
    with pytest.raises(CheckpointMismatch, match="belongs to 'raw_events'") as raised:
        copy.materialize(other_name)
    assert_refused_with_reset_hint(raised.value, "events_copy")

    parser = raw_events.sources["events"].parser
    other_source = dataclasses.replace(
        raw_events, sources={"events": kafka_topic("clicks", parser=parser)})
    with pytest.raises(CheckpointMismatch) as raised:
        copy.materialize(other_source)
    assert_refused_with_reset_hint(raised.value)

    # The documented way out rebuilds the table from its sources, exactly once.
    assert copy.materialize(other_name, full_refresh=True).success
    rebuilt = actual_tables(copy.root / "tables", "events_copy", "events_copy_dlq")
    assert rebuilt.events == expected.events and rebuilt.dead == expected.dead


def test_checkpoint_of_the_same_table_reading_another_topic_is_refused(written, tmp_path,
                                                                        kafka_broker):
    lake, _ = written
    copy = lake.copy(tmp_path / "other-topic")
    other = f"ckpt-other-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topics([other], partitions=1)
    try:
        with pytest.raises(CheckpointMismatch) as raised:
            copy.materialize(topic=other)
        assert_refused_with_reset_hint(raised.value)
        assert lake.topic in str(raised.value)
    finally:
        kafka_broker.delete_topics([other])


def test_checkpoint_written_by_something_else_is_refused(written, tmp_path):
    lake, _ = written
    copy = lake.copy(tmp_path / "unmarked")
    (copy.checkpoint / "stream_assets.json").unlink()
    with pytest.raises(CheckpointMismatch, match="not written by stream_assets") as raised:
        copy.materialize()
    assert_refused_with_reset_hint(raised.value)


def test_damaged_checkpoint_marker_is_refused(written, tmp_path):
    lake, _ = written
    copy = lake.copy(tmp_path / "marker")
    marker = copy.checkpoint / "stream_assets.json"
    marker.write_bytes(marker.read_bytes()[:7])
    with pytest.raises(CheckpointMismatch, match="damaged") as raised:
        copy.materialize()
    assert_refused_with_reset_hint(raised.value)


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


TRUNCATIONS = {
    "last offsets file cut in half": lambda c: _truncate(_latest(c / "offsets")),
    "last offsets file empty": lambda c: _truncate(_latest(c / "offsets"), 0),
    "last commit file cut in half": lambda c: _truncate(_latest(c / "commits")),
    "query metadata cut in half": lambda c: _truncate(c / "metadata"),
}


def _latest(folder: Path) -> Path:
    return max((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.mark.parametrize("damage", list(TRUNCATIONS))
def test_truncated_checkpoint_is_refused_naming_the_table_and_the_reset(written, tmp_path,
                                                                        damage):
    lake, _ = written
    copy = lake.copy(tmp_path / "truncated")
    TRUNCATIONS[damage](copy.checkpoint)
    with pytest.raises(CheckpointMismatch) as raised:
        copy.materialize()
    assert_refused_with_reset_hint(raised.value)


@pytest.mark.parametrize("damage", ["last offsets file cut in half",
                                    "query metadata cut in half"])
def test_damage_the_guard_cannot_see_is_still_refused_naming_the_reset(written, tmp_path,
                                                                       monkeypatch, damage):
    # As on a remote store, whose files the guard does not read: Spark's own failure to parse
    # them (at start for metadata, in the query for offsets) must get the same answer.
    monkeypatch.setattr(checkpoint_guard, "_damaged_checkpoint_file", lambda checkpoint: None)
    lake, _ = written
    copy = lake.copy(tmp_path / "unseen")
    TRUNCATIONS[damage](copy.checkpoint)
    with pytest.raises(CheckpointMismatch, match="damaged: Spark cannot read it") as raised:
        copy.materialize()
    assert_refused_with_reset_hint(raised.value)


def _replace_with_plain_folder(table: Path) -> None:
    shutil.rmtree(table)
    table.mkdir()
    (table / "part-00000.parquet").write_bytes(b"PAR1")


@pytest.mark.parametrize("loss", ["deleted", "replaced by a folder that is not Delta"])
def test_tables_deleted_under_their_checkpoint_are_refused(written, tmp_path, loss):
    lake, _ = written
    copy = lake.copy(tmp_path / "no-table")
    table = copy.root / "tables" / "raw_events"
    if loss == "deleted":
        shutil.rmtree(table)
    else:
        _replace_with_plain_folder(table)
    with pytest.raises(CheckpointMismatch, match="no Delta table raw_events") as raised:
        copy.materialize()
    assert_refused_with_reset_hint(raised.value)


def test_checkpoint_marker_is_written_only_when_it_changes_and_atomically(written, tmp_path,
                                                                           spark):
    lake, _ = written
    copy = lake.copy(tmp_path / "marker-writes")
    source = KafkaSource(bootstrap_servers=lake.bootstrap, topic_names={"events": lake.topic})
    ctx = runner.StreamContext(spark=spark, lake=copy.lake, source=source)
    marker = copy.checkpoint / "stream_assets.json"
    assert json.loads(marker.read_text())["topics"] == [lake.topic]

    # A restart leaves a healthy marker alone: no write that a crash could tear.
    before = marker.stat()
    checkpoint_guard.guard_checkpoint(raw_events, ctx)
    after = marker.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # A marker from before topics were recorded is accepted, then completed by a rename.
    legacy = {k: v for k, v in json.loads(marker.read_text()).items() if k != "topics"}
    marker.write_text(json.dumps(legacy))
    checkpoint_guard.guard_checkpoint(raw_events, ctx)
    assert json.loads(marker.read_text()) == {**legacy, "topics": [lake.topic]}
    assert marker.stat().st_ino != before.st_ino
    assert not [p for p in copy.checkpoint.iterdir() if p.name.endswith(".tmp")]


def test_cli_reset_deletes_checkpoint_and_tables_together_then_rebuild_is_exact(
    written, tmp_path, spark, monkeypatch
):
    from stream_assets.cli import main

    lake, expected = written
    # The CLI works on STREAM_ASSETS_HOME's lake: point it at a damaged copy.
    home = tmp_path / "home"
    copy = lake.copy(home)
    _truncate(_latest(copy.checkpoint / "offsets"))
    monkeypatch.setenv("STREAM_ASSETS_HOME", str(home))
    with session_conf_kept(spark):
        result = CliRunner().invoke(main, ["reset", "raw_events", "--yes"])
    assert result.exit_code == 0, result.output
    assert not copy.checkpoint.exists()
    assert not (home / "tables" / "raw_events").exists()
    assert not (home / "tables" / "dead_letter_queue").exists()

    assert copy.materialize().success
    rebuilt = actual_tables(home / "tables")
    assert rebuilt.events == expected.events and rebuilt.dead == expected.dead


def _killed_while_writing_offsets_0(lake: Lake, root: Path) -> Lake:
    """The issue's checkpoint: a first run killed while Spark wrote offsets/0, no table yet.

    The marker, query id and Kafka start offsets are copied from a real run; offsets/ holds
    only the zero-byte temporary file (and its checksum), commits/ is empty.
    """
    copy = dataclasses.replace(lake, root=root)
    checkpoint = copy.checkpoint
    (checkpoint / "sources" / "0").mkdir(parents=True)
    for name in ("stream_assets.json", "metadata", ".metadata.crc", "sources/0/0",
                 "sources/0/.0.crc"):
        shutil.copy(lake.checkpoint / name, checkpoint / name)
    (checkpoint / "offsets").mkdir()
    (checkpoint / "commits").mkdir()
    temp = f".0.{uuid.uuid4()}.tmp"
    (checkpoint / "offsets" / temp).write_bytes(b"")
    (checkpoint / "offsets" / f".{temp}.crc").write_bytes(b"")
    return copy


def test_a_kill_while_the_first_offsets_were_written_starts_again_exactly(written, tmp_path,
                                                                           spark):
    lake, expected = written
    copy = _killed_while_writing_offsets_0(lake, tmp_path / "killed")
    result = copy.materialize()
    assert result.success
    rebuilt = actual_tables(copy.root / "tables")
    assert rebuilt.events == expected.events and rebuilt.dead == expected.dead
    cleaned = result.asset_materializations_for_node("raw_events")[0].metadata
    text = cleaned["checkpoint_cleaned"].value
    assert "offsets/.0." in text and "starts as new" in text, text


def test_a_checkpoint_spark_refuses_at_start_gets_the_reset_hint(written, tmp_path):
    # Not a leftover the guard recognizes (a file of unknown name in commits/), so it is kept;
    # Spark then refuses to start batch 0 in a non-empty folder (SPARK-53103), and the user
    # gets the table and both ways to reset instead of Spark's bare error.
    lake, _ = written
    copy = _killed_while_writing_offsets_0(lake, tmp_path / "stray")
    (copy.checkpoint / "commits" / "stray").write_text("?")
    with pytest.raises(CheckpointMismatch,
                       match="STATE_STORE_CHECKPOINT_LOCATION_NOT_EMPTY") as raised:
        copy.materialize()
    assert_refused_with_reset_hint(raised.value)
    assert (copy.checkpoint / "commits" / "stray").exists()
