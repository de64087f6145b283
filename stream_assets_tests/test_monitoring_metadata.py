"""Row counts carried forward from a recorded count through Delta commit metrics."""

from __future__ import annotations

from stream_assets.monitoring.metadata import row_count_after


def append(version: int, rows: int) -> dict:
    return {"version": version, "operation": "WRITE",
            "operationParameters": {"mode": "Append"},
            "operationMetrics": {"numOutputRows": str(rows)}}


def merge(version: int, inserted: int, updated: int, deleted: int = 0) -> dict:
    return {"version": version, "operation": "MERGE", "operationParameters": {},
            "operationMetrics": {"numTargetRowsInserted": str(inserted),
                                 "numTargetRowsUpdated": str(updated),
                                 "numTargetRowsDeleted": str(deleted)}}


def test_new_table_counts_its_appends_from_zero():
    assert row_count_after([append(1, 7), append(0, 5)], None, 1, None) == 12


def test_recorded_count_at_the_previous_version_carries_forward():
    commits = [append(4, 10), merge(5, inserted=3, updated=9, deleted=1)]
    assert row_count_after(commits, 3, 5, (3, 100)) == 112


def test_no_new_commits_keeps_the_recorded_count():
    assert row_count_after([], 3, 3, (3, 100)) == 100


def test_unknown_when_the_recorded_count_is_from_another_version():
    assert row_count_after([append(4, 10)], 3, 4, (2, 100)) is None
    assert row_count_after([append(4, 10)], 3, 4, None) is None


def test_unknown_when_a_commit_is_missing_or_not_an_append_or_merge():
    assert row_count_after([append(5, 10)], 3, 5, (3, 100)) is None
    overwrite = {**append(4, 10), "operationParameters": {"mode": "Overwrite"}}
    assert row_count_after([overwrite], 3, 4, (3, 100)) is None
    delete = {"version": 4, "operation": "DELETE", "operationMetrics": {"numDeletedRows": "2"}}
    assert row_count_after([delete], 3, 4, (3, 100)) is None


def test_rows_written_by_a_merge_are_its_inserts_and_updates_not_the_rows_it_copied():
    from stream_assets.monitoring.metadata import rows_written

    merge = {"operationMetrics": {"numOutputRows": "20", "numTargetRowsInserted": "2",
                                  "numTargetRowsUpdated": "4", "numTargetRowsCopied": "14"}}
    append = {"operationMetrics": {"numOutputRows": "7"}}
    assert rows_written([merge, append]) == 6 + 7


def test_a_run_carries_its_recorded_count_only_from_the_very_commit_and_counts_every_new_commit(
        spark, workdir):
    """Both modes measure their commits with DeltaWrites: a catch-up run starts from the
    version it found and its last materialization's record, which carries the count forward
    only when it is that commit's (same commit time); more new commits than a history page
    are still all counted as written."""
    from stream_assets.monitoring.delta_writes import DeltaWrites, table_metadata

    path = str(workdir / "t")
    for n in (2, 3, 4):
        spark.range(n).write.format("delta").mode("append").save(path)
    first = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").where("version = 1").first()
    recorded_at = first["timestamp"].timestamp()
    # The record says 100 rows at version 1 (not the truth: 5): carried, so not recounted.
    meta = table_metadata(spark, path, 1, 2, (1, 100, recorded_at))
    assert (meta["delta_version"], meta["dagster/row_count"], meta["rows_written"]) == (
        2, 104, 4)
    # Taken at another commit time (a table rebuilt to the same version): counted afresh.
    meta = table_metadata(spark, path, 1, 2, (1, 100, recorded_at - 5))
    assert (meta["dagster/row_count"], meta["rows_written"]) == (9, 4)
    # A page of one commit: the three since the start are read again in full.
    writes = DeltaWrites(spark, {"t": path}, history_limit=1, since={"t": (None, None)})
    assert writes.take() == {"t": 9}
    assert writes.state("t")["dagster/row_count"] == 9
