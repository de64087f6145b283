"""An expectation's SQL is checked when the code location loads, without a JVM."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from stream_assets import (
    DeclarationError,
    StreamingTable,
    expect,
    expect_or_drop,
    expect_or_fail,
    kafka_topic,
    upstream,
)
from stream_assets.records.ddl import parse_schema
from stream_assets.tables.expectation_sql import problem

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("order_id STRING NOT NULL, country STRING, amount DECIMAL(12,2), ordered_at TIMESTAMP, "
         "customer STRUCT<id: STRING, address: STRUCT<city: STRING>>, "
         "items ARRAY<STRUCT<sku: STRING, qty: INT>>, tags MAP<STRING, STRING>, `unit price` INT")
COLUMNS = parse_schema(ORDER)


def orders(*rules, **fields) -> StreamingTable:
    """A table whose columns come from its topic's declared records."""
    return StreamingTable(name="orders", sources={"orders": kafka_topic("orders", schema=ORDER)},
                          expectations=rules, **fields)


@pytest.mark.parametrize("condition", [
    "amount >= 0",
    "amount IS NULL OR amount >= 0",
    "order_id IS NOT NULL AND order_id <> ''",
    "customer.id IS NOT NULL",                      # a field of a struct column
    "customer.address.city <> ''",
    "CUSTOMER.Id IS NOT NULL AND Amount > 0",       # any case, as Spark by default
    "`unit price` > 0",                             # backticks
    "`customer`.`id` IS NOT NULL",
    "upper(country) IN ('DE', 'FR') AND length(order_id) = 12",  # functions, literals
    "try_cast(tags['duration'] AS DOUBLE) IS NOT NULL",
    "tags.channel = 'web'",                         # a map's key
    "items[0].qty > 0 AND size(items) > 0",
    "items.qty IS NOT NULL",                        # each element's field, as an array
    "exists(items, i -> i.qty > 0 AND i.sku IS NOT NULL)",  # i is a lambda's, not a column
    "aggregate(items, 0, (total, i) -> total + i.qty) < 1000",
    "ordered_at > current_timestamp() - INTERVAL 7 DAYS AND ordered_at <= current_timestamp",
    "date'2024-01-01' <= ordered_at AND amount < 1.5BD * 1000000",
    "CASE WHEN country = 'DE' THEN amount > 10 ELSE true END",
    "o.amount > 0",                                 # the DataFrame's name before the column
    "offset >= 0 AND _rescued_data IS NULL",        # the record's position, what did not fit
    "key IS NOT NULL",                              # judged before the Kafka columns go
])
def test_valid_spark_sql_over_the_tables_columns_is_accepted(condition):
    table = orders(expect("rule", condition))
    assert table.expectations[0].condition == condition


@pytest.mark.parametrize(("condition", "says"), [
    ("amount > AND", "does not parse as Spark SQL: Required keyword: 'expression' missing "
                     "for GT at column 12, near 'AND'"),
    ("amount >= 0 AND (country = 'DE'", "does not parse as Spark SQL"),
    ("country = 'DE", "is a quote left open?"),
    ("SELECT * FROM orders WHERE amount > 0", "is a query"),
    ("amount > 0; country = 'DE'", "is one expression, without ';'"),
    ("*", "is `*`"),
    ("42", "is a constant"),
])
def test_sql_that_is_not_one_condition_is_refused(condition, says):
    assert says in problem(condition, None)
    assert says in problem(condition, COLUMNS)


@pytest.mark.parametrize(("condition", "says"), [
    ("amount_usd >= 0", "names amount_usd, which is not a column of the table; its columns: "
                        "order_id, country, amount, ordered_at, customer, items, tags, "
                        "`unit price`"),
    ("customer.name IS NOT NULL", "but customer has no field name; its fields: id, address"),
    ("customer.address.zip <> ''", "names customer.address.zip, but customer.address has "
                                   "no field zip; its fields: city"),
    ("items.price > 0", "but items has no field price; its fields: sku, qty"),
    ("unit_price > 0", "names unit_price, which is not a column"),
    ("exists(items, i -> i.qty > quantity)", "names quantity, which is not a column"),
    ("`order id` IS NOT NULL", "names `order id`, which is not a column"),
])
def test_a_column_the_table_does_not_have_is_refused_with_its_columns(condition, says):
    assert says in problem(condition, COLUMNS)
    # Where the columns are not known, only the SQL is checked.
    assert problem(condition, None) is None


