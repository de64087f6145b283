"""The checkpoint guard's clean-up of interrupted writes, on checkpoints laid out by hand.

The layouts are the ones Spark 4.2 leaves when killed (listed by test_crash_sweep.py's
runs): `.<name>.<uuid>.tmp` renamed into place, a `.<name>.crc` beside every file, state
files with a task id. No Spark here: the guard's decisions are checked file by file; the
crash sweep checks that Spark then restarts to exact tables.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_assets.errors import CheckpointMismatch, StreamFailed
from stream_assets.lake_files import LOCAL_FILES
from stream_assets.resources import DeltaLake
from stream_assets.tables import checkpoint_guard
from stream_assets.tables.catalog import raw_events, user_sessions
from stream_assets.tables.checkpoint_guard import Checkpoint, Cleanup, clean_interrupted_writes
from stream_assets.tables.query_errors import query_error
from stream_assets.tables.runner import StreamContext

UUID = "dcef6bbd-5659-4f18-aead-b762998995f1"
OTHER = "93e9a09f-5ebe-4751-88bd-2fd9d41d5922"


def layout(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


OFFSETS_0 = 'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{}}\n{"t":{"0":5}}'
BEFORE_FIRST_BATCH = {
    "stream_assets.json": '{"table": "raw_events"}',
    "metadata": '{"id":"2b1c"}\n',
    ".metadata.crc": "crc",
    "sources/0/0": 'v1\n{"t":{"0":0}}',
    "sources/0/.0.crc": "crc",
}


def test_the_issues_checkpoint_starts_as_new(tmp_path):
    # Killed while Spark wrote offsets/0: the zero-byte temporary file and its checksum.
    root = layout(tmp_path, {**BEFORE_FIRST_BATCH, f"offsets/.0.{UUID}.tmp": "",
                             f"offsets/..0.{UUID}.tmp.crc": ""})
    (root / "commits").mkdir()
    cleanup = Cleanup()
    clean_interrupted_writes(Checkpoint(str(root), LOCAL_FILES), cleanup)
    assert listing(root) == {"stream_assets.json"}
    assert not (root / "offsets").exists() and not (root / "commits").exists()
    assert cleanup.started_over and not cleanup.kept
    assert f"offsets/.0.{UUID}.tmp" in cleanup.removed and "metadata" in cleanup.removed
    text = cleanup.metadata()["checkpoint_cleaned"]
    assert "starts as new" in text and f"offsets/.0.{UUID}.tmp" in text


def test_a_planned_batch_is_resumed_only_temporary_files_go(tmp_path):
    # offsets/0 is complete, so the tables may hold part of batch 0: the query must replay
    # it, from the same query id and start offsets.
    temps = {f"commits/.0.{OTHER}.tmp": "", f"state/0/1/.1.zip.{UUID}.TID27.tmp": "",
             f"state/0/_stateSchema/default/.0_{UUID}.{OTHER}.tmp": ""}
    root = layout(tmp_path, {**BEFORE_FIRST_BATCH, "offsets/0": OFFSETS_0, "offsets/.0.crc": "",
                             "state/0/0/1.zip": "zip", **temps})
    cleanup = Cleanup()
    clean_interrupted_writes(Checkpoint(str(root), LOCAL_FILES), cleanup)
    assert sorted(cleanup.removed) == sorted(temps) and not cleanup.started_over
    assert listing(root) == set(BEFORE_FIRST_BATCH) | {"offsets/0", "offsets/.0.crc",
                                                       "state/0/0/1.zip"}


def test_a_committed_checkpoint_keeps_the_temporary_files_of_a_batch_not_committed_yet(tmp_path):
    files = {**BEFORE_FIRST_BATCH, "offsets/0": OFFSETS_0,
             "commits/0": 'v1\n{"nextBatchWatermarkMs":0}',
             f"offsets/.1.{UUID}.tmp": "", f"state/0/0/.2.zip.{OTHER}.TID3.tmp": "",
             f".{checkpoint_guard.MARKER}.abc123_x.tmp": "{"}
    root = layout(tmp_path, files)
    cleanup = Cleanup()
    checkpoint_guard._remove_marker_temps(Checkpoint(str(root), LOCAL_FILES), cleanup)
    clean_interrupted_writes(Checkpoint(str(root), LOCAL_FILES), cleanup)
    # Only the marker's temporary file goes: the marker was written whole since. Those of
    # batch 1 (planned after the last commit) stay until it commits.
    marker_temp = f".{checkpoint_guard.MARKER}.abc123_x.tmp"
    assert listing(root) == set(files) - {marker_temp} and not cleanup.removed
    assert cleanup.stale == [marker_temp]
    assert f"offsets/.1.{UUID}.tmp" in cleanup.kept
    assert "kept" in cleanup.metadata()["checkpoint_leftovers"]


def test_temporary_files_no_batch_can_use_are_removed_from_a_committed_checkpoint(tmp_path):
    # Batches 0 and 1 committed, 2 planned: temporary files of batches up to 1 (state version
    # 2 is batch 1's), of a file written whole since (metadata, the marker) go, with Hadoop's
    # checksum files; those of batch 2, which its replay rewrites, stay until it commits.
    committed = {**BEFORE_FIRST_BATCH, checkpoint_guard.MARKER: "{}",
                 "offsets/0": OFFSETS_0, "offsets/1": OFFSETS_0, "offsets/2": OFFSETS_0,
                 "commits/0": 'v1\n{"nextBatchWatermarkMs":0}',
                 "commits/1": 'v1\n{"nextBatchWatermarkMs":0}',
                 "state/0/0/1.delta": "", "state/0/0/2.delta": ""}
    stale = {f"offsets/.1.{UUID}.tmp": "", f"offsets/..1.{UUID}.tmp.crc": "",
             f"commits/.0.{OTHER}.tmp": "", f"state/0/0/.2.delta.{UUID}.TID7.tmp": "",
             f".metadata.{OTHER}.tmp": "", f".{checkpoint_guard.MARKER}.abc123_x.tmp": "{"}
    live = {f"commits/.2.{UUID}.tmp": "", f"state/0/0/.3.delta.{OTHER}.TID9.tmp": ""}
    root = layout(tmp_path, {**committed, **stale, **live})
    cleanup = Cleanup()
    checkpoint_guard._remove_marker_temps(Checkpoint(str(root), LOCAL_FILES), cleanup)
    clean_interrupted_writes(Checkpoint(str(root), LOCAL_FILES), cleanup)
    assert sorted(cleanup.stale) == sorted(stale) and not cleanup.removed
    assert sorted(cleanup.kept) == sorted(live)
    assert listing(root) == set(committed) | set(live)
    meta = cleanup.metadata()
    assert f"offsets/.1.{UUID}.tmp" in meta["checkpoint_temp_files_removed"]
    assert f"commits/.2.{UUID}.tmp" in meta["checkpoint_leftovers"]


def test_files_that_are_not_leftovers_are_kept(tmp_path):
    # A final state file, or a file of unknown name, where no batch was planned: not what a
    # crash leaves, so only the temporary files go and the query does not start as new.
    files = {**BEFORE_FIRST_BATCH, "state/0/0/1.zip": "zip", "commits/stray": "?",
             f"offsets/.0.{UUID}.tmp": ""}
    root = layout(tmp_path, files)
    cleanup = Cleanup()
    clean_interrupted_writes(Checkpoint(str(root), LOCAL_FILES), cleanup)
    assert cleanup.removed == [f"offsets/.0.{UUID}.tmp"] and not cleanup.started_over
    assert listing(root) == set(files) - {f"offsets/.0.{UUID}.tmp"}
    assert cleanup.unrecognized == ["commits/stray", "state/0/0/1.zip"]
    assert "commits/stray" in cleanup.metadata()["checkpoint_unrecognized"]


def test_a_kill_inside_the_marker_write_leaves_a_checkpoint_that_starts(tmp_path):
    # The first run was killed between the marker's temporary file and its rename.
    root = layout(tmp_path, {f".{checkpoint_guard.MARKER}.k2j4_9zq.tmp": '{"tab'})
    cleanup = Cleanup()
    checkpoint_guard._remove_marker_temps(Checkpoint(str(root), LOCAL_FILES), cleanup)
    assert listing(root) == set() and cleanup.removed


def test_a_clean_checkpoint_reports_nothing(tmp_path):
    root = layout(tmp_path, {**BEFORE_FIRST_BATCH, "offsets/0": OFFSETS_0,
                             "commits/0": 'v1\n{"nextBatchWatermarkMs":0}'})
    cleanup = Cleanup()
    clean_interrupted_writes(Checkpoint(str(root), LOCAL_FILES), cleanup)
    assert cleanup.metadata() == {} and listing(root) == set(BEFORE_FIRST_BATCH) | {
        "offsets/0", "commits/0"}


def _context(tmp_path: Path) -> StreamContext:
    lake = DeltaLake(tables_root=str(tmp_path / "tables"),
                     checkpoints_root=str(tmp_path / "checkpoints"))
    return StreamContext(spark=None, lake=lake, source=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("spark_error", [
    "[STATE_STORE_CHECKPOINT_LOCATION_NOT_EMPTY] The checkpoint location "
    "file:/x/checkpoints/raw_events/offsets should be empty on batch 0 Please either use a new "
    "checkpoint location, or delete the existing data in the checkpoint location.",
    "[STREAMING_CHECKPOINT_MISSING_METADATA_FILE] Checkpoint location /x is in an "
    "inconsistent state: the metadata file is missing but offset and/or commit logs contain data.",
    "[CANNOT_LOAD_STATE_STORE.CANNOT_READ_DELTA_FILE_NOT_EXISTS] An error occurred during "
    "loading state.",
    "[STATE_STORE_KEY_SCHEMA_NOT_COMPATIBLE] Provided key schema does not match existing state.",
    "[STREAMING_STATEFUL_OPERATOR_MISSING_STATE_DIRECTORY] Cannot restart streaming query with "
    "stateful operators because the state directory is empty or missing.",
])
@pytest.mark.parametrize("table", [raw_events, user_sessions])
def test_checkpoint_errors_of_spark_name_the_table_and_the_reset(tmp_path, spark_error, table):
    wrapped = RuntimeError(f"[STREAM_FAILED] Query [id = 1, runId = 2] terminated with "
                           f"exception: {spark_error}")
    error = query_error(table, _context(tmp_path), wrapped, "failed")
    assert isinstance(error, CheckpointMismatch), error
    message = str(error)
    assert message.startswith(f"{table.name} failed")
    assert f"stream-assets reset {table.name}" in message and "full_refresh: true" in message
    assert spark_error.split("]")[0].lstrip("[").split(".")[0] in message


@pytest.mark.parametrize("spark_error", [
    "[CANNOT_LOAD_STATE_STORE.ROCKSDB_STORE_PROVIDER_OUT_OF_MEMORY] out of memory",
    "[CANNOT_WRITE_STATE_STORE.CANNOT_COMMIT] Error writing state store files (disk full)",
    "[STATE_STORE_OPERATION_OUT_OF_ORDER] This is a bug, please retry.",
])
def test_errors_a_retry_can_fix_do_not_advise_a_reset(tmp_path, spark_error):
    error = query_error(raw_events, _context(tmp_path), RuntimeError(spark_error), "failed")
    assert type(error) is StreamFailed and "reset" not in str(error), error
