"""How a declared table is written: appended or merged, with its dead letters split off.

A sink kind knows two things: how to write the stream on its own (`stream_writer`) and how to
write one micro-batch of it (`write_batch`), which the dead-letter split calls for the table's
rows. The Delta writes themselves, exactly once per batch id, live in stream_assets/sinks.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from pyspark.sql import DataFrame
from pyspark.sql.streaming import DataStreamWriter

from stream_assets import sinks
from stream_assets.errors import ExpectationFailed
from stream_assets.records.functions import instant
from stream_assets.tables import dead_letters
from stream_assets.tables.expectations import (
    DataExpectation,
    fail_violations,
    first_failed,
    without_flags,
)


@dataclass(frozen=True)
class WriteTarget:
    """Where one table of a query lives and how it is laid out."""

    query: str
    table: str
    path: str
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    # The declaration's table properties, as (key, value) pairs: the writes that can create the
    # table pass them, and Delta keeps them as the new table's properties.
    properties: tuple[tuple[str, str], ...] = ()
    # A writer other than the query (a re-drive): its own transaction app id, and the
    # commit's userMetadata.
    app_id: str | None = None
    note: str | None = None


class Sink:
    """Base of the sink kinds: `DeltaAppend` (the default) and `DeltaMerge`.

    Each writes a micro-batch exactly once, also when a restart replays it; the Delta writes
    themselves live in stream_assets/sinks.py.
    """

    output_mode: str = "append"
    # Whether the table's keys identify one row by construction (an upsert on them).
    upserts: ClassVar[bool] = False
    needs_keys: ClassVar[bool] = False

    def stream_writer(self, stream: DataFrame, target: WriteTarget) -> DataStreamWriter:
        def write(batch: DataFrame, batch_id: int) -> None:
            self.write_batch(batch, batch_id, target)

        return stream.writeStream.outputMode(self.output_mode).foreachBatch(write)

    def write_batch(self, batch: DataFrame, batch_id: int, target: WriteTarget) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class DeltaAppend(Sink):
    """Append every row once. On its own, Delta's streaming sink (exactly once through the
    checkpoint and Delta's log); beside dead letters, or with table properties, an idempotent
    append per batch. Always in append output mode: a batch's rows are new rows."""

    output_mode: ClassVar[str] = "append"

    def stream_writer(self, stream: DataFrame, target: WriteTarget) -> DataStreamWriter:
        if target.properties:
            # Delta's streaming sink does not keep `delta.*` options as table properties when
            # it creates the table; a batch write does.
            return super().stream_writer(stream, target)
        writer = stream.writeStream.format("delta").outputMode(self.output_mode)
        if target.partition_by:
            writer = writer.partitionBy(*target.partition_by)
        return writer.option("path", target.path)

    def write_batch(self, batch: DataFrame, batch_id: int, target: WriteTarget) -> None:
        sinks.append_once(batch, target.path, target.query, target.table, batch_id,
                          target.partition_by, target.properties, app=target.app_id,
                          note=target.note)


@dataclass(frozen=True)
class DeltaMerge(Sink):
    """Upsert each micro-batch on the table's keys (idempotent per batch id), stamping
    `stamp_column` with the batch's time when it is set."""

    output_mode: str = "update"
    stamp_column: str | None = "updated_at"
    upserts: ClassVar[bool] = True
    needs_keys: ClassVar[bool] = True

    def write_batch(self, batch: DataFrame, batch_id: int, target: WriteTarget) -> None:
        if self.stamp_column:
            batch = batch.withColumn(self.stamp_column,
                                     instant(batch.sparkSession, datetime.now(UTC)))
        sinks.merge_once(batch, target.path, target.query, target.table, batch_id, target.keys,
                         target.properties, app=target.app_id, note=target.note)


def split_writer(sink: Sink, target: WriteTarget, dead: WriteTarget | None,
                 expectations: Sequence[DataExpectation] = ()
                 ) -> Callable[[DataFrame, int], None]:
    """foreachBatch: the table's rows through `sink`, the dead letters appended beside them,
    after the batch passed its `fail` expectations.

    Both tables are written from the same batch under the same batch id, so a crash between
    the two writes is repaired by the replay: the table already written skips, the other
    catches up, and neither can run ahead of the other. A batch that fails an expectation
    writes nothing, and its offsets are not committed: a restart replays it.

    The first batch of each run writes both tables even when one gets no rows, so both exist
    from the first committed batch on (stream_assets/tables/checkpoint_guard.py relies on it).
    After that the dead letters are written only when the batch has some: most batches have
    none, and each idempotent write costs a commit and a read of the table's transaction ids.
    A replay reads the same offsets, so it skips the same write.
    """
    dead_letters_written = False
    failing = [e for e in expectations if e.action == "fail"]

    def write(batch: DataFrame, batch_id: int) -> None:
        nonlocal dead_letters_written
        # Every write and check reads the batch; caching it reads the sources and parses once.
        cached = batch.persist()
        try:
            split = dead_letters.DEAD_LETTER in cached.columns
            rows = dead_letters.table_rows(cached) if split else cached
            if failing:
                refuse_failed_batch(rows, failing, target.table, batch_id)
            sink.write_batch(without_flags(rows, expectations), batch_id, target)
            if dead is None or not split:
                return
            # One file per batch: dead letters are few, and one task per Kafka partition
            # would leave a tiny file each (docs/benchmarks.md, "The Delta side of ingest").
            # repartition, not coalesce: only the dead letters cross the shuffle, and the batch
            # is still read and parsed by all tasks when the cache is not built yet (a replay
            # whose table write Delta skipped), where coalesce would do it in one task.
            letters = dead_letters.letters(cached).repartition(1)
            if not dead_letters_written or not letters.isEmpty():
                sinks.append_once(letters, dead.path, dead.query, dead.table, batch_id)
                dead_letters_written = True
        finally:
            cached.unpersist()

    return write


# Column names whose values are never shown in an error: an offending row goes to logs and UIs.
_SECRET_COLUMN = re.compile(r"pass|secret|token|credential|api_?key|auth|private", re.I)
_VALUE_LIMIT = 200


def refuse_failed_batch(rows: DataFrame, failing: Sequence[DataExpectation], table: str,
                        batch_id: int) -> None:
    """Raise ExpectationFailed, naming the rule and one offending row, when a row breaks a
    `fail` expectation."""
    violating = fail_violations(rows, failing)
    assert violating is not None
    offending = rows.where(violating).limit(1).collect()
    if not offending:
        return
    row = offending[0].asDict()
    broken = first_failed(row, failing)
    shown = {
        name: "***" if _SECRET_COLUMN.search(name) else _clip(value)
        for name, value in row.items() if not name.startswith("__")
    }
    raise ExpectationFailed(
        f"{table}: expectation {broken.name!r} ({broken.condition}) failed in batch {batch_id}, "
        f"so nothing of the batch was written; one offending row: {shown}. A restart replays "
        "the same batch from the checkpoint and fails again until the data or the rule "
        f"changes: fix the rule on the {table} declaration (or make it a drop expectation), "
        "or fix the data upstream"
    )


def _clip(value: object) -> object:
    if isinstance(value, str | bytes) and len(value) > _VALUE_LIMIT:
        return value[:_VALUE_LIMIT] + (b"..." if isinstance(value, bytes) else "...")
    return value