def test_the_error_names_the_table_the_expectation_and_the_condition():
    with pytest.raises(DeclarationError) as raised:
        orders(expect("positive", "amount > 0"), expect_or_drop("x", "amount > AND"))
    assert str(raised.value).startswith(
        "table 'orders', expectation 'x': 'amount > AND' does not parse as Spark SQL")
    with pytest.raises(DeclarationError) as raised:
        orders(expect_or_fail("has_customer", "customer.name IS NOT NULL"))
    assert str(raised.value).startswith(
        "table 'orders', expectation 'has_customer': 'customer.name IS NOT NULL' names "
        "customer.name, but customer has no field name; its fields: id, address")


def test_a_transform_table_without_schema_checks_only_that_the_sql_parses():
    def doubled(rows):
        return rows.select((F.col("amount") * 2).alias("doubled"))

    table = StreamingTable(name="doubled", sources={"rows": upstream("orders")},
                           transform=doubled, expectations=(expect("small", "anything < 20"),))
    assert table.schema is None
    with pytest.raises(DeclarationError, match=r"'doubled', expectation 'small'.*does not parse"):
        StreamingTable(name="doubled", sources={"rows": upstream("orders")},
                       transform=doubled, expectations=(expect("small", "doubled < "),))


def test_a_transform_table_with_a_schema_checks_against_that_schema():
    def doubled(rows):
        return rows.select((F.col("amount") * 2).alias("doubled"))

    declared = {"name": "doubled", "sources": {"rows": upstream("orders")},
                "transform": doubled, "schema": parse_schema("doubled DECIMAL(13,2)")}
    StreamingTable(**declared, expectations=(expect("small", "doubled < 20"),))
    # The transform's input columns are not the table's: neither are Kafka's.
    for condition in ("amount < 10", "key IS NOT NULL"):
        with pytest.raises(DeclarationError, match=f"names {condition.split()[0]}, which is not"):
            StreamingTable(**declared, expectations=(expect("small", condition),))


def test_a_topic_without_declared_records_checks_only_that_the_sql_parses():
    StreamingTable(name="raw", sources={"raw": kafka_topic("raw")},
                   expectations=(expect("has_value", "value IS NOT NULL AND whatever > 0"),))
    with pytest.raises(DeclarationError, match="'raw', expectation 'has_value'"):
        StreamingTable(name="raw", sources={"raw": kafka_topic("raw")},
                       expectations=(expect("has_value", "value IS NOT"),))


BAD_DEFINITIONS = """\
from stream_assets import StreamingTable, build_definitions, expect_or_drop, kafka_topic

orders = StreamingTable(
    name="orders",
    sources={"orders": kafka_topic("orders", schema="order_id STRING, amount BIGINT")},
    expectations=(expect_or_drop("not_negative", "amount_usd >= 0"),),
)
defs = build_definitions([orders])
"""


def test_a_code_location_with_a_wrong_expectation_fails_to_load_without_a_jvm(tmp_path):
    """What `dagster definitions validate` (and `dg check defs`) does: import the module.
    No Java is reachable, so a check that needed a JVM would fail otherwise."""
    (tmp_path / "wrong_defs.py").write_text(textwrap.dedent(BAD_DEFINITIONS))
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "DAGSTER_HOME": str(tmp_path),
           "PATH": str(Path(sys.executable).parent),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    validated = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
         "-f", str(tmp_path / "wrong_defs.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    output = validated.stdout + validated.stderr
    assert validated.returncode != 0, output
    assert ("DeclarationError: table 'orders', expectation 'not_negative': 'amount_usd >= 0' "
            "names amount_usd, which is not a column of the table; its columns: order_id, "
            "amount") in output

