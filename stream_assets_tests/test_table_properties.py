"""A declaration's Delta table properties: on the table from its first commit, whatever the sink,
and changed on the table when the declaration changes. Read back with delta-rs."""

from __future__ import annotations

import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize
from deltalake import DeltaTable

from stream_assets.resources import DeltaLake
from stream_assets.tables.assets import build_asset
from stream_assets.tables.declaration import StreamingTable
from stream_assets.tables.runner import StreamContext, catch_up
from stream_assets.tables.sources import upstream
from stream_assets.tables.writes import DeltaAppend, DeltaMerge

pytestmark = pytest.mark.integration

RETENTION = {"delta.logRetentionDuration": "interval 60 days"}


def stats_columns(path: str) -> list[set[str]]:
    """For each file of the table, the columns its statistics cover."""
    actions = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pydict()
    columns = [k.removeprefix("min.") for k in actions if k.startswith("min.")]
    return [{c for c in columns if actions[f"min.{c}"][i] is not None}
            for i in range(len(actions["path"]))]


@pytest.mark.parametrize("sink", [DeltaAppend(), DeltaMerge(stamp_column=None)],
                         ids=["append", "merge"])
def test_declared_properties_hold_from_the_first_commit_and_follow_the_declaration(
    spark, workdir, sink
):
    lake = DeltaLake(tables_root=str(workdir / "t"), checkpoints_root=str(workdir / "c"))
    ctx = StreamContext(spark=spark, lake=lake, source=None)
    source, path = lake.table_path("src"), lake.table_path("props")
    first = [("a", 1), ("b", 2)]
    spark.createDataFrame(first, "k string, n int").write.format("delta").save(source)

    def declared(properties: dict[str, str]) -> StreamingTable:
        return StreamingTable(name="props", sources={"src": upstream("src")}, sink=sink,
                              keys=("k",), table_properties=properties)

    catch_up(declared({"delta.dataSkippingStatsColumns": "k", **RETENTION}), ctx)
    table = DeltaTable(path)
    assert table.metadata().configuration == {"delta.dataSkippingStatsColumns": "k",
                                              **RETENTION}
    # In effect from the first commit: its files have statistics for k only.
    assert stats_columns(path) == [{"k"}] * len(stats_columns(path))

    later = [("c", 3)]
    spark.createDataFrame(later, "k string, n int").write.format("delta").mode("append") \
        .save(source)
    catch_up(declared({"delta.dataSkippingStatsColumns": "k,n", **RETENTION}), ctx)
    table = DeltaTable(path)
    assert table.metadata().configuration == {"delta.dataSkippingStatsColumns": "k,n",
                                              **RETENTION}
    assert {"k", "n"} in stats_columns(path)  # the new batch's file
    assert sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["k"]) == \
        [{"k": k, "n": n} for k, n in first + later]

    # The same declaration again: nothing to set, no commit beyond the batch's.
    version = table.version()
    catch_up(declared({"delta.dataSkippingStatsColumns": "k,n", **RETENTION}), ctx)
    assert DeltaTable(path).version() == version


def test_a_run_with_nothing_new_still_applies_changed_properties(spark, spark_resource, workdir):
    """A run that finds nothing new starts no query, unless the declaration's properties
    changed since the last materialization: then the query starts and sets them."""
    lake = DeltaLake(tables_root=str(workdir / "t"), checkpoints_root=str(workdir / "c"))
    rows = [("a", 1), ("b", 2)]
    spark.createDataFrame(rows, "k string, n int").write.format("delta") \
        .save(lake.table_path("src"))
    instance = DagsterInstance.ephemeral()

    def run(stats_columns: str) -> dict:
        table = StreamingTable(name="props", sources={"src": upstream("src")},
                               table_properties={"delta.dataSkippingStatsColumns": stats_columns})
        result = materialize([build_asset(table)], resources={"spark": spark_resource,
                                                              "lake": lake}, instance=instance)
        assert result.success
        [meta] = [m.metadata for m in result.asset_materializations_for_node("props")]
        return meta

    def configuration() -> dict[str, str]:
        return DeltaTable(lake.table_path("props")).metadata().configuration

    first = run("k")
    assert first["query_started"].value is True
    assert first["table_properties"].value == {"delta.dataSkippingStatsColumns": "k"}

    same = run("k")
    assert same["query_started"].value is False
    assert same["table_properties"].value == {"delta.dataSkippingStatsColumns": "k"}

    changed = run("k,n")
    assert changed["query_started"].value is True
    assert changed["query_started_because"].value.endswith(
        "but the declared table properties changed (delta.dataSkippingStatsColumns)")
    assert changed["rows_read"].value == 0
    assert configuration() == {"delta.dataSkippingStatsColumns": "k,n"}
    assert sorted(DeltaTable(lake.table_path("props")).to_pyarrow_table().to_pylist(),
                  key=lambda r: r["k"]) == [{"k": k, "n": n} for k, n in rows]

    assert run("k,n")["query_started"].value is False
