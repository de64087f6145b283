"""What a changed declared schema does to a written table (schema_evolution.py), without a JVM.

The end-to-end case, a producer's new field rescued and then declared, is in
test_example_orders.py, on the example's tables.
"""

from __future__ import annotations

import pytest

from stream_assets.errors import SchemaChangeRefused
from stream_assets.records.ddl import parse_schema
from stream_assets.tables.schema_evolution import additions

WRITTEN = parse_schema("id STRING, amount DECIMAL(12,2), customer STRUCT<id: STRING>")


@pytest.mark.parametrize("declared, added", [
    ("id STRING, amount DECIMAL(12,2), customer STRUCT<id: STRING>", []),
    # Names resolve without case, and a column may move in the declaration.
    ("customer STRUCT<ID: STRING>, AMOUNT DECIMAL(12,2), id STRING", []),
    ("id STRING, amount DECIMAL(12,2), customer STRUCT<id: STRING>, coupon STRING",
     ["`coupon` string"]),
    ("id STRING, amount DECIMAL(12,2), customer STRUCT<id: STRING, vip: BOOLEAN>, "
     "tags ARRAY<STRING>", ["`customer`.`vip` boolean", "`tags` array<string>"]),
])
def test_new_nullable_columns_and_struct_fields_are_added(declared, added):
    assert [a.sql() for a in additions("t", WRITTEN, parse_schema(declared))] == added


@pytest.mark.parametrize("declared, says", [
    ("id STRING, customer STRUCT<id: STRING>", "amount (decimal(12,2)) is no longer declared"),
    ("id STRING, amount DOUBLE, customer STRUCT<id: STRING>",
     "amount changes type from decimal(12,2) to double"),
    ("id STRING, amount DECIMAL(12,2), customer STRUCT<id: BIGINT>",
     "customer.id changes type from string to bigint"),
    ("id STRING, amount DECIMAL(12,2), customer STRUCT<id: STRING>, n INT NOT NULL",
     "n is a new required"),
    ("id STRING, amount DECIMAL(12,2), customer STRING",
     "customer changes type from struct<id:string> to string"),
])
def test_anything_else_is_refused_with_the_column_both_types_and_the_ways_out(declared, says):
    with pytest.raises(SchemaChangeRefused) as refused:
        additions("payments", WRITTEN, parse_schema(declared))
    text = str(refused.value)
    assert says in text and "table 'payments'" in text, text
    assert "change the declaration back" in text and "full refresh" in text
