"""A Delta table's log read without Spark: versions, commits, schema and whether a commit
changes data.

Delta writes each commit file whole (a rename on a local disk, one PUT on object storage), so
reading the log's files through `LakeFiles` sees committed versions only. Every answer here is
None (or the cautious one) where the files cannot say, and the caller asks Spark instead
(sinks.py): on a busy driver a Spark lookup costs about a second, a file read milliseconds.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from pyspark.sql.types import StructType

from stream_assets.errors import LakeUnreachable
from stream_assets.lake_files import LakeFiles


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
