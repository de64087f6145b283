"""Asset checks derived from the declarations, run by Dagster against real Delta tables."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime

import pytest
from dagster import (
    AssetCheckSeverity,
    AssetMaterialization,
    AssetSelection,
    AssetSpec,
    Definitions,
    define_asset_job,
    instance_for_test,
)
from pyspark.sql import functions as F

from stream_assets import schemas
from stream_assets.monitoring.check_config import (
    ChecksConfig,
    DeadLetterExpectation,
    Expectation,
    SchemaExpectation,
)
from stream_assets.monitoring.check_evaluations import (
    check_freshness,
    check_keys,
    check_keys_not_null,
    check_keys_unique,
    check_schema,
)
from stream_assets.monitoring.checks import build_checks, planned_checks
from stream_assets.monitoring.metadata import table_state
from stream_assets.resources import DeltaLake
from stream_assets.sinks import delta_history
from stream_assets.tables.catalog import raw_events
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.sources import upstream
from stream_assets.tables.writes import DeltaMerge

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def event_row(i: int, offset: int | None = None, event_id: str | None = None) -> tuple:
    return (event_id or f"e{i}", "click", "u1", NOW, {"page": "/"}, "events", 0,
            i if offset is None else offset, NOW)


def dead_row(i: int) -> tuple:
    # Not re-driven: the three re-drive marks are null; no Kafka timestamp kept.
    return ("{oops", "invalid JSON", NOW, "events", 1, i, b"{oops", None, "raw_events",
            None, None, None, None, None)


def write(spark, path, rows, schema):
    spark.createDataFrame(rows, schema).write.format("delta").mode("overwrite").save(path)


def run_checks(spark_resource, lake, config: ChecksConfig | None = None, instance=None):
    checks = build_checks(raw_events, config)
    defs = Definitions(
        assets=[AssetSpec("raw_events"), AssetSpec("dead_letter_queue")],
        asset_checks=[checks],
        jobs=[define_asset_job("checks", selection=AssetSelection.checks(checks))],
        resources={"spark": spark_resource, "lake": lake},
    )
    result = defs.resolve_job_def("checks").execute_in_process(raise_on_error=False,
                                                               instance=instance)
    return {(e.asset_key.to_user_string(), e.check_name): e
            for e in result.get_asset_check_evaluations()}


def test_declaration_implies_which_checks_each_table_gets():
    planned = {(t, c) for t, c, _, _ in planned_checks(raw_events, ChecksConfig())}
    assert planned == {
        ("raw_events", "freshness"), ("raw_events", "schema"), ("raw_events", "keys_not_null"),
        ("raw_events", "keys_unique"), ("raw_events", "dead_letter_ratio"),
        ("dead_letter_queue", "freshness"), ("dead_letter_queue", "schema"),
        ("raw_events", "small_files"), ("dead_letter_queue", "small_files"),
    }
    counts = StreamingTable(
        name="event_counts", sources={"df": upstream("raw_events")}, transform=lambda df: df,
        sink=DeltaMerge(), description="counts",
        keys=("window_start", "event_type"),
    )
    planned = {c for _, c, _, _ in planned_checks(counts, ChecksConfig())}
    assert {"keys_unique", "keys_not_null", "freshness"} <= planned
    assert "dead_letter_ratio" not in planned
    off = ChecksConfig(keys_unique=Expectation(enabled=False))
    assert "keys_unique" not in {c for _, c, _, _ in planned_checks(counts, off)}


def test_checks_pass_on_clean_data_and_fail_with_the_severity_the_user_chose(
    spark, spark_resource, workdir
):
    lake = DeltaLake(tables_root=str(workdir / "t"), checkpoints_root=str(workdir / "c"))
    clean = spark.createDataFrame([event_row(i) for i in range(10)], schemas.RAW_EVENTS)
    assert check_keys_not_null(clean, raw_events.keys).passed
    assert check_keys_unique(clean, raw_events.keys).passed
    assert check_schema(clean.schema, schemas.RAW_EVENTS, allow_extra=False).passed

    # raw_events broken in every way a check looks for; dead_letter_queue healthy
    rows = [event_row(i) for i in range(10)] + [event_row(3, event_id="dup")]  # offset 3 twice
    frame = spark.createDataFrame(rows, schemas.RAW_EVENTS).union(
        spark.createDataFrame([event_row(99)], schemas.RAW_EVENTS).withColumn(
            "offset", F.lit(None).cast("long"))
    )
    # a producer bug changed a type and lost a column
    frame = frame.withColumn("partition", F.col("partition").cast("string")).drop("ingested_at")
    frame.write.format("delta").save(lake.table_path("raw_events"))
    write(spark, lake.table_path("dead_letter_queue"), [dead_row(i) for i in range(10)],
          schemas.DEAD_LETTER_QUEUE)
    config = ChecksConfig(
        keys_unique=Expectation(severity="WARN"),
        dead_letter_ratio=DeadLetterExpectation(max_ratio=0.2, severity="ERROR"),
        schema_matches=SchemaExpectation(severity="WARN"),
    )
    results = run_checks(spark_resource, lake, config)
    assert len(results) == 9  # small_files on both tables passes: a few files
    failed = {k: (r.severity, r.description) for k, r in results.items() if not r.passed}
    assert set(failed) == {("raw_events", "keys_unique"), ("raw_events", "keys_not_null"),
                           ("raw_events", "dead_letter_ratio"), ("raw_events", "schema")}
    assert failed[("raw_events", "keys_unique")][0] == AssetCheckSeverity.WARN
    assert failed[("raw_events", "keys_not_null")][0] == AssetCheckSeverity.ERROR
    assert failed[("raw_events", "dead_letter_ratio")][0] == AssetCheckSeverity.ERROR
    schema_problem = failed[("raw_events", "schema")][1]
    assert "missing ingested_at" in schema_problem and "partition: int declared" in schema_problem
    assert results[("raw_events", "keys_unique")].metadata["duplicate_keys"].value == 1
    ratio = results[("raw_events", "dead_letter_ratio")].metadata["dead_letter_ratio"].value
    assert ratio == pytest.approx(10 / 22, abs=1e-6)


def test_freshness_fails_when_the_last_commit_is_older_than_allowed(spark, workdir):
    path = str(workdir / "t" / "raw_events")
    write(spark, path, [event_row(0)], schemas.RAW_EVENTS)
    assert check_freshness(spark, path, max_age_minutes=30).passed
    later = check_freshness(spark, path, max_age_minutes=30, now=time.time() + 3600)
    assert not later.passed and later.metadata["age_minutes"] >= 59


def test_a_table_that_did_not_change_gets_its_last_verdict_again_without_a_read(
    spark, spark_resource, workdir
):
    """Issue 15: a run over unchanged tables answers from the Delta logs and the previous
    verdicts; a new commit, or a table deleted and rebuilt to the same version, is read."""
    lake = DeltaLake(tables_root=str(workdir / "t"), checkpoints_root=str(workdir / "c"))
    rows = [event_row(i) for i in range(10)] + [event_row(3, event_id="dup")]
    write(spark, lake.table_path("raw_events"), rows, schemas.RAW_EVENTS)
    write(spark, lake.table_path("dead_letter_queue"), [dead_row(0)], schemas.DEAD_LETTER_QUEUE)
    with instance_for_test() as instance:
        first = run_checks(spark_resource, lake, instance=instance)
        second = run_checks(spark_resource, lake, instance=instance)
        assert first.keys() == second.keys()
        for key, result in second.items():
            if key[1] == "freshness":  # from the commit file's time: the same as Spark's
                spark_says = check_freshness(spark, lake.table_path(key[0]), 60)
                assert result.metadata["delta_version"].value == \
                    spark_says.metadata["delta_version"]
                assert abs(result.metadata["age_minutes"].value
                           - spark_says.metadata["age_minutes"]) < 0.1
                continue
            assert result.passed == first[key].passed, key
            assert "reused_from_run" in result.metadata, key
            assert "reused_from_run" not in first[key].metadata, key
        assert not second[("raw_events", "keys_unique")].passed  # the verdict, not a pass

        shutil.rmtree(lake.table_path("raw_events"))  # rebuilt to version 0, without the dup
        time.sleep(0.01)
        write(spark, lake.table_path("raw_events"), rows[:10], schemas.RAW_EVENTS)
        third = run_checks(spark_resource, lake, instance=instance)
        assert third[("raw_events", "keys_unique")].passed
        assert "reused_from_run" not in third[("raw_events", "keys_unique")].metadata


def test_both_key_checks_from_one_pass_say_what_each_check_alone_says(spark):
    """Issue 15: `check_keys` groups once for keys_not_null and keys_unique; its figures are
    those counted in plain Python over the same rows, and those of the two checks alone."""
    rows = [event_row(i) for i in range(8)] + [event_row(3, event_id="dup"),
                                               event_row(5, event_id="dup2"),
                                               event_row(5, event_id="dup3")]
    frame = spark.createDataFrame(rows, schemas.RAW_EVENTS).union(
        spark.createDataFrame([event_row(50), event_row(51)], schemas.RAW_EVENTS)
        .withColumn("offset", F.lit(None).cast("long")))
    keys = list(raw_events.keys)
    index = {f.name: i for i, f in enumerate(schemas.RAW_EVENTS.fields)}
    values = [tuple(r[index[k]] for k in keys) for r in rows] + \
        [tuple(None if k == "offset" else r[index[k]] for k in keys)
         for r in (event_row(50), event_row(51))]
    counts = {v: values.count(v) for v in values}
    expected_nulls = sum(1 for v in values if None in v)
    expected_dups = {v: c for v, c in counts.items() if c > 1}

    both = check_keys(frame, keys, keys)
    assert both["keys_not_null"].metadata == {"rows": len(values),
                                              "rows_with_null_keys": expected_nulls}
    unique = both["keys_unique"].metadata
    assert unique["duplicate_keys"] == len(expected_dups)  # offsets 3, 5 and the null key
    assert unique["rows_with_duplicate_keys"] == sum(expected_dups.values())
    alone = {"keys_not_null": check_keys_not_null(frame, keys),
             "keys_unique": check_keys_unique(frame, keys)}
    for check, outcome in both.items():
        assert (outcome.passed, outcome.description) == \
            (alone[check].passed, alone[check].description), check
    assert sorted(map(str, unique["examples"].value)) == \
        sorted(map(str, alone["keys_unique"].metadata["examples"].value))


def test_the_dead_letter_ratio_comes_from_the_materializations_row_counts(
    spark, spark_resource, workdir
):
    """Issue 15: when both tables' last materializations were recorded at their newest
    commits, the ratio is their row counts', with no count of the tables; otherwise the
    tables are counted."""
    lake = DeltaLake(tables_root=str(workdir / "t"), checkpoints_root=str(workdir / "c"))
    write(spark, lake.table_path("raw_events"), [event_row(i) for i in range(9)],
          schemas.RAW_EVENTS)
    write(spark, lake.table_path("dead_letter_queue"), [dead_row(0)], schemas.DEAD_LETTER_QUEUE)

    def record(instance, name, rows):
        last = delta_history(spark, lake.table_path(name), 1)[0]
        instance.report_runless_asset_event(AssetMaterialization(name, metadata=table_state(
            lake.table_path(name), last["version"], rows, last["timestamp"].timestamp())))

    with instance_for_test() as instance:
        # Counts that are not the tables' own: the verdict can only have come from them.
        record(instance, "raw_events", 30)
        record(instance, "dead_letter_queue", 10)
        ratio = run_checks(spark_resource, lake, instance=instance)[
            ("raw_events", "dead_letter_ratio")]
        assert ratio.metadata["dead_letter_ratio"].value == pytest.approx(10 / 40)
        assert "counted_from" in ratio.metadata

        # A commit after the materialization: its count no longer describes the table.
        spark.createDataFrame([event_row(9)], schemas.RAW_EVENTS).write.format("delta") \
            .mode("append").save(lake.table_path("raw_events"))
        ratio = run_checks(spark_resource, lake, instance=instance)[
            ("raw_events", "dead_letter_ratio")]
        assert ratio.metadata["dead_letter_ratio"].value == pytest.approx(1 / 11)
        assert "counted_from" not in ratio.metadata
