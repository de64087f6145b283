"""What a run's Delta commits did to its tables, the same for both modes: the rows each table's
new commits wrote, and the table's standard metadata after them (version, row count, commit
time, columns: metadata.table_state). A catch-up run measures its tables once, after its
query (`table_metadata`); the continuous job once per report."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from dagster import MetadataValue

from stream_assets.delta_log import delta_log_version, delta_schema
from stream_assets.lake_files import LakeFiles
from stream_assets.monitoring.metadata import (
    row_count_after,
    rows_written,
    table_schema,
    table_state,
)
from stream_assets.sinks import delta_history, is_delta_table

# (Delta version, row count, commit time) of a table as its last materialization recorded it
# (metadata.recorded_state).
Recorded = tuple[int, int, float]


class DeltaWrites:
    """What the new commits of each table did since the previous call: the rows they wrote,
    and the table's version, row count and commit time after them.

    The row count is taken once, when a table is first seen, and then carried forward from
    each commit's metrics (`row_count_after`); a commit whose metrics cannot say how the count
    changed (an OPTIMIZE, a manual DELETE) makes it count the table again.

    `since` starts from what is already known instead of reading the tables: per table, the
    version a catch-up run found it at (None: no table) and the state its last
    materialization recorded. A recorded count carries forward only from that very commit
    (same version and commit time: a table recreated since is counted afresh), sparing a count
    of the whole table.
    """

    def __init__(self, spark, paths: Mapping[str, str], history_limit: int = 100,
                 since: Mapping[str, tuple[int | None, Recorded | None]] | None = None,
                 files: LakeFiles | None = None) -> None:
        self.spark = spark
        # Where the lake's files can be read without Spark, history, existence and schema come
        # from the Delta log: DESCRIBE HISTORY and a snapshot are Spark jobs, about a second
        # each on a busy driver, for every table of every report.
        self.files = files
        self.paths = dict(paths)
        self.history_limit = history_limit
        self.versions: dict[str, int] = {}
        self.counts: dict[str, int | None] = {}
        self.commit_times: dict[str, float] = {}
        self.schemas: dict[str, Any] = {}
        # The recorded commit time a carried count was taken at, until a history confirms it.
        self.anchors: dict[str, float] = {}
        for name in self.paths:
            if since is not None:
                self._start_from(name, *since.get(name, (None, None)))
            elif self._exists(name):
                latest, commits = self._history(name, 1)
                self.versions[name] = latest
                self.commit_times[name] = _commit_time(commits[0])
                self.counts[name] = self._count(name)
            else:
                self.versions[name] = -1
                self.counts[name] = 0

    def _start_from(self, name: str, before: int | None, recorded: Recorded | None) -> None:
        self.versions[name] = -1 if before is None else before
        self.counts[name] = 0 if before is None else None
        if before is not None and recorded is not None and recorded[0] == before:
            self.counts[name] = recorded[1]
            self.anchors[name] = recorded[2]

    def _readable(self, name: str) -> bool:
        return self.files is not None and self.files.resolve(self.paths[name]) is not None

    def _exists(self, name: str) -> bool:
        if self._readable(name):
            return delta_log_version(self.paths[name], self.files) is not None
        return is_delta_table(self.spark, self.paths[name])

    def _history(self, name: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
        commits = delta_history(self.spark, self.paths[name], limit, self.files)
        return max((c["version"] for c in commits), default=-1), commits

    def _count(self, name: str) -> int:
        # Delta answers a bare count from the log's file statistics, without a scan.
        return self.spark.read.format("delta").load(self.paths[name]).count()

    def take(self, existing: Collection[str] = ()) -> dict[str, int]:
        """Rows each table's commits since the previous call wrote. `existing`: tables the
        caller knows are there (a catch-up run's, after its query), spared a look first."""
        written: dict[str, int] = {}
        for name in self.paths:
            if name not in existing and not self._exists(name):
                written[name] = 0
                continue
            seen = self.versions.get(name, -1)
            anchored = name in self.anchors
            # Every commit since `seen` (and `seen`'s own, to confirm a carried count): more
            # than a page of them is read again in full rather than counted short.
            oldest = max(seen if anchored else seen + 1, 0)
            newest = delta_log_version(self.paths[name], self.files) \
                if self._readable(name) else None
            # From the log, exactly the commits wanted (at least the newest, for its time).
            limit = self.history_limit if newest is None else max(newest - oldest + 1, 1)
            latest, commits = self._history(name, limit)
            if commits and min(c["version"] for c in commits) > oldest:
                latest, commits = self._history(name, latest - oldest + 1)
            new = [c for c in commits if c["version"] > seen]
            written[name] = rows_written(new)
            if latest > seen or anchored:
                known = self.counts.get(name)
                if anchored:
                    recorded_at = self.anchors.pop(name)
                    anchor = next((c for c in commits if c["version"] == seen), None)
                    if anchor is None or abs(_commit_time(anchor) - recorded_at) >= 0.001:
                        known = None
                count = row_count_after(new, None if seen < 0 else seen, latest,
                                        None if known is None else (seen, known))
                self.counts[name] = self._count(name) if count is None else count
                self.commit_times[name] = _commit_time(commits[0])
                self.versions[name] = latest
        return written

    def state(self, name: str, descriptions: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
        """The table's standard metadata after the commits seen so far ({} before its first)."""
        version = self.versions.get(name, -1)
        count = self.counts.get(name)
        if version < 0 or count is None or name not in self.commit_times:
            return {}
        meta = table_state(self.paths[name], version, count, self.commit_times[name])
        if name not in self.schemas:
            # Read once per run: a streaming write keeps the schema the query started with.
            logged = delta_schema(self.paths[name], self.files) if self._readable(name) else None
            self.schemas[name] = logged or self.spark.read.format("delta").load(
                self.paths[name]).schema
        meta["dagster/column_schema"] = table_schema(self.schemas[name], descriptions)
        return meta


def table_metadata(
    spark,
    path: str,
    before: int | None,
    after: int | None,
    recorded: Recorded | None = None,
    descriptions: Mapping[str, str] | None = None,
    files: LakeFiles | None = None,
) -> dict[str, Any]:
    """What a table looks like after a run, and what the run's commits (those after `before`)
    wrote to it: the state and rows written the continuous job reports, measured alike.

    `recorded` is the (Delta version, row count, commit time) of the table's last
    materialization; it spares a count of the whole table when the run's commits say how
    the count changed. `after` None: the run left no table there.
    """
    if after is None:
        return {"path": MetadataValue.path(path), "delta_version": -1, "dagster/row_count": 0}
    writes = DeltaWrites(spark, {path: path}, since={path: (before, recorded)}, files=files)
    written = writes.take(existing={path})[path]
    return {**writes.state(path, descriptions), "rows_written": written}


def _commit_time(commit: Mapping[str, Any]) -> float:
    return commit["timestamp"].timestamp()
