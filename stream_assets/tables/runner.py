"""Start a declared table's streaming query, and run it to catch up.

I/O lives here (Kafka, Delta, checkpoints); what the query computes lives in the
declaration's transform.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from dagster import get_dagster_logger
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame
from pyspark.sql.streaming import StreamingQuery

from stream_assets import paths
from stream_assets.delta_log import delta_log_version, delta_schema
from stream_assets.errors import (
    StreamAssetsError,
    StreamFailed,
    TableBusy,
)
from stream_assets.resources.lake import DeltaLake
from stream_assets.sinks import delta_version, is_connect, set_properties, sql_path
from stream_assets.tables import server_faults
from stream_assets.tables.checkpoint_guard import guard_checkpoint, has_offsets
from stream_assets.tables.cleanup import Cleanup
from stream_assets.tables.context import StreamContext
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.query_errors import query_error
from stream_assets.tables.schema_evolution import Added, additions, evolve


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


def full_refresh(table: StreamingTable, ctx: StreamContext) -> list[str]:
    """Delete the checkpoint and every table the query writes, together; return what existed.

    The lake's files (lake_files.py) reach a local disk and object storage without a JVM, so
    this works over Spark Connect too; other stores go through Hadoop's FileSystem.
    """
    targets = [ctx.lake.checkpoint_path(table.name), *ctx.table_paths(table).values()]
    files = ctx.lake.files
    deleted = []
    for target in targets:
        if files.resolve(target) is not None:
            if files.delete_tree(target):
                deleted.append(target)
            continue
        if is_connect(ctx.spark):
            # A Spark Connect client has no JVM, and SQL has no 'delete this folder'.
            raise StreamFailed(
                f"a full refresh of {table.name} over Spark Connect cannot delete {target}; "
                "delete the checkpoint and tables with your storage's tools (or run the "
                "refresh with a classic SparkSession), then materialize again"
            )
        jvm = ctx.spark._jvm
        hadoop_path = jvm.org.apache.hadoop.fs.Path(target)
        filesystem = hadoop_path.getFileSystem(ctx.spark._jsc.hadoopConfiguration())
        if filesystem.delete(hadoop_path, True):
            deleted.append(target)
    return deleted


def reset(tables: Sequence[StreamingTable], ctx: StreamContext, *,
          held: Collection[StreamingTable] = ()) -> dict[str, list[str]]:
    """Full refresh of several queries at once (a table and those that stream from it).

    Every writer lock is taken before anything is deleted, so a busy query leaves all of them
    as they were. `held`: queries whose locks the caller holds already (a second flock of the
    same file from this process would refuse it). Returns the deleted paths by query.
    """
    with ExitStack() as locks:
        for table in tables:
            if table not in held:
                locks.enter_context(writer_lock(table, ctx.lake))
        return {table.name: full_refresh(table, ctx) for table in tables}


def read_sources(table: StreamingTable, ctx: StreamContext) -> dict[str, DataFrame]:
    """One DataFrame per source of the table, by the name the transform receives it under."""
    reading = ctx.read_context(table)
    return {name: source.read(reading) for name, source in table.sources.items()}


def start(
    table: StreamingTable,
    ctx: StreamContext,
    *,
    available_now: bool,
    trigger_interval: str | None = None,
    source_checked: bool = False,
    cleanup: Cleanup | None = None,
) -> StreamingQuery:
    """Start the table's query: `available_now` to catch up and stop, else keep running.

    `cleanup`, if given, receives what the checkpoint guard removed or found left over.
    """
    if not source_checked:
        ctx.check_reachable(table)
    guard_checkpoint(table, ctx, cleanup)
    for name in table.tables:
        added = evolve_table(table, name, ctx)
        if cleanup is not None:
            # The dead letters' columns named with their table: "the table" is the query's.
            prefix = "" if name == table.name else f"{name}."
            cleanup.columns_added.extend(prefix + a.sql().replace("`", "") for a in added)
    # A declaration whose table properties changed since the table was created.
    set_properties(ctx.spark, ctx.lake.table_path(table.name), table.managed_properties)
    stream = table.build_stream(read_sources(table, ctx))
    writer = table.writer(stream, ctx.table_paths(table))
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


def evolve_table(table: StreamingTable, name: str, ctx: StreamContext) -> list[Added]:
    """Grow one of the query's tables to its declared schema before the query writes, or
    refuse the change (schema_evolution.py); nothing to do without a declared schema or a table
    yet. The dead letters' schema is the package's (dead_letters.SCHEMA): a dead-letter table
    written before a column was added to it (the re-drive's marks) gains it here."""
    declared = table.schema_of(name)
    path = ctx.lake.table_path(name)
    if declared is None or delta_log_version(path, ctx.lake.files) is None:
        return []
    # From the log when it can (a start reads no more than before); Spark otherwise.
    written = delta_schema(path, ctx.lake.files) or ctx.spark.read.format("delta").load(
        path).schema
    added = additions(name, written, declared)
    evolve(ctx.spark, sql_path(path), added)
    return added


# A catch-up run in a worker thread (stream_assets/parallel_executor.py) cannot receive
# Dagster's interrupt, which only the main thread gets: the executor sets this instead, and
# every catch-up waiting on its query looks at it this often.
_stop_requested = threading.Event()
_STOP_POLL_S = 1


def request_stop() -> None:
    """Stop every catch-up query of this process at its next look (a terminated run)."""
    _stop_requested.set()


def clear_stop() -> None:
    _stop_requested.clear()


@dataclass
class CatchUpResult:
    """What one catch-up run did: Spark's progress reports and the Delta versions around it."""

    progress: list[dict]
    versions_before: dict[str, int | None]
    versions_after: dict[str, int | None] = field(default_factory=dict)
    # Broker-side earliest offsets when the checkpoint was new (Spark does not report them).
    initial_offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    # What an interrupted run had left in the checkpoint (cleanup.Cleanup).
    cleanup: Cleanup = field(default_factory=Cleanup)
    # What a full refresh deleted before the run, by query (`reset`).
    deleted: dict[str, list[str]] = field(default_factory=dict)


def catch_up(table: StreamingTable, ctx: StreamContext, *, refresh: bool = False,
             cascade: Sequence[StreamingTable] = (),
             on_reset: Callable[[dict[str, list[str]]], None] | None = None) -> CatchUpResult:
    """Process everything new since the checkpoint, then stop (trigger availableNow).

    `refresh` first deletes the query's checkpoint and tables, and those of `cascade` (the
    queries streaming from them, which a rebuilt upstream would break); `on_reset` hears what
    went at once, so it is recorded even when the rebuild then fails.
    """
    with exclusive(table, ctx):
        deleted = reset([table, *cascade], ctx, held=[table]) if refresh else {}
        if refresh and on_reset is not None:
            on_reset(deleted)
        files = ctx.lake.files
        before = {t: delta_version(ctx.spark, p, files) for t, p in ctx.table_paths(table).items()}
        initial = {}
        # Before the offsets lookup, so a dead broker gets the clear message; asked once per
        # run for all its tables (the run's look at each broker).
        looks = ctx.run_looks(table)
        for look, topics in looks:
            look.check_reachable(topics)
        if table.kafka_topics and not has_offsets(ctx.lake.checkpoint_path(table.name), files):
            initial = {
                look.topic_name(t): {p: low for p, (low, _) in look.offsets(t).items()}
                for look, topics in looks
                for t in topics
            }
        cleanup = Cleanup()
        progress: list[dict] = []
        for attempt in range(1, server_faults.ATTEMPTS + 1):
            retry = attempt < server_faults.ATTEMPTS
            try:
                query = start(table, ctx, available_now=True, source_checked=True,
                              cleanup=cleanup)
            except StreamAssetsError as exc:
                if retry and exc.__cause__ is not None and _retried(table, exc.__cause__,
                                                                    attempt):
                    continue
                raise
            try:
                while not query.awaitTermination(_STOP_POLL_S):
                    if _stop_requested.is_set():  # the `finally` below stops the query
                        raise StreamFailed(f"{table.name}: the run was terminated; its query "
                                           "stopped, and the next run resumes from its "
                                           "checkpoint")
                break
            except PySparkException as exc:
                if retry and _retried(table, exc, attempt):
                    continue
                raise query_error(table, ctx, exc, "failed") from exc
            finally:
                progress += [progress_dict(p) for p in query.recentProgress]
                if query.isActive:
                    query.stop()
        after = {t: delta_version(ctx.spark, p, files) for t, p in ctx.table_paths(table).items()}
        return CatchUpResult(progress, before, after, initial, cleanup, deleted)


def _retried(table: StreamingTable, exc: BaseException, attempt: int) -> bool:
    """Whether `exc` is a passing server failure, told as the retry it leads to."""
    fault = server_faults.passing_fault(exc)
    if fault is not None:
        get_dagster_logger().warning(
            "%s: %s (a busy Spark server); retrying from the checkpoint (attempt %d of %d)",
            table.name, fault.said, attempt + 1, server_faults.ATTEMPTS)
    return fault is not None


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
