"""A table declaration: what it refuses at load, and the rows its query writes (on batches)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dagster import FreshnessPolicy
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from stream_assets import (
    DeclarationError,
    DeltaMerge,
    Maintenance,
    StreamingTable,
    build_definitions,
    kafka_topic,
    static,
    upstream,
)
from stream_assets.tables import dead_letters
from stream_assets.tables.catalog import TABLES, impression_clicks, raw_events
from stream_assets.tables.declaration import DEFAULT_FRESHNESS
from stream_assets_tests.test_parse_events import kafka_frame as kafka_bytes_frame

SCHEMA = StructType([StructField("id", StringType()), StructField("n", LongType())])


def ids(events: DataFrame) -> DataFrame:
    return events.select("id")


def parse_ids(kafka: DataFrame) -> DataFrame:
    """A parser: Kafka's columns kept, the id parsed, a reason for values that have none."""
    text = F.col("value").cast("string")
    return kafka.select(
        "*", text.alias("id"),
        F.when(text.isNull() | (text == ""), F.lit("no id")).alias("error"),
    )


def kafka_frame(spark, values: list[str | None]) -> DataFrame:
    return kafka_bytes_frame(spark, [None if v is None else v.encode() for v in values])


def table(**fields) -> StreamingTable:
    declared = {"name": "t", "sources": {"events": upstream("raw_events")}, "transform": ids}
    declared.update(fields)
    return StreamingTable(**declared)


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"name": "bad name"}, "name", "letters, digits and underscores"),
        ({"sources": {}}, "sources", "at least one source"),
        ({"sources": {"events": "raw_events"}}, "sources", "not a source"),
        ({"sources": {"users": static("u")}, "transform": lambda users: users}, "sources",
         "streaming source"),
        ({"transform": lambda rows: rows}, "transform", "rows have no source"),
        ({"sources": {"events": upstream("raw_events"), "users": static("u")}}, "transform",
         "users match no parameter"),
        ({"transform": None, "sources": {"a": upstream("x"), "b": upstream("y")}}, "transform",
         "several sources"),
        ({"keys": "id"}, "keys", "tuple of strings"),
        ({"schema": SCHEMA, "keys": ("id", "missing")}, "keys", "missing not in the schema"),
        ({"schema": SCHEMA, "partition_by": ("day",)}, "partition_by", "day not in the schema"),
        ({"schema": SCHEMA, "column_descriptions": {"nope": "?"}}, "column_descriptions",
         "nope not in the schema"),
        ({"keys": ("id",), "nullable_keys": ("n",)}, "nullable_keys", "n not among the keys"),
        ({"sink": DeltaMerge()}, "keys", "declare them"),
        ({"dead_letters": "dl"}, "dead_letters", "no source has a parser"),
        ({"freshness": "1 hour"}, "freshness", "not a FreshnessPolicy"),
        ({"table_properties": {"owner": "me"}}, "table_properties", "put other metadata in tags"),
        ({"table_properties": {"delta.appendOnly": True}}, "table_properties",
         "must be a string"),
        ({"table_properties": "delta.appendOnly=true"}, "table_properties", "a mapping"),
        ({"late_rows_alert": -1}, "late_rows_alert", "a number of rows"),
        ({"late_rows_alert": "1000"}, "late_rows_alert", "a number of rows"),
        ({"maintenance": {"compact": True}}, "maintenance", "not a Maintenance"),
        ({"schema": SCHEMA, "partition_by": ("id",), "maintenance": Maintenance(
            zorder_by=("id",))}, "maintenance", "id is a partition column"),
        ({"schema": SCHEMA, "maintenance": Maintenance(zorder_by=("day",))}, "maintenance",
         "day not in the schema"),
        ({"maintenance": Maintenance(log_retention="a week")}, "maintenance",
         "a Delta interval"),
        ({"maintenance": Maintenance(vacuum_retention=timedelta(hours=-1))}, "maintenance",
         "timedelta of 0 or more"),
        ({"maintenance": Maintenance(log_retention="7 days"),
          "table_properties": {"delta.logRetentionDuration": "7 days"}}, "maintenance",
         "declare it in one place"),
    ],
)
def test_a_wrong_declaration_is_refused_naming_the_table_and_the_field(fields, field, says):
    with pytest.raises(DeclarationError) as raised:
        table(**fields)
    message = str(raised.value)
    assert message.startswith(f"table {fields.get('name', 't')!r}, field {field!r}"), message
    assert says in message, message


def test_maintenance_properties_are_set_at_start_but_never_written_with_the_batches():
    kept = table(maintenance=Maintenance(vacuum_retention=timedelta(days=2),
                                         log_retention="14 days"),
                 table_properties={"delta.appendOnly": "true"})
    assert kept.managed_properties == (
        ("delta.appendOnly", "true"),
        ("delta.deletedFileRetentionDuration", "interval 172800 seconds"),
        ("delta.logRetentionDuration", "14 days"))
    assert kept.property_pairs == (("delta.appendOnly", "true"),)
    assert table().managed_properties == ()


