"""Delta writes of one micro-batch are skipped when the same batch is written again, and the
table lookups that work with a classic and a Spark Connect session alike."""

from __future__ import annotations

from stream_assets.delta_log import log_history
from stream_assets.dev.generator import GOOD, generate_events
from stream_assets.lake_files import LOCAL_FILES
from stream_assets.sinks import (
    append_once,
    delta_history,
    delta_version,
    history_frame,
    is_delta_table,
    merge_once,
)
from stream_assets.tables import dead_letters
from stream_assets.tables.catalog import event_records
from stream_assets.tables.writes import DeltaAppend, WriteTarget, split_writer
from stream_assets_tests.test_parse_events import kafka_frame


def test_replayed_merge_batch_changes_nothing(spark, workdir):
    path = str(workdir / "counts")
    first = spark.createDataFrame([("a", 1), ("b", 2)], "k string, n int")
    merge_once(first, path, "q", "counts", 0, ("k",))
    update = spark.createDataFrame([("a", 10), ("c", 3)], "k string, n int")
    merge_once(update, path, "q", "counts", 1, ("k",))
    version = delta_version(spark, path, LOCAL_FILES)

    # A crash after the commit but before the checkpoint replays batch 1 with other values.
    replay = spark.createDataFrame([("a", 99), ("d", 4)], "k string, n int")
    merge_once(replay, path, "q", "counts", 1, ("k",))

    assert delta_version(spark, path, LOCAL_FILES) == version
    rows = sorted(tuple(r) for r in spark.read.format("delta").load(path).collect())
    assert rows == [("a", 10), ("b", 2), ("c", 3)]


def test_an_empty_merge_batch_commits_nothing_and_later_batches_still_apply(spark, workdir):
    path = str(workdir / "counts_empty")
    merge_once(spark.createDataFrame([("a", 1)], "k string, n int"), path, "q", "c", 0, ("k",))
    version = delta_version(spark, path, LOCAL_FILES)
    merge_once(spark.createDataFrame([], "k string, n int"), path, "q", "c", 1, ("k",))
    assert delta_version(spark, path, LOCAL_FILES) == version
    merge_once(spark.createDataFrame([("a", 2)], "k string, n int"), path, "q", "c", 2, ("k",))
    assert delta_version(spark, path, LOCAL_FILES) == version + 1
    assert [tuple(r) for r in spark.read.format("delta").load(path).collect()] == [("a", 2)]


def test_replayed_append_batch_changes_nothing(spark, workdir):
    path = str(workdir / "events")
    batch = spark.createDataFrame([("a",), ("b",)], "k string")
    append_once(batch, path, "q", "events", 0)
    append_once(batch, path, "q", "events", 0)
    append_once(batch, path, "other-query", "events", 0)  # another query's batch 0 counts
    assert spark.read.format("delta").load(path).count() == 4


def test_history_lists_commits_newest_first_and_a_missing_table_has_no_version(spark, workdir):
    path = str(workdir / "history")
    assert not is_delta_table(spark, path) and delta_version(spark, path, LOCAL_FILES) is None
    batch = spark.createDataFrame([("a",), ("b",)], "k string")
    append_once(batch, path, "q", "history", 0)
    append_once(batch, path, "q", "history", 1)

    assert is_delta_table(spark, path) and delta_version(spark, path, LOCAL_FILES) == 1
    assert [c["version"] for c in delta_history(spark, path, 10)] == [1, 0]
    newest = history_frame(spark, path, 1).select("version", "operationMetrics").collect()
    assert [(r["version"], r["operationMetrics"]["numOutputRows"]) for r in newest] == [(1, "2")]


