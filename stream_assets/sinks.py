"""How a micro-batch reaches Delta, exactly once per table even when a batch is replayed.

A batch is replayed after a crash between writing it and committing the checkpoint. Every
write here carries Delta's transaction identifiers (app id, batch id): Delta records them in
the same commit as the data and skips a write whose version it has already seen, so the
replay changes nothing. One app id per query and table keeps queries from skipping each
other's batches.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stream_assets.transforms.events import dead_letters, valid_events

TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"


def app_id(query: str, table: str) -> str:
    return f"stream_assets/{query}/{table}"


def append_once(df: DataFrame, path: str, query: str, table: str, batch_id: int,
                partition_by: tuple[str, ...] = ()) -> None:
    """Append a batch to a Delta table, skipped if this batch id was already committed."""
    writer = (
        df.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id(query, table))
        .option("txnVersion", batch_id)
        # New columns in the batch may be added, never silently dropped.
        .option("mergeSchema", "true")
    )
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def merge_once(df: DataFrame, path: str, query: str, table: str, batch_id: int,
               keys: tuple[str, ...]) -> None:
    """Upsert a batch on `keys`, skipped if this batch id was already committed.

    MERGE takes its transaction identifiers from session settings rather than writer
    options; foreachBatch hands us the query's own cloned session, so setting them there
    does not leak into other queries running in the same application.
    """
    spark = df.sparkSession
    if not DeltaTable.isDeltaTable(spark, path):
        # First batch: MERGE into nothing is an insert, and the append records the same
        # transaction id, so a replay of this batch is skipped by the MERGE path below.
        append_once(df, path, query, table, batch_id)
        return
    target = DeltaTable.forPath(spark, path)
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    spark.conf.set(TXN_APP_ID, app_id(query, table))
    spark.conf.set(TXN_VERSION, str(batch_id))
    try:
        (
            target.alias("t")
            .merge(df.alias("s"), condition)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
    finally:
        spark.conf.unset(TXN_APP_ID)
        spark.conf.unset(TXN_VERSION)


def split_events_writer(query: str, events_path: str, dead_letter_path: str,
                        events_table: str, dead_letter_table: str,
                        partition_by: tuple[str, ...]) -> Callable[[DataFrame, int], None]:
    """One parsed batch (see parse_events) -> good rows to raw_events, bad to the dead letters.

    Both tables are written from the same batch under the same batch id, so a crash between
    the two writes is repaired by the replay: the table already written skips, the other
    catches up, and neither can run ahead of the other.
    """

    def write(batch: DataFrame, batch_id: int) -> None:
        # One instant for both tables, so a row's ingest and dead-letter times line up.
        now = F.lit(datetime.now(UTC))
        # Both writes read the batch; caching it reads Kafka and parses JSON once.
        parsed = batch.persist()
        try:
            append_once(valid_events(parsed, now), events_path, query, events_table, batch_id,
                        partition_by)
            append_once(dead_letters(parsed, now), dead_letter_path, query, dead_letter_table,
                        batch_id)
        finally:
            parsed.unpersist()

    return write


def delta_version(spark: SparkSession, path: str) -> int | None:
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    return DeltaTable.forPath(spark, path).history(1).first()["version"]
