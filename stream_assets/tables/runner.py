"""Start a declared table's streaming query, and run it to catch up.

I/O lives here (Kafka, Delta, checkpoints); what the query computes lives in the
declaration's transform.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlparse

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from stream_assets import paths
from stream_assets.errors import CheckpointMismatch, StreamFailed, TableBusy
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
    """One writer per checkpoint on this machine: a second run is refused, never interleaved.

    The lock is keyed by the checkpoint location, not the table name, so two projects (or a
    benchmark beside the demo) writing different locations never block each other.
    """
    checkpoint = ctx.lake.checkpoint_path(table.name)
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


def _fingerprint(table: StreamingTable) -> dict:
    return {
        "table": table.name,
        "tables": list(table.tables),
        "sources": [
            f"kafka:{s.topic}" if isinstance(s, KafkaTopic) else f"delta:{s.table}"
            for s in table.sources
        ],
    }


def _has_offsets(checkpoint: str) -> bool:
    """Whether a checkpoint has planned at least one batch (remote ones are assumed to)."""
    local = _local(checkpoint)
    if local is None:
        return True
    offsets = os.path.join(local, "offsets")
    return os.path.isdir(offsets) and bool(os.listdir(offsets))


def guard_checkpoint(table: StreamingTable, ctx: StreamContext) -> None:
    """Refuse to start a query whose checkpoint does not belong to its tables.

    A missing checkpoint beside an existing table would re-read the whole input and write it
    twice; a checkpoint of another query would resume from offsets that mean nothing here.
    """
    checkpoint = _local(ctx.lake.checkpoint_path(table.name))
    if checkpoint is None:
        return  # remote checkpoints are guarded by Spark's own metadata checks only
    marker = os.path.join(checkpoint, MARKER)
    has_offsets = _has_offsets(checkpoint)
    if os.path.exists(marker):
        try:
            with open(marker) as handle:
                recorded = json.load(handle)
        except (OSError, ValueError):
            raise CheckpointMismatch(
                f"the checkpoint of {table.name} at {checkpoint} is damaged ({MARKER} is "
                f"unreadable); {reset_hint(table.name)}"
            ) from None
        if recorded.get("table") != table.name or recorded.get("sources") != _fingerprint(
            table
        )["sources"]:
            raise CheckpointMismatch(
                f"the checkpoint at {checkpoint} belongs to {recorded.get('table')!r} reading "
                f"{recorded.get('sources')}, not to {table.name}; {reset_hint(table.name)}"
            )
    elif os.path.isdir(checkpoint) and os.listdir(checkpoint):
        raise CheckpointMismatch(
            f"{checkpoint} holds files but no {MARKER}: it was not written by stream_assets "
            f"for {table.name}; {reset_hint(table.name)}"
        )
    if not has_offsets:
        for name, path in ctx.table_paths(table).items():
            if is_delta_table(ctx.spark, path):
                raise CheckpointMismatch(
                    f"table {name} exists at {path} but the checkpoint of {table.name} at "
                    f"{checkpoint} is missing or empty, so its input would be read and written "
                    f"a second time; {reset_hint(table.name)}"
                )
    os.makedirs(checkpoint, exist_ok=True)
    with open(marker, "w") as handle:
        json.dump(_fingerprint(table), handle)


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
    except PySparkException as exc:
        raise StreamFailed(f"{table.name} could not start: {_short(exc)}") from exc


def _short(exc: BaseException, limit: int = 1500) -> str:
    text = str(exc).strip()
    first = text.split("\n\tat ")[0].split("\nJVM stacktrace:")[0]
    return first[:limit]


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
            raise StreamFailed(f"{table.name} failed: {_short(exc)}") from exc
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
