"""Start a declared table's streaming query, and run it to catch up.

I/O lives here (Kafka, Delta, checkpoints); what the query computes lives in the
declaration's transform.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlparse

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from stream_assets import paths
from stream_assets.errors import (
    CheckpointMismatch,
    KafkaDataLoss,
    StreamAssetsError,
    StreamFailed,
    TableBusy,
)
from stream_assets.resources.kafka import KafkaCompatibleSource
from stream_assets.resources.lake import DeltaLake
from stream_assets.sinks import delta_version, is_connect, is_delta_table
from stream_assets.tables.declaration import KafkaTopic, SinkTarget, StreamingTable, Upstream

MARKER = "stream_assets.json"


def _local(path: str) -> str | None:
    """The filesystem path of a local location, None for remote stores (abfss://, s3a://…)."""
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        return parsed.path if parsed.scheme else path
    return None


def reset_hint(table: str) -> str:
    return (
        f"to rebuild {table} from its sources, run a full refresh: "
        f"'stream-assets reset {table}' or materialize it with config full_refresh: true"
    )


@dataclass
class StreamContext:
    """The resources a query needs."""

    spark: SparkSession
    lake: DeltaLake
    source: KafkaCompatibleSource

    def table_paths(self, table: StreamingTable) -> dict[str, str]:
        return {t: self.lake.table_path(t) for t in table.tables}


@contextmanager
def exclusive(table: StreamingTable, ctx: StreamContext) -> Iterator[None]:
    """One writer per checkpoint on this machine: a second run is refused, never interleaved."""
    with writer_lock(table, ctx.lake):
        yield


@contextmanager
def writer_lock(table: StreamingTable, lake: DeltaLake) -> Iterator[None]:
    """The lock behind `exclusive`, for callers without a SparkSession yet (`stream-assets reset`).

    The lock is keyed by the checkpoint location, not the table name, so two projects (or a
    benchmark beside the demo) writing different locations never block each other.
    """
    checkpoint = lake.checkpoint_path(table.name)
    digest = hashlib.sha1(checkpoint.encode()).hexdigest()[:12]
    lock_path = paths.locks_dir() / f"{table.name}-{digest}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TableBusy(
                f"{table.name} is being written by another run (checkpoint {checkpoint}, lock "
                f"{lock_path}); wait for it to finish or terminate it from the Dagster UI"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fingerprint(table: StreamingTable, ctx: StreamContext) -> dict:
    """What the checkpoint's offsets mean: the query, its tables and the broker-side topics.

    Logical sources alone are not enough: `topic_names` (or another Event Hub) can point the
    same declaration at another topic, whose offsets the old checkpoint's do not describe.
    """
    return {
        "table": table.name,
        "tables": list(table.tables),
        "sources": [
            f"kafka:{s.topic}" if isinstance(s, KafkaTopic) else f"delta:{s.table}"
            for s in table.sources
        ],
        "topics": [ctx.source.topic_name(t) for t in table.kafka_topics],
    }


def _batch_files(folder: str) -> list[str]:
    """A Spark log folder's batch files (named by batch id), oldest first."""
    if not os.path.isdir(folder):
        return []
    return [
        os.path.join(folder, name)
        for name in sorted((n for n in os.listdir(folder) if n.isdigit()), key=int)
    ]


def _has_offsets(checkpoint: str) -> bool:
    """Whether a checkpoint has planned at least one batch (remote ones are assumed to)."""
    local = _local(checkpoint)
    if local is None:
        return True
    return bool(_batch_files(os.path.join(local, "offsets")))


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
        for path in _batch_files(os.path.join(checkpoint, folder))[-2:]:
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
    checkpoint = _local(ctx.lake.checkpoint_path(table.name))
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
    if not _has_offsets(checkpoint):
        for name, path in ctx.table_paths(table).items():
            if is_delta_table(ctx.spark, path):
                raise CheckpointMismatch(
                    f"table {name} exists at {path} but the checkpoint of {table.name} at "
                    f"{checkpoint} is missing or empty, so its input would be read and written "
                    f"a second time; {reset_hint(table.name)}"
                )
    elif _batch_files(os.path.join(checkpoint, "commits")):
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


def full_refresh(table: StreamingTable, ctx: StreamContext) -> None:
    """Delete the checkpoint and every table the query writes, together."""
    targets = [ctx.lake.checkpoint_path(table.name), *ctx.table_paths(table).values()]
    for target in targets:
        local = _local(target)
        if local is None and is_connect(ctx.spark):
            # A Spark Connect client has no JVM, and SQL has no 'delete this folder'.
            raise StreamFailed(
                f"a full refresh of {table.name} over Spark Connect cannot delete {target}; "
                "delete the checkpoint and tables with your storage's tools (or run the "
                "refresh with a classic SparkSession), then materialize again"
            )
        if local is None:
            jvm = ctx.spark._jvm  # remote stores: Hadoop's FileSystem knows them all
            hadoop_path = jvm.org.apache.hadoop.fs.Path(target)
            filesystem = hadoop_path.getFileSystem(ctx.spark._jsc.hadoopConfiguration())
            filesystem.delete(hadoop_path, True)
        elif os.path.exists(local):
            shutil.rmtree(local)


def read_sources(table: StreamingTable, ctx: StreamContext) -> list[DataFrame]:
    frames = []
    for source in table.sources:
        if isinstance(source, KafkaTopic):
            frames.append(ctx.source.read_stream(ctx.spark, source.topic))
        elif isinstance(source, Upstream):
            path = ctx.lake.table_path(source.table)
            if not is_delta_table(ctx.spark, path):
                raise StreamFailed(
                    f"{table.name} reads {source.table}, which has no Delta table at {path} "
                    f"yet; materialize {source.table} first (the UI's 'Materialize all' runs "
                    "them in order)"
                )
            frames.append(ctx.spark.readStream.format("delta").load(path))
    for static in table.static:
        path = ctx.lake.table_path(static)
        if not is_delta_table(ctx.spark, path):
            raise StreamFailed(
                f"{table.name} joins {static}, which has no Delta table at {path}; "
                f"materialize {static} first"
            )
        frames.append(ctx.spark.read.format("delta").load(path))
    return frames


def start(
    table: StreamingTable,
    ctx: StreamContext,
    *,
    available_now: bool,
    trigger_interval: str | None = None,
    source_checked: bool = False,
) -> StreamingQuery:
    """Start the table's query: `available_now` to catch up and stop, else keep running."""
    if table.kafka_topics and not source_checked:
        ctx.source.check_reachable(table.kafka_topics)
    guard_checkpoint(table, ctx)
    stream = table.transform(*read_sources(table, ctx))
    writer = table.sink.attach(stream, table.name, SinkTarget(table.name, ctx.table_paths(table)))
    writer = writer.queryName(table.name).option(
        "checkpointLocation", ctx.lake.checkpoint_path(table.name)
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=trigger_interval or table.trigger_interval)
    try:
        return writer.start()
    except (PySparkException, Py4JJavaError) as exc:
        raise query_error(table, ctx, exc, "could not start") from exc


# Signs that Spark failed to *parse* the checkpoint's files (not to write them: a full disk is
# no reason to rebuild a table). Class names without packages, which move between versions.
_UNREADABLE_CHECKPOINT = (
    "Incomplete log file",
    "Log file was malformed",
    "OffsetSeqLog.deserialize",
    "CommitLog.deserialize",
    "StreamMetadata$.read",
    "InitialOffsetWriter.deserialize",
)
# A checkpoint of a newer Spark is readable by that Spark: Spark's own message says so.
_NEWER_LOG_VERSION = ("INVALID_LOG_VERSION", "UnsupportedLogVersion")
_DATA_LOSS = "data may have been lost"


def query_error(
    table: StreamingTable, ctx: StreamContext, exc: BaseException, doing: str
) -> StreamAssetsError:
    """A failed query as an error that says what happened and what the user can do."""
    summary = _short(exc)
    # pyspark keeps the JVM stack trace out of str() of captured exceptions.
    details = f"{exc}\n{getattr(exc, '_stackTrace', '') or ''}"
    if any(sign in details for sign in _UNREADABLE_CHECKPOINT) and not any(
        sign in details for sign in _NEWER_LOG_VERSION
    ):
        return CheckpointMismatch(
            f"the checkpoint of {table.name} at {ctx.lake.checkpoint_path(table.name)} is "
            f"damaged: Spark cannot read it ({summary}); {reset_hint(table.name)}"
        )
    if _DATA_LOSS in summary.lower():
        return KafkaDataLoss(
            f"{table.name} {doing}: data may have been lost: Kafka no longer holds records the "
            "checkpoint has not read yet (retention deleted them, or the topic was deleted or "
            f"recreated). {table.name} stopped rather than skip them. To go on, either skip "
            "them for one run with fail_on_data_loss: false on the stream source (what is "
            "gone stays gone, everything else lands once), or rebuild from what Kafka holds "
            f"now: {reset_hint(table.name)}. Spark said: {summary}"
        )
    return StreamFailed(f"{table.name} {doing}: {summary}")


# py4j's wrapper around a Java exception: "Py4JJavaError: An error occurred while calling
# o730.save.\n: org.apache...Exception: message".
_PY4J_CALL = re.compile(r"(?:py4j\.protocol\.)?(?:Py4JJavaError: )?An error occurred while "
                        r"calling \S+\n: ")


def _short(exc: BaseException, limit: int = 1500) -> str:
    """Spark's message without the query's plan, Java frames or a foreachBatch traceback."""
    text = str(exc).strip()
    text = text.split("\n=== Streaming Query ===")[0].split("\nJVM stacktrace:")[0]
    head, traceback, frames = text.partition("Traceback (most recent call last):")
    if traceback:
        # An error inside foreachBatch reaches us as the Python traceback of the batch
        # function; what matters is the exception that ended it, usually a Java one.
        last_frame = frames.rfind('\n  File "')
        lines = frames[last_frame + 1:].split("\n")
        raised = next((i for i, line in enumerate(lines) if line and not line[0].isspace()),
                      len(lines))
        text = head.rstrip() + " " + "\n".join(lines[raised:])
    text = _PY4J_CALL.sub("", text).split("\n\tat ")[0]
    return text.strip()[:limit]


@dataclass
class CatchUpResult:
    """What one catch-up run did: Spark's progress reports and the Delta versions around it."""

    progress: list[dict]
    versions_before: dict[str, int | None]
    versions_after: dict[str, int | None] = field(default_factory=dict)
    # Broker-side earliest offsets when the checkpoint was new (Spark does not report them).
    initial_offsets: dict[str, dict[str, int]] = field(default_factory=dict)


def catch_up(table: StreamingTable, ctx: StreamContext, *, refresh: bool = False) -> CatchUpResult:
    """Process everything new since the checkpoint, then stop (trigger availableNow)."""
    with exclusive(table, ctx):
        if refresh:
            full_refresh(table, ctx)
        before = {t: delta_version(ctx.spark, p) for t, p in ctx.table_paths(table).items()}
        initial = {}
        if table.kafka_topics:
            # Once per run: before the offsets lookup, so a dead broker gets the clear message.
            ctx.source.check_reachable(table.kafka_topics)
        if table.kafka_topics and not _has_offsets(ctx.lake.checkpoint_path(table.name)):
            initial = {
                ctx.source.topic_name(t): {p: low for p, (low, _) in ctx.source.offsets(t).items()}
                for t in table.kafka_topics
            }
        query = start(table, ctx, available_now=True, source_checked=True)
        try:
            query.awaitTermination()
        except PySparkException as exc:
            raise query_error(table, ctx, exc, "failed") from exc
        finally:
            if query.isActive:
                query.stop()
        after = {t: delta_version(ctx.spark, p) for t, p in ctx.table_paths(table).items()}
        progress = [progress_dict(p) for p in query.recentProgress]
        return CatchUpResult(progress, before, after, initial)


def progress_dict(progress) -> dict:
    """A progress report as the JVM's JSON dict, from a classic or a Spark Connect query.

    Spark Connect sends each report's JSON without the top-level numInputRows and rates;
    pyspark computes them from the sources, so they are put back from its properties.
    """
    if not hasattr(progress, "json"):
        return progress
    data = json.loads(progress.json)
    for key in ("numInputRows", "inputRowsPerSecond", "processedRowsPerSecond"):
        if data.get(key) is None:
            data[key] = getattr(progress, key)
    return data
