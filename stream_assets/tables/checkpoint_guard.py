"""Refuse to resume a streaming query from a checkpoint that does not belong to its tables.

A query's offsets mean something only together with the tables they were written to and the
topics they were read from. Before a query starts, the checkpoint's marker file (written by
stream_assets beside Spark's own files) and Spark's last log files are checked, so a foreign,
damaged or orphaned checkpoint fails with the way out instead of silently losing or
duplicating records. The checkpoint is read through the lake's files (lake_files.py), on a
local disk or object storage alike.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from stream_assets.checkpoint_log import batch_ids
from stream_assets.delta_log import delta_log_version
from stream_assets.errors import CheckpointMismatch
from stream_assets.lake_files import LakeFiles
from stream_assets.sinks import is_delta_table
from stream_assets.tables.cleanup import Cleanup
from stream_assets.tables.declaration import StreamingTable

if TYPE_CHECKING:
    from stream_assets.tables.context import StreamContext

MARKER = "stream_assets.json"

# Spark writes every checkpoint file (offsets, commits, sources, metadata, state) as
# `.<name>.<uuid>[.TID<task>].tmp` and renames it into place; Hadoop's local file system puts
# a `.<file>.crc` beside each file, temporary ones included. A kill between the two leaves
# the temporary file behind, which Spark never reads again.
_SPARK_TEMP = re.compile(
    r"\..+\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\.TID\d+)?\.tmp(\.crc)?"
)
# The final name of a state store file: its version (batch id + 1) and kind.
_STATE_FILE = re.compile(r"(\d+)\.(delta|snapshot|zip|changelog)")
# The marker's temporary file (lake_files.LakeFiles.write_text: tempfile.mkstemp's random part).
_MARKER_TEMP = re.compile(re.escape(f".{MARKER}.") + r"[a-z0-9_]+\.tmp")
# What Spark writes before it plans the first batch: the query id and the Kafka source's
# start offsets (`sources/<source>/0`), each with its checksum file.
_BEFORE_FIRST_BATCH = re.compile(r"(\.?metadata(\.crc)?|sources/\d+/\.?\d+(\.crc)?)")


def reset_hint(table: str) -> str:
    return (
        f"to rebuild {table} from its sources, run a full refresh: "
        f"'stream-assets reset {table}' or materialize it with config full_refresh: true"
    )


def _fingerprint(table: StreamingTable, ctx: StreamContext) -> dict:
    """What the checkpoint's offsets mean: the query, its tables and the broker-side topics.

    Logical sources alone are not enough: `topic_names` (or another Event Hub) can point the
    same declaration at another topic, whose offsets the old checkpoint's do not describe.
    """
    return {
        "table": table.name,
        "tables": list(table.tables),
        "sources": [
            mark for s in table.sources.values()
            if (mark := s.fingerprint(ctx.read_context(table))) is not None
        ],
        "topics": [kafka.topic_name(t) for kafka, topics in ctx.kafka_topics(table)
                   for t in topics],
    }


class Checkpoint:
    """A query's checkpoint folder, read and cleaned through the lake's files (a local disk
    or object storage: lake_files.py)."""

    def __init__(self, root: str, files: LakeFiles) -> None:
        self.root = root.rstrip("/")
        self.files = files

    def __str__(self) -> str:
        return self.root

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def all_files(self) -> list[str]:
        """Every file below the checkpoint, relative to it, sorted."""
        return self.files.files_below(self.root)

    def names(self) -> list[str]:
        return self.files.names(self.root) or []

    def batches(self, folder: str) -> list[int]:
        """The batch ids in offsets/ or commits/, oldest first."""
        return batch_ids(self.files, self.path(folder))

    def is_committed(self) -> bool:
        return bool(self.batches("commits"))

    def has_offsets(self) -> bool:
        return bool(self.batches("offsets"))

    def remove(self, relative: list[str]) -> None:
        for name in relative:
            self.files.delete_file(self.path(name))
        # Spark refuses to start batch 0 in a non-empty offsets/, commits/ or state/ folder
        # (MicroBatchExecution.verifyNewCheckpointDirectory); an empty folder is fine, but a
        # folder emptied here is removed so the checkpoint looks like Spark's own new one.
        self.files.remove_empty_folders(self.root)

    def read(self, relative: str) -> str:
        return self.files.read_text(self.path(relative))


def _remove_marker_temps(checkpoint: Checkpoint, cleanup: Cleanup) -> None:
    """Our marker's temporary file, left by a kill inside _write_marker.

    Removed before the marker is checked: on a first run it is the checkpoint's only file,
    and would make the checkpoint look like one not written by stream_assets.
    """
    names = checkpoint.names()
    temps = [n for n in names if _MARKER_TEMP.fullmatch(n)]
    if not temps:
        return
    if checkpoint.is_committed():
        if MARKER not in names:
            cleanup.kept.extend(temps)
            return
        # The marker was written whole since: its temporary file is no one's.
        checkpoint.remove(temps)
        cleanup.stale.extend(temps)
        return
    checkpoint.remove(temps)
    cleanup.removed.extend(temps)


def clean_interrupted_writes(checkpoint: Checkpoint, cleanup: Cleanup) -> None:
    """Remove what a killed run left in a checkpoint of ours that never committed a batch.

    Called under the writer lock (runner.exclusive), so no query of ours is writing it.

    * A committed batch: only temporary files go that no batch can use any more
      (`stale_temps`): those of a batch at or before the last committed one, or whose final
      file exists beside them. Spark never reads a temporary file (it writes one, then renames
      it into place), and the writer lock keeps every writer of ours out meanwhile; those of a
      batch planned after the last commit are kept and reported, as the batch's replay
      rewrites them. The final files, the only record of what the tables hold, stay: Spark
      purges them itself beyond `minBatchesToRetain`.
    * Planned (a complete offsets/N) but never committed: Spark wrote offsets/N before any
      write of batch N, so the tables may hold part of it. The query must resume and replay
      it (the sinks' transaction ids make the replay exact): only temporary files go.
    * Nothing planned: nothing was written anywhere, and the query starts as new. Temporary
      files, the query id (`metadata`) and the Kafka start offsets (`sources/`) go; Spark's
      check that a new query's offsets/ is empty (SPARK-53103) counts temporary files too.

    Anything else (a final file where none can be yet, a file of unknown name) is kept and
    reported; Spark's own checks then decide, and query_errors.query_error says how to reset.
    """
    files = [f for f in checkpoint.all_files()
             if f != MARKER and not _MARKER_TEMP.fullmatch(f)]
    if not files:
        return
    temps = [f for f in files if _SPARK_TEMP.fullmatch(f.rsplit("/", 1)[-1])]
    if checkpoint.is_committed():
        stale = stale_temps(temps, set(files), checkpoint.batches("commits")[-1])
        if stale:
            checkpoint.remove(stale)
            cleanup.stale.extend(stale)
        cleanup.kept.extend(t for t in temps if t not in stale)
        return
    removable = list(temps)
    if not checkpoint.has_offsets():
        early = [f for f in files if f not in temps and _BEFORE_FIRST_BATCH.fullmatch(f)]
        others = [f for f in files if f not in temps and f not in early]
        cleanup.unrecognized.extend(others)
        if early and not others:
            removable += early
            cleanup.started_over = True
    if removable:
        checkpoint.remove(removable)
        cleanup.removed.extend(sorted(removable))


def _final_name(temp: str) -> str:
    """The file a Spark temporary file (or its checksum file) was to become, by path."""
    folder, _, name = temp.rpartition("/")
    if name.startswith("..") and name.endswith(".crc"):
        name = name[1:-len(".crc")]  # Hadoop's checksum of the temporary file
    final = re.sub(r"\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                   r"(\.TID\d+)?\.tmp$", "", name[1:])
    return f"{folder}/{final}" if folder else final


def stale_temps(temps: list[str], files: set[str], last_committed: int) -> list[str]:
    """The temporary files (relative paths) of a checkpoint whose batches up to
    `last_committed` are committed that no batch can use any more.

    A temporary file of offsets/N or commits/N with N at or before the last commit, of a
    state file of version V (written by batch V - 1) at or before it, or of any file whose
    final version exists (the query id, a source's start offsets, a state schema): its write
    was finished by another attempt, or its batch needs it no more. Anything else (a batch
    planned after the commit, a name not known here) is not claimed.
    """
    stale = []
    for temp in temps:
        final = _final_name(temp)
        folder, _, name = final.rpartition("/")
        batch = None
        if folder in ("offsets", "commits") and name.isdigit():
            batch = int(name)
        elif final.startswith("state/") and (match := _STATE_FILE.fullmatch(name)):
            batch = int(match.group(1)) - 1
        if (batch is not None and batch <= last_committed) or final in files:
            stale.append(temp)
    return stale


def has_offsets(checkpoint: str, files: LakeFiles) -> bool:
    """Whether a checkpoint has planned at least one batch (those of a store that cannot be
    read without Spark are assumed to)."""
    if files.resolve(checkpoint) is None:
        return True
    return Checkpoint(checkpoint, files).has_offsets()


def _log_file_problem(text: str, *, offsets: bool) -> str | None:
    """Why Spark could not read a log file (`v1` then JSON lines), or None if it can.

    Spark skips a trailing newline. offsets/N holds the batch metadata (which may be empty),
    then one line per source ('-' for a source that has no offset yet); commits/N one line.
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        return "is empty"
    version, *entries = lines
    if not re.fullmatch(r"v\d+", version):
        return "has no version line"
    if len(entries) < (2 if offsets else 1):
        return "is cut short"
    for index, entry in enumerate(entries):
        if offsets and (entry == "-" or (entry == "" and index == 0)):
            continue
        try:
            json.loads(entry)
        except ValueError:
            return "is cut short (incomplete JSON)"
    return None


def _damaged_checkpoint_file(checkpoint: Checkpoint) -> str | None:
    """The first file of a checkpoint that Spark would fail to parse, with the reason.

    A crash on a store without atomic renames leaves log files truncated or empty. Only the
    files a restart reads are checked: the query id, and the newest offsets and commits (the
    restart reads the last two planned batches and the last commit).
    """
    if "metadata" in checkpoint.names():
        try:
            first = checkpoint.read("metadata").split("\n", 1)[0]
            if "id" not in json.loads(first or "null"):
                return f"{checkpoint.path('metadata')} has no query id"
        except (OSError, UnicodeDecodeError, ValueError, TypeError):
            return f"{checkpoint.path('metadata')} is empty or cut short"
    for folder in ("offsets", "commits"):
        for batch in checkpoint.batches(folder)[-2:]:
            relative = f"{folder}/{batch}"
            try:
                problem = _log_file_problem(checkpoint.read(relative),
                                            offsets=folder == "offsets")
            except (OSError, UnicodeDecodeError):
                problem = "is unreadable"
            if problem:
                return f"{checkpoint.path(relative)} {problem}"
    return None


def _check_marker(table: StreamingTable, ctx: StreamContext,
                  checkpoint: Checkpoint) -> dict | None:
    """The fingerprint recorded in the checkpoint (None if there is none); refuse a foreign one."""
    names = checkpoint.names()
    if MARKER not in names:
        if names:
            raise CheckpointMismatch(
                f"{checkpoint} holds files but no {MARKER}: it was not written by stream_assets "
                f"for {table.name}; {reset_hint(table.name)}"
            )
        return None
    try:
        recorded = json.loads(checkpoint.read(MARKER))
        if not isinstance(recorded, dict):
            raise ValueError(MARKER)
    except (OSError, ValueError):
        raise CheckpointMismatch(
            f"the checkpoint of {table.name} at {checkpoint} is damaged ({MARKER} is "
            f"unreadable); {reset_hint(table.name)}"
        ) from None
    expected = _fingerprint(table, ctx)
    if recorded.get("table") != table.name or recorded.get("sources") != expected["sources"]:
        raise CheckpointMismatch(
            f"the checkpoint at {checkpoint} belongs to {recorded.get('table')!r} reading "
            f"{recorded.get('sources')}, not to {table.name}; {reset_hint(table.name)}"
        )
    # Markers written before topics were recorded are accepted (and rewritten with them).
    if "topics" in recorded and recorded["topics"] != expected["topics"]:
        raise CheckpointMismatch(
            f"the checkpoint of {table.name} at {checkpoint} holds offsets of topic(s) "
            f"{', '.join(recorded['topics'])}, but the stream source now reads "
            f"{', '.join(expected['topics'])}; point the source back at the old topic(s), "
            f"or {reset_hint(table.name)}"
        )
    return recorded


def _write_marker(checkpoint: Checkpoint, fingerprint: dict, recorded: dict | None) -> None:
    """Record the fingerprint when it changed, atomically: a torn marker would look foreign."""
    if recorded != fingerprint:
        checkpoint.files.write_text(checkpoint.path(MARKER), json.dumps(fingerprint))


def _is_table(ctx: StreamContext, path: str) -> bool:
    """Whether a Delta table is at `path`, from its log's listing where the lake's files reach
    it: Spark's isDeltaTable also lists every parent folder (8 requests on S3 for two tables)."""
    files = ctx.lake.files
    if files.resolve(path) is not None:
        return delta_log_version(path, files) is not None
    return is_delta_table(ctx.spark, path)


def guard_checkpoint(
    table: StreamingTable, ctx: StreamContext, cleanup: Cleanup | None = None
) -> Cleanup:
    """Refuse to start a query whose checkpoint does not belong to its tables.

    A missing checkpoint beside an existing table would re-read the whole input and write it
    twice; a checkpoint of another query (or topic) would resume from offsets that mean nothing
    here; a damaged one fails inside Spark with a parser error; and tables deleted under a
    checkpoint would be resumed as if they held everything it committed. What a killed run
    left in a checkpoint of ours that never committed a batch is removed first
    (clean_interrupted_writes); the returned Cleanup (`cleanup`, if given) says what.
    """
    cleanup = Cleanup() if cleanup is None else cleanup
    location = ctx.lake.checkpoint_path(table.name)
    if ctx.lake.files.resolve(location) is None:
        return cleanup  # a store only Spark can read: Spark's own metadata checks guard it
    checkpoint = Checkpoint(location, ctx.lake.files)
    _remove_marker_temps(checkpoint, cleanup)
    recorded = _check_marker(table, ctx, checkpoint)
    if recorded is not None:
        clean_interrupted_writes(checkpoint, cleanup)
    damaged = _damaged_checkpoint_file(checkpoint)
    if damaged:
        raise CheckpointMismatch(
            f"the checkpoint of {table.name} at {checkpoint} is damaged: {damaged} (a crash "
            f"while it was written?), so Spark cannot tell what was already read; "
            f"{reset_hint(table.name)}"
        )
    if not checkpoint.has_offsets():
        for name, path in ctx.table_paths(table).items():
            if _is_table(ctx, path):
                raise CheckpointMismatch(
                    f"table {name} exists at {path} but the checkpoint of {table.name} at "
                    f"{checkpoint} is missing or empty, so its input would be read and written "
                    f"a second time; {reset_hint(table.name)}"
                )
    elif checkpoint.is_committed():
        # Every sink writes each of its tables in the first batch of a run (an empty append
        # still creates the table), so a committed batch without its table means the table
        # was lost.
        for name, path in ctx.table_paths(table).items():
            if not _is_table(ctx, path):
                raise CheckpointMismatch(
                    f"the checkpoint of {table.name} at {checkpoint} has committed batches but "
                    f"there is no Delta table {name} at {path} (deleted or replaced?); resuming "
                    "would skip every record the checkpoint already read, so they would be "
                    f"missing from {name}; restore the table, or {reset_hint(table.name)}"
                )
    _write_marker(checkpoint, _fingerprint(table, ctx), recorded)
    return cleanup
