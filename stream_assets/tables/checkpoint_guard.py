"""Refuse to resume a streaming query from a checkpoint that does not belong to its tables.

A query's offsets mean something only together with the tables they were written to and the
topics they were read from. Before a query starts, the checkpoint's marker file (written by
stream_assets beside Spark's own files) and Spark's last log files are checked, so a foreign,
damaged or orphaned checkpoint fails with the way out instead of silently losing or
duplicating records. Local checkpoints only: remote ones rely on Spark's own checks.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import TYPE_CHECKING

from stream_assets.errors import CheckpointMismatch
from stream_assets.paths import local_path
from stream_assets.sinks import is_delta_table
from stream_assets.tables.declaration import StreamingTable

if TYPE_CHECKING:
    from stream_assets.tables.runner import StreamContext

MARKER = "stream_assets.json"


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


def batch_files(folder: str) -> list[str]:
    """A Spark log folder's batch files (named by batch id), oldest first."""
    if not os.path.isdir(folder):
        return []
    return [
        os.path.join(folder, name)
        for name in sorted((n for n in os.listdir(folder) if n.isdigit()), key=int)
    ]


def has_offsets(checkpoint: str) -> bool:
    """Whether a checkpoint has planned at least one batch (remote ones are assumed to)."""
    local = local_path(checkpoint)
    if local is None:
        return True
    return bool(batch_files(os.path.join(local, "offsets")))


def _log_file_problem(path: str, *, offsets: bool) -> str | None:
    """Why Spark could not read a log file (`v1` then JSON lines), or None if it can.

    Spark skips a trailing newline. offsets/N holds the batch metadata (which may be empty),
    then one line per source ('-' for a source that has no offset yet); commits/N one line.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return "is unreadable"
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


def _damaged_checkpoint_file(checkpoint: str) -> str | None:
    """The first file of a local checkpoint that Spark would fail to parse, with the reason.

    A crash on a store without atomic renames leaves log files truncated or empty. Only the
    files a restart reads are checked: the query id, and the newest offsets and commits (the
    restart reads the last two planned batches and the last commit).
    """
    metadata = os.path.join(checkpoint, "metadata")
    if os.path.exists(metadata):
        try:
            with open(metadata, encoding="utf-8") as handle:
                if "id" not in json.loads(handle.readline() or "null"):
                    return f"{metadata} has no query id"
        except (OSError, UnicodeDecodeError, ValueError, TypeError):
            return f"{metadata} is empty or cut short"
    for folder in ("offsets", "commits"):
        for path in batch_files(os.path.join(checkpoint, folder))[-2:]:
            problem = _log_file_problem(path, offsets=folder == "offsets")
            if problem:
                return f"{path} {problem}"
    return None


def _check_marker(table: StreamingTable, ctx: StreamContext, checkpoint: str) -> dict | None:
    """The fingerprint recorded in the checkpoint (None if there is none); refuse a foreign one."""
    marker = os.path.join(checkpoint, MARKER)
    if not os.path.exists(marker):
        if os.path.isdir(checkpoint) and os.listdir(checkpoint):
            raise CheckpointMismatch(
                f"{checkpoint} holds files but no {MARKER}: it was not written by stream_assets "
                f"for {table.name}; {reset_hint(table.name)}"
            )
        return None
    try:
        with open(marker) as handle:
            recorded = json.load(handle)
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


def _write_marker(checkpoint: str, fingerprint: dict, recorded: dict | None) -> None:
    """Record the fingerprint when it changed, atomically: a torn marker would look foreign."""
    if recorded == fingerprint:
        return
    os.makedirs(checkpoint, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{MARKER}.", suffix=".tmp", dir=checkpoint)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(fingerprint, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, os.path.join(checkpoint, MARKER))
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def guard_checkpoint(table: StreamingTable, ctx: StreamContext) -> None:
    """Refuse to start a query whose checkpoint does not belong to its tables.

    A missing checkpoint beside an existing table would re-read the whole input and write it
    twice; a checkpoint of another query (or topic) would resume from offsets that mean nothing
    here; a damaged one fails inside Spark with a parser error; and tables deleted under a
    checkpoint would be resumed as if they held everything it committed.
    """
    checkpoint = local_path(ctx.lake.checkpoint_path(table.name))
    if checkpoint is None:
        return  # remote checkpoints are guarded by Spark's own metadata checks only
    recorded = _check_marker(table, ctx, checkpoint)
    damaged = _damaged_checkpoint_file(checkpoint)
    if damaged:
        raise CheckpointMismatch(
            f"the checkpoint of {table.name} at {checkpoint} is damaged: {damaged} (a crash "
            f"while it was written?), so Spark cannot tell what was already read; "
            f"{reset_hint(table.name)}"
        )
    if not has_offsets(checkpoint):
        for name, path in ctx.table_paths(table).items():
            if is_delta_table(ctx.spark, path):
                raise CheckpointMismatch(
                    f"table {name} exists at {path} but the checkpoint of {table.name} at "
                    f"{checkpoint} is missing or empty, so its input would be read and written "
                    f"a second time; {reset_hint(table.name)}"
                )
    elif batch_files(os.path.join(checkpoint, "commits")):
        # Every sink writes each of its tables in the first batch of a run (an empty append
        # still creates the table), so a committed batch without its table means the table
        # was lost.
        for name, path in ctx.table_paths(table).items():
            if not is_delta_table(ctx.spark, path):
                raise CheckpointMismatch(
                    f"the checkpoint of {table.name} at {checkpoint} has committed batches but "
                    f"there is no Delta table {name} at {path} (deleted or replaced?); resuming "
                    "would skip every record the checkpoint already read, so they would be "
                    f"missing from {name}; restore the table, or {reset_hint(table.name)}"
                )
    _write_marker(checkpoint, _fingerprint(table, ctx), recorded)
