"""How a micro-batch reaches Delta, exactly once per table even when a batch is replayed.

A batch is replayed after a crash between writing it and committing the checkpoint. Every
write here carries Delta's transaction identifiers (app id, batch id): Delta records them in
the same commit as the data and skips a write whose version it has already seen, so the
replay changes nothing. One app id per query and table keeps queries from skipping each
other's batches.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stream_assets.delta_log import delta_log_version, log_history
from stream_assets.lake_files import LakeFiles

TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"
# A commit's userMetadata (DESCRIBE HISTORY shows it): what wrote it, for a re-drive to find.
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


def app_id(query: str, table: str) -> str:
    return f"stream_assets/{query}/{table}"


def append_once(df: DataFrame, path: str, query: str, table: str, batch_id: int,
                partition_by: tuple[str, ...] = (),
                properties: tuple[tuple[str, str], ...] = (), *,
                app: str | None = None, note: str | None = None) -> None:
    """Append a batch to a Delta table, skipped if this batch id was already committed.

    `properties` (`delta.*`) become the table's properties when this write creates it; Delta
    ignores them on a table that exists (set_properties changes those). `app` replaces the
    query's transaction app id (a re-drive has its own); `note` becomes the commit's
    userMetadata."""
    writer = (
        df.write.format("delta")
        .mode("append")
        .option("txnAppId", app or app_id(query, table))
        .option("txnVersion", batch_id)
        # New columns in the batch may be added, never silently dropped.
        .option("mergeSchema", "true")
    )
    if note is not None:
        writer = writer.option("userMetadata", note)
    for key, value in properties:
        writer = writer.option(key, value)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def merge_once(df: DataFrame, path: str, query: str, table: str, batch_id: int,
               keys: tuple[str, ...], properties: tuple[tuple[str, str], ...] = (), *,
               app: str | None = None, note: str | None = None) -> None:
    """Upsert a batch on `keys`, skipped if this batch id was already committed.

    MERGE takes its transaction identifiers from session settings rather than writer
    options; classic foreachBatch hands us the query's own cloned session, so setting them
    there does not leak into other queries running in the same application. Over Spark
    Connect the batch's session is the session the query was started from, shared by every
    query started there (see docs/cluster.md), so queries that run at once must each start in
    a session of their own: the continuous job does (jobs.QuerySessions); a catch-up run
    starts one query at a time. `app` and `note` as for append_once.
    """
    spark = df.sparkSession
    if not is_delta_table(spark, path):
        # First batch: MERGE into nothing is an insert, and the append records the same
        # transaction id, so a replay of this batch is skipped by the MERGE path below.
        append_once(df, path, query, table, batch_id, properties=properties, app=app,
                    note=note)
        return
    # Spark's own DataFrame.mergeInto (not DeltaTable.merge): the same Delta MERGE, and it
    # also runs over Spark Connect, where DeltaTable needs Delta's server plugins. The target
    # cannot take an alias, so the condition names it by its path.
    target = sql_path(path)
    condition = " AND ".join(f"{target}.`{k}` <=> s.`{k}`" for k in keys)
    # Cached: the emptiness check and the MERGE would otherwise each recompute the batch,
    # stateful operators included.
    df = df.persist()
    try:
        # Batches Spark runs only to advance the watermark usually update no row; a MERGE of
        # nothing still joins the target and commits a version, holding up the next batch.
        # Skipping one is safe: Delta's transaction check only asks for increasing versions.
        if df.isEmpty():
            return
        spark.conf.set(TXN_APP_ID, app or app_id(query, table))
        spark.conf.set(TXN_VERSION, str(batch_id))
        if note is not None:
            spark.conf.set(USER_METADATA, note)
        try:
            retry_on_conflict(lambda: (
                df.alias("s")
                .mergeInto(target, F.expr(condition))
                .whenMatched()
                .updateAll()
                .whenNotMatched()
                .insertAll()
                .merge()
            ))
        finally:
            spark.conf.unset(TXN_APP_ID)
            spark.conf.unset(TXN_VERSION)
            spark.conf.unset(USER_METADATA)
    finally:
        df.unpersist()


# Delta's conflicts between a MERGE and a compaction (or a VACUUM-free rewrite) committed
# meanwhile: the losing transaction committed nothing, so it may simply run again on the new
# snapshot. Not ConcurrentTransactionException: two writers of one transaction id.
_CONFLICT = re.compile(r"Concurrent(DeleteRead|DeleteDelete|Append)Exception|"
                       r"DELTA_CONCURRENT_(DELETE_READ|DELETE_DELETE|APPEND)")
CONFLICT_RETRIES = 5


def is_conflict(exc: BaseException) -> bool:
    """Whether Delta refused a commit because another one changed the files it read."""
    return bool(_CONFLICT.search(f"{type(exc).__name__}: {exc}"[:4000]))


def retry_on_conflict(write, retries: int = CONFLICT_RETRIES):
    """Run a Delta write, again (up to `retries` more times) after a concurrent-modification
    conflict, which leaves nothing committed.

    The table's writer and the maintenance job's compaction meet here (docs/operations.md,
    "Maintenance"): whichever commits second reads the new snapshot and tries once more. A
    MERGE's transaction id keeps a batch that did commit from being merged twice.
    """
    for attempt in range(retries + 1):
        try:
            return write()
        except Exception as exc:
            if attempt == retries or not is_conflict(exc):
                raise
            time.sleep(0.2 * (attempt + 1))
    return None


def set_properties(spark: SparkSession, path: str,
                   properties: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Give an existing table the `properties` it does not hold yet (one commit), and return
    them; a table that does not exist yet gets them from the write that creates it."""
    if not properties or not is_delta_table(spark, path):
        return {}
    held = spark.sql(f"DESCRIBE DETAIL {sql_path(path)}").first()["properties"] or {}
    changed = {key: value for key, value in properties if held.get(key) != value}
    if changed:
        assignments = ", ".join(f"{_literal(k)} = {_literal(v)}" for k, v in changed.items())
        spark.sql(f"ALTER TABLE {sql_path(path)} SET TBLPROPERTIES ({assignments})")
    return changed


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def is_connect(spark: SparkSession) -> bool:
    """Whether `spark` is a Spark Connect client session (no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def sql_path(path: str) -> str:
    """A Delta table path as a SQL table name: delta.`/path`."""
    return "delta.`" + path.replace("`", "``") + "`"


def is_delta_table(spark: SparkSession, path: str) -> bool:
    """Whether `path` holds a Delta table, for a classic or a Spark Connect session.

    Delta's Python DeltaTable API works over Spark Connect only when the server runs Delta's
    Connect plugins (io.delta:delta-connect-server, which no Maven repository we use has for
    Spark 4.2); plain SQL works on any server with Delta's SQL extension.
    """
    if not is_connect(spark):
        return DeltaTable.isDeltaTable(spark, path)
    try:
        spark.sql(f"DESCRIBE DETAIL {sql_path(path)}").collect()
    except AnalysisException as exc:
        if exc.getCondition() == "DELTA_MISSING_DELTA_TABLE":
            return False
        raise
    return True


def history_frame(spark: SparkSession, path: str, limit: int) -> DataFrame:
    """DESCRIBE HISTORY of a Delta table: its newest `limit` commits, newest first.

    The same columns as DeltaTable.history, for a classic or a Spark Connect session.
    """
    return spark.sql(f"DESCRIBE HISTORY {sql_path(path)} LIMIT {int(limit)}")


def noted_commit(spark: SparkSession, path: str, note: str,
                 since: datetime | None = None) -> int | None:
    """The version of the table's newest commit whose userMetadata is `note`, None if none.

    Reads the history newest first, a growing page at a time, and no further back than
    `since` (when the commit cannot be older), so a recent commit is found without reading
    the whole log."""
    limit, oldest_seen = 64, None
    while True:
        rows = history_frame(spark, path, limit).select(
            "version", "timestamp", "userMetadata").collect()
        found = [r["version"] for r in rows if r["userMetadata"] == note]
        if found:
            return max(found)
        oldest = min(rows, key=lambda r: r["version"], default=None)
        if oldest is None or oldest["version"] in (0, oldest_seen):
            return None
        if since is not None and oldest["timestamp"].replace(tzinfo=None) < \
                since.replace(tzinfo=None):
            return None
        oldest_seen, limit = oldest["version"], limit * 8


def delta_history(spark: SparkSession, path: str, limit: int,
                  files: LakeFiles | None = None) -> list[dict]:
    """The newest `limit` commits of a Delta table, newest first (DESCRIBE HISTORY rows).

    Read from the log's commit files when `files` can (`log_history`): DESCRIBE HISTORY costs
    a Spark job, about a second on a busy driver, at the end of every materialization."""
    if files is not None:
        commits = log_history(path, limit, files)
        if commits is not None:
            return commits
    return [row.asDict(recursive=True) for row in history_frame(spark, path, limit).collect()]


def delta_version(spark: SparkSession, path: str, files: LakeFiles) -> int | None:
    """The table's latest version: from its log's listing, else DESCRIBE HISTORY."""
    if files.resolve(path) is not None:
        return delta_log_version(path, files)
    if not is_delta_table(spark, path):
        return None
    return delta_history(spark, path, 1)[0]["version"]