def test_the_logs_history_is_what_describe_history_says(spark, workdir):
    """log_history (no Spark) against DESCRIBE HISTORY over an append, a MERGE, an OPTIMIZE
    and a commit with user metadata: the fields the metadata and row counts read."""
    path = str(workdir / "log_history")
    append_once(spark.createDataFrame([("a", 1), ("b", 2)], "k string, n int"), path, "q", "t", 0)
    merge_once(spark.createDataFrame([("a", 5), ("c", 3)], "k string, n int"), path, "q", "t", 1,
               ("k",))
    spark.sql(f"OPTIMIZE delta.`{path}`").collect()
    append_once(spark.createDataFrame([("d", 4)], "k string, n int"), path, "q", "t", 2,
                note="a note")
    fields = ("version", "timestamp", "operation", "operationParameters", "operationMetrics",
              "userMetadata")
    spark_rows = [{f: c[f] for f in fields} for c in delta_history(spark, path, 3)]
    assert log_history(path, 3, LOCAL_FILES) == spark_rows
    assert [c["operation"] for c in log_history(path, 10, LOCAL_FILES)] == [
        "WRITE", "OPTIMIZE", "MERGE", "WRITE"]
    assert delta_history(spark, path, 10, LOCAL_FILES) == log_history(path, 10, LOCAL_FILES)


def test_split_writer_writes_dead_letters_in_the_first_batch_then_only_if_any(spark, workdir):
    events, dead = str(workdir / "split_events"), str(workdir / "split_dead")

    def batch(count: int, bad_ratio: float, seed: int):
        records = list(generate_events(count, bad_ratio=bad_ratio, seed=seed))
        parsed = event_records(kafka_frame(spark, [r.value for r in records]))
        return dead_letters.routed(parsed, "events"), records

    def counts() -> tuple[int, int]:
        return tuple(spark.read.format("delta").load(p).count() for p in (events, dead))

    def split_writer_of_a_new_run():
        return split_writer(DeltaAppend(), WriteTarget("q", "events", events),
                            WriteTarget("q", "dead", dead))

    write = split_writer_of_a_new_run()
    clean, records = batch(20, 0.0, 1)
    write(clean, 0)
    # Both tables exist after the first batch, the dead letters empty.
    assert counts() == (20, 0)
    versions = (delta_version(spark, events, LOCAL_FILES), delta_version(spark, dead, LOCAL_FILES))

    write(clean, 1)  # no bad record: the dead-letter table gets no commit
    assert (delta_version(spark, events, LOCAL_FILES), delta_version(spark, dead, LOCAL_FILES)) == (
        versions[0] + 1, versions[1])

    mixed, records = batch(50, 0.2, 2)
    bad = sum(1 for r in records if r.kind != GOOD)
    assert 0 < bad < 50
    write(mixed, 2)
    write(mixed, 2)  # a replay of the batch changes nothing
    assert counts() == (40 + 50 - bad, bad)

    # A new run (a restart) writes both tables in its first batch again, empty or not.
    restarted = split_writer_of_a_new_run()
    restarted(clean, 3)
    assert delta_version(spark, dead, LOCAL_FILES) == versions[1] + 2


def test_the_schema_read_from_the_log_is_sparks_before_and_after_checkpoints(spark, workdir):
    """delta_schema reads the newest metaData without Spark: in version 0, in a later commit
    (a column added), and in a checkpoint when no commit after it has one."""
    from stream_assets.delta_log import delta_schema

    path = str(workdir / "t")
    assert delta_schema(path, LOCAL_FILES) is None
    spark.range(3).selectExpr("id", "cast(id as string) AS name").write.format("delta").option(
        "delta.checkpointInterval", "2").save(path)
    assert delta_schema(path, LOCAL_FILES) == spark.read.format("delta").load(path).schema
    spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS (tags ARRAY<STRING>)")
    assert delta_schema(path, LOCAL_FILES) == spark.read.format("delta").load(path).schema
    for _ in range(3):  # a checkpoint at version 2 and 4, and commits without metaData after
        spark.range(1).selectExpr("id", "'x' AS name", "array('a') AS tags").write.format(
            "delta").mode("append").save(path)
    assert (workdir / "t" / "_delta_log" / "_last_checkpoint").exists()
    assert "tags" in delta_schema(path, LOCAL_FILES).fieldNames()
    assert delta_schema(path, LOCAL_FILES) == spark.read.format("delta").load(path).schema
