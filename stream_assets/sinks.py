"""How a micro-batch reaches Delta, exactly once per table even when a batch is replayed.

A batch is replayed after a crash between writing it and committing the checkpoint. Every
write here carries Delta's transaction identifiers (app id, batch id): Delta records them in
the same commit as the data and skips a write whose version it has already seen, so the
replay changes nothing. One app id per query and table keeps queries from skipping each
other's batches.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from stream_assets.errors import LakeUnreachable
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


def _as_text(value: object) -> str | None:
    # DESCRIBE HISTORY's maps hold strings; the log keeps booleans and lists as JSON values.
    return value if value is None or isinstance(value, str) else json.dumps(value)


def log_history(path: str, limit: int, files: LakeFiles) -> list[dict] | None:
    """The newest `limit` commits as DESCRIBE HISTORY gives them (version, timestamp,
    operation, operationParameters, operationMetrics, userMetadata), newest first, read from
    the commit files without Spark. The timestamp is the commit file's time, as Delta's
    history has it (truncated to the millisecond, a naive local time like Spark's collect).

    None when the log cannot be read that way (a store `files` cannot read, a commit file
    already cleaned up by log retention): then ask Spark."""
    version = delta_log_version(path, files)
    if version is None:
        return None
    log = f"{path.rstrip('/')}/_delta_log"
    commits = []
    for v in range(version, max(version - limit, -1), -1):
        location = f"{log}/{v:020d}.json"
        try:
            text = files.read_text(location)
        except FileNotFoundError:
            return None
        mtime = files.mtime(location)
        info = next((json.loads(line)["commitInfo"] for line in text.splitlines()
                     if line.startswith('{"commitInfo"')), None)
        if info is None or mtime is None:
            return None
        commits.append({
            "version": v,
            "timestamp": datetime.fromtimestamp(int(mtime * 1000) / 1000),
            "operation": info.get("operation"),
            "operationParameters": {k: _as_text(x) for k, x in
                                    (info.get("operationParameters") or {}).items()},
            "operationMetrics": dict(info.get("operationMetrics") or {}),
            "userMetadata": info.get("userMetadata"),
        })
    return commits


_VERSION_FILE = re.compile(r"^(\d{20})\.json$")


def delta_log_version(path: str, files: LakeFiles) -> int | None:
    """The latest committed version of a Delta table, read from its log's listing (no Spark).

    Delta writes each commit file whole (a rename on a local disk, one PUT on object
    storage), so the newest `NNN.json` is the newest committed version. None when there is no
    table, or for a store `files` cannot read (then ask Spark: `delta_version`).
    """
    if files.resolve(path) is None:
        return None
    names = files.names(f"{path.rstrip('/')}/_delta_log")
    versions = [int(m.group(1)) for n in names or () if (m := _VERSION_FILE.match(n))]
    return max(versions) if versions else None


def delta_schema(path: str, files: LakeFiles) -> StructType | None:
    """The table's schema from its log's newest metaData action, without Spark: the commits
    from the newest back to the last single-file checkpoint, then that checkpoint. None when
    it is not found that way (a multi-part or V2 checkpoint, a store `files` cannot read):
    then ask Spark."""
    version = delta_log_version(path, files)
    if version is None:
        return None
    log = f"{path.rstrip('/')}/_delta_log"
    checkpoint = _last_checkpoint(log, files)
    for v in range(version, -1 if checkpoint is None else checkpoint, -1):
        try:
            text = files.read_text(f"{log}/{v:020d}.json")
        except FileNotFoundError:
            return None  # cleaned up by log retention: only a checkpoint can say
        for line in text.splitlines():
            if '"metaData"' in line:
                meta = json.loads(line).get("metaData")
                if meta is not None:
                    return StructType.fromJson(json.loads(meta["schemaString"]))
    if checkpoint is None:
        return None
    return _checkpoint_schema(f"{log}/{checkpoint:020d}.checkpoint.parquet", files)


def _last_checkpoint(log: str, files: LakeFiles) -> int | None:
    try:
        text = files.read_text(f"{log}/_last_checkpoint")
    except FileNotFoundError:
        return None
    return int(json.loads(text)["version"])


def _checkpoint_schema(location: str, files: LakeFiles) -> StructType | None:
    import pyarrow.parquet as pq

    resolved = files.resolve(location)
    if resolved is None or not files.exists(location):
        return None
    filesystem, at = resolved
    actions = pq.read_table(at, filesystem=filesystem, columns=["metaData"]).column(0)
    for meta in actions.to_pylist():
        if meta is not None:
            return StructType.fromJson(json.loads(meta["schemaString"]))
    return None


def commit_of(path: str, files: LakeFiles) -> tuple[int, float] | None:
    """(version, commit file time) of a Delta table's newest commit, without Spark.

    The time tells a table deleted and rebuilt to the same version from the one before."""
    version = delta_log_version(path, files)
    if version is None:
        return None
    mtime = files.mtime(f"{path.rstrip('/')}/_delta_log/{version:020d}.json")
    return None if mtime is None else (version, mtime)


def delta_version(spark: SparkSession, path: str, files: LakeFiles) -> int | None:
    """The table's latest version: from its log's listing, else DESCRIBE HISTORY."""
    if files.resolve(path) is not None:
        return delta_log_version(path, files)
    if not is_delta_table(spark, path):
        return None
    return delta_history(spark, path, 1)[0]["version"]


# The actions of a commit that change no row a reader sees: the commit's own description, and
# files added or removed with `dataChange: false` (OPTIMIZE rewrites rows into other files;
# VACUUM's START and END commits carry only commitInfo). Delta's streaming source skips such
# commits, so a query reading the table as a stream has nothing new after them.
_QUIET = frozenset({"commitInfo"})
# Beyond this many commits to read, "nothing new" is not worth proving: the query starts.
QUIET_COMMITS_READ = 50


def changes_data(path: str, version: int, files: LakeFiles) -> bool:
    """Whether one commit of a Delta table may change its rows (True when it cannot be told).

    Read from the commit file without Spark. Only a commit whose every action is commitInfo,
    or an add or remove of a file with `dataChange: false`, changes nothing: a schema or
    protocol change, change data, or a commit file already cleaned from the log count as a
    change, so whoever asks looks for himself.
    """
    location = f"{path.rstrip('/')}/_delta_log/{version:020d}.json"
    try:
        text = files.read_text(location)
    except (OSError, UnicodeDecodeError, LakeUnreachable):
        return True
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError:
            return True
        for kind, body in action.items():
            if kind in _QUIET:
                continue
            if kind in ("add", "remove") and isinstance(body, dict) \
                    and body.get("dataChange") is False:
                continue
            return True
    return False


def quiet_versions(path: str, first: int, last: int, files: LakeFiles) -> bool:
    """Whether versions `first`..`last` of a Delta table all change no rows (`changes_data`):
    True for an empty range, False when there are more than QUIET_COMMITS_READ to read or the
    table's log cannot be read without Spark. Read newest first: the usual answer after new
    writes is found in the first file."""
    if last < first:
        return True
    if last - first + 1 > QUIET_COMMITS_READ or files.resolve(path) is None:
        return False
    return not any(changes_data(path, v, files) for v in range(last, first - 1, -1))