def test_tables_that_do_not_fit_together_are_refused_when_definitions_are_built():
    orphan = table(name="orphan", sources={"events": upstream("nowhere")})
    with pytest.raises(DeclarationError, match=r"'orphan', field 'sources'.*'nowhere'"):
        build_definitions([orphan])
    twice = table(name="raw_events", sources={"events": kafka_topic("events")}, transform=None)
    with pytest.raises(DeclarationError, match="already written"):
        build_definitions([raw_events, twice])
    a = table(name="a", sources={"events": upstream("b")})
    b = table(name="b", sources={"events": upstream("a")})
    with pytest.raises(DeclarationError, match="cycle"):
        build_definitions([a, b])
    elsewhere = table(name="elsewhere", sources={"events": kafka_topic("e", resource="other")},
                      transform=None)
    with pytest.raises(DeclarationError, match="resource 'other'"):
        build_definitions([elsewhere])


def test_each_table_carries_its_freshness_policy_and_its_dead_letters_none():
    hourly = FreshnessPolicy.cron(deadline_cron="0 * * * *", lower_bound_delta=timedelta(hours=1))
    tables = [raw_events, table(name="hourly", freshness=hourly), table(name="never",
                                                                          freshness=None)]
    graph = build_definitions(tables).resolve_asset_graph()
    policy = {key.to_user_string(): graph.get(key).freshness_policy
              for key in graph.get_all_asset_keys()}
    assert policy["raw_events"] == DEFAULT_FRESHNESS
    assert DEFAULT_FRESHNESS.fail_window.to_timedelta() == timedelta(hours=1)
    assert policy["dead_letter_queue"] is None
    assert policy["hourly"] == hourly and policy["never"] is None


def test_the_demo_declares_each_fact_once():
    assert raw_events.tables == ("raw_events", "dead_letter_queue")
    assert impression_clicks.tables == ("impression_clicks", "impression_clicks_dead_letters")
    assert raw_events.row_keys_unique == ("topic", "partition", "offset")
    assert impression_clicks.nullable_keys == ("click_id",)
    merges = [t for t in TABLES if isinstance(t.sink, DeltaMerge)]
    assert merges and all(t.row_keys_unique == t.keys for t in merges)


def test_a_table_without_transform_routes_each_record_once_in_one_pass(spark):
    declared = StreamingTable(name="ids", sources={"events": kafka_topic("e", parser=parse_ids)})
    values = ["a", None, "b", "", "c"]
    out = declared.build_stream({"events": kafka_frame(spark, values)}).cache()
    rows = dead_letters.table_rows(out).collect()
    letters = dead_letters.letters(out).collect()
    assert sorted(r["id"] for r in rows) == ["a", "b", "c"]
    assert sorted((r["offset"], r["error"], r["refused_by"]) for r in letters) == [
        (1, "no id", "ids"), (3, "no id", "ids")]
    assert [r["raw_bytes"] for r in sorted(letters, key=lambda r: r["offset"])] == [None, b""]
    assert "error" not in dead_letters.table_rows(out).columns
    # One scan of the input: no union in the plan.
    assert "Union" not in out._jdf.queryExecution().optimizedPlan().toString()


def test_a_transform_gets_usable_rows_by_name_and_refused_ones_ride_along(spark):
    def pair(left: DataFrame, right: DataFrame) -> DataFrame:
        return left.select("id").unionByName(right.select("id"))

    declared = StreamingTable(
        name="pairs", transform=pair,
        sources={"left": kafka_topic("l", parser=parse_ids),
                 "right": kafka_topic("r", parser=parse_ids)},
    )
    out = declared.build_stream({"left": kafka_frame(spark, ["a", ""]),
                                 "right": kafka_frame(spark, [None, "b"])})
    assert sorted(r["id"] for r in dead_letters.table_rows(out).collect()) == ["a", "b"]
    letters = dead_letters.letters(out).collect()
    assert sorted((r["offset"], r["error"]) for r in letters) == [(0, "no id"), (1, "no id")]
    assert declared.dead_letter_table == "pairs_dead_letters"


def test_dead_letters_hold_readable_text_and_the_exact_bytes(spark):
    frame = spark.createDataFrame([(None, b"\xff\xfe", "e", 0, 0)],
                                  "key binary, value binary, topic string, partition int, "
                                  "offset long")

    def refuse_all(kafka: DataFrame) -> DataFrame:
        return kafka.select("*", F.lit("no").alias("error"))

    declared = StreamingTable(name="ids", sources={"events": kafka_topic("e", parser=refuse_all)})
    (letter,) = dead_letters.letters(declared.build_stream({"events": frame})).collect()
    assert letter["raw_bytes"] == b"\xff\xfe"
    assert letter["raw_value"] == "\ufffd\ufffd"


def test_a_parser_that_drops_kafka_columns_is_refused_with_what_it_lacks(spark):
    def lossy(kafka: DataFrame) -> DataFrame:
        return kafka.select(F.col("value").cast("string").alias("id"), F.lit(None).alias("error"))

    declared = StreamingTable(name="ids", sources={"events": kafka_topic("e", parser=lossy)})
    with pytest.raises(DeclarationError, match=r"'ids', source 'events'.*lacks key, value"):
        declared.build_stream({"events": kafka_frame(spark, ["a"])})
