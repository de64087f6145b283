"""The JSON record parser of a declared schema (`kafka_topic(topic, schema=...)`).

Batch DataFrames through the real JVM parser, against expectations written here: a table of
single records with the verdict or row each must give, and a hypothesis test whose oracle is
plain Python over the generated values (records/json_records.py states the contract). The DDL
reader and the declaration errors need no JVM.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DecimalType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from stream_assets import StreamingTable, kafka_topic
from stream_assets.errors import DeclarationError
from stream_assets.records.checks import TextCheck, YearRange
from stream_assets.records.ddl import parse_schema
from stream_assets.records.json_records import JsonRecords, with_required
from stream_assets_tests.test_parse_events import kafka_frame

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def parse(spark, schema: str | StructType, values: list[bytes | None],
          wrong_types: str = "dead_letter") -> list[dict]:
    """Each value's row as plain Python: timestamps as microseconds, dates as ISO text."""
    records = JsonRecords(parse_schema(schema) if isinstance(schema, str) else schema,
                          wrong_types)
    frame = records(kafka_frame(spark, values))
    columns = []
    for field in frame.schema.fields:
        if field.dataType == TimestampType():
            columns.append(F.unix_micros(F.col(field.name)).alias(field.name))
        elif field.dataType.simpleString() == "date":
            columns.append(F.col(field.name).cast("string").alias(field.name))
        else:
            columns.append(F.col(field.name))
    rows = frame.select(*columns).orderBy("offset").collect()
    return [row.asDict(recursive=True) for row in rows]


# -- the schema as DDL, read without a JVM --------------------------------------------------------


def test_ddl_gives_the_spark_types_nullability_and_comments():
    schema = parse_schema(
        "id STRING NOT NULL COMMENT 'the shop id', n INT, big BIGINT, amount DECIMAL(12,2), "
        "plain DECIMAL, at TIMESTAMP, tags ARRAY<STRING>, attrs MAP<STRING, INT>, "
        "customer STRUCT<id: STRING, tier: STRING>")
    assert schema == StructType([
        StructField("id", StringType(), False, {"comment": "the shop id"}),
        StructField("n", IntegerType()),
        StructField("big", LongType()),
        StructField("amount", DecimalType(12, 2)),
        StructField("plain", DecimalType(10, 0)),
        StructField("at", TimestampType()),
        StructField("tags", ArrayType(StringType())),
        StructField("attrs", MapType(StringType(), IntegerType())),
        StructField("customer", StructType([StructField("id", StringType()),
                                            StructField("tier", StringType())])),
    ])


@pytest.mark.parametrize("ddl, says", [
    ("id STRING,, n INT", "is not Spark DDL"),
    ("id", "is not Spark DDL"),
    ("at INTERVAL DAY", "'at' has type"),
    ("m MAP<INT, STRING>", "string keys"),
])
def test_a_schema_that_cannot_work_is_refused_at_declaration(ddl, says):
    with pytest.raises(DeclarationError, match=says):
        kafka_topic("t", schema=ddl)


def test_kafka_topic_refuses_what_cannot_work_together():
    with pytest.raises(DeclarationError, match="not both"):
        kafka_topic("t", parser=lambda frame: frame, schema="id STRING")
    with pytest.raises(DeclarationError, match="record format 'avro'"):
        kafka_topic("t", schema="id STRING", format="avro")
    with pytest.raises(DeclarationError, match="required"):
        kafka_topic("t", required=("id",))
    with pytest.raises(DeclarationError, match=r"'customer\.tier' is not"):
        kafka_topic("t", schema="id STRING, customer STRUCT<id: STRING>",
                    required=("customer.tier",))
    with pytest.raises(DeclarationError, match="wrong_types must be one of"):
        kafka_topic("t", schema="id STRING", wrong_types="drop")
    with pytest.raises(DeclarationError, match="cannot have a field 'offset'"):
        kafka_topic("t", schema="offset BIGINT")
    with pytest.raises(DeclarationError, match="declare the schema too"):
        kafka_topic("t", rules={"empty id": "id <> ''"})
    with pytest.raises(DeclarationError, match="rules map a reason"):
        kafka_topic("t", schema="id STRING", rules=[("empty id", "id <> ''")])
    with pytest.raises(DeclarationError, match=r"rule 'empty id'.*idd"):
        kafka_topic("t", schema="id STRING", rules={"empty id": "idd <> ''"})
    with pytest.raises(DeclarationError, match="rule 'empty id'"):
        kafka_topic("t", schema="id STRING", rules={"empty id": "id <> AND"})
    with pytest.raises(DeclarationError, match="a rule is a reason"):
        kafka_topic("t", schema="id STRING", rules={"": "id <> ''"})


def test_required_paths_make_nested_fields_not_nullable():
    schema = with_required(parse_schema("id STRING, customer STRUCT<id: STRING, tier: STRING>"),
                           ("id", "customer.id"))
    assert not schema["id"].nullable
    assert schema["customer"].nullable
    assert [f.nullable for f in schema["customer"].dataType.fields] == [False, True]


def test_a_table_of_a_declared_topic_takes_its_columns_and_checks_its_keys():
    table = StreamingTable(name="payments", sources={"p": kafka_topic(
        "payments", schema="payment_id STRING NOT NULL, amount DECIMAL(10,2)")},
        keys=("payment_id",), partition_by=("amount",))
    assert [(f.name, f.dataType.simpleString()) for f in table.schema.fields] == [
        ("payment_id", "string"), ("amount", "decimal(10,2)"), ("_rescued_data", "string"),
        ("topic", "string"), ("partition", "int"), ("offset", "bigint")]
    with pytest.raises(DeclarationError, match="merchant"):
        StreamingTable(name="payments", sources={"p": kafka_topic(
            "payments", schema="payment_id STRING")}, keys=("merchant",))


# -- single records: the verdict or the row each must give ----------------------------------------

SCHEMA = ("id STRING NOT NULL, n INT, big BIGINT, small TINYINT, x DOUBLE, ok BOOLEAN, "
          "amount DECIMAL(6,2), at TIMESTAMP, local TIMESTAMP_NTZ, day DATE, raw BINARY, "
          "tags ARRAY<STRING>, attrs MAP<STRING, INT>, "
          "customer STRUCT<id: STRING NOT NULL, tier: STRING>, "
          "items ARRAY<STRUCT<sku: STRING, qty: INT>>")
NULLS = {name: None for name in ("n", "big", "small", "x", "ok", "amount", "at", "local", "day",
                                 "raw", "tags", "attrs", "customer", "items")}


def record(**fields) -> bytes:
    return json.dumps({"id": "a", **fields}).encode()


# (value, the error; or None and the fields that differ from {"id": "a", the rest null})
CASES = [
    (None, "null value (tombstone)"),
    (b"", "empty value"),
    (b'{"id": "\xff"}', "value is not valid UTF-8"),
    (b'{"id": "a"', "invalid JSON"),
    # Zero bytes first are UTF-16 to Jackson's reader of bytes ("{}"): still not JSON here.
    (b'\x00{\x00}', "invalid JSON"),
    (b'{"id": "a"} {}', "invalid JSON"),
    (b"{'id': 'a'}", "invalid JSON"),
    (b'["a"]', "not a JSON object"),
    (b'"a"', "not a JSON object"),
    (b'{"id": "a", "id": "b"}', "duplicate key: id"),
    (b'{"id": "a", "customer": {"id": "c", "id": "d"}}', "duplicate key: customer.id"),
    (b"{}", "missing id"),
    (b'{"id": null}', "missing id"),
    (record(n=1.0), "wrong type: n must be an integer of 32 bits"),
    (record(n="1"), "wrong type: n must be an integer of 32 bits"),
    (record(n=2**31), "wrong type: n must be an integer of 32 bits"),
    (record(small=128), "wrong type: small must be an integer of 8 bits"),
    (record(big=2**63), "wrong type: big must be an integer"),
    (record(x="1.5"), "wrong type: x must be a finite number"),
    (record(ok="true"), "wrong type: ok must be a boolean"),
    (record(amount=1.234), "wrong type: amount must be a decimal(6,2)"),
    (record(amount="10000.00"), "wrong type: amount must be a decimal(6,2)"),
    (record(amount=True), "wrong type: amount must be a decimal(6,2)"),
    (record(at="yesterday"), "wrong type: at must be an ISO-8601 timestamp"),
    (record(at="2026-13-01T00:00:00Z"), "wrong type: at must be an ISO-8601 timestamp"),
    (record(local="2026-03-01T10:00:00Z"),
     "wrong type: local must be an ISO-8601 timestamp without a time zone"),
    (record(day="2026-03-01T10:00:00"), "wrong type: day must be an ISO-8601 date"),
    (record(raw="not base64!"), "wrong type: raw must be"),
    (record(tags="a"), "wrong type: tags must be an array"),
    (record(tags=["a", 1]), "wrong type: tags[1] must be a string"),
    (record(attrs={"a": "1"}), "wrong type: attrs.a must be an integer of 32 bits"),
    (record(customer="c"), "wrong type: customer must be an object"),
    (record(customer={"tier": "gold"}), "missing customer.id"),
    (record(items=[{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}, {"sku": "c", "qty": "3"}]),
     "wrong type: items[2].qty must be an integer of 32 bits"),
    # The first verdict in the schema's order, not the record's.
    (json.dumps({"x": "no", "id": "a", "n": "no"}).encode(),
     "wrong type: n must be an integer of 32 bits"),
    (record(n=1, big=2, small=-128, x=1e300, ok=False, amount="-9999.99",
            at="2026-03-01T10:00:00.1234567+02:00", local="2026-03-01T10:00:00",
            day="0001-01-01", raw=base64.b64encode(b"\x00\xff").decode(), tags=["a", None],
            attrs={"a": 1}, customer={"id": "c"}, items=[{"sku": "a", "qty": 1}]),
     {"n": 1, "big": 2, "small": -128, "x": 1e300, "ok": False, "amount": Decimal("-9999.99"),
      # Microseconds: a seventh decimal is truncated, as Spark's own cast does.
      "at": micros(datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)),
      "local": datetime(2026, 3, 1, 10), "day": "0001-01-01", "raw": bytearray(b"\x00\xff"),
      "tags": ["a", None], "attrs": {"a": 1}, "customer": {"id": "c", "tier": None},
      "items": [{"sku": "a", "qty": 1}]}),
    (record(amount=12, at="2026-03-01T10:00:00"),  # no offset: UTC
     {"amount": Decimal("12.00"), "at": micros(datetime(2026, 3, 1, 10, tzinfo=UTC))}),
    (record(coupon="X", customer={"id": "c", "vip": True}),
     {"customer": {"id": "c", "tier": None},
      "_rescued_data": {"coupon": "X", "customer.vip": True}}),
    # Rescued slices of the text, read as bytes (ASCII) and as characters (not ASCII).
    (b'{"id": "a", "note": "say \\"hi\\"", "n": 1}',
     {"n": 1, "_rescued_data": {"note": 'say "hi"'}}),
    ('{"id": "a", "note": "d\u00e9j\u00e0 \\"vu\\"", "n": 1}'.encode(),
     {"n": 1, "_rescued_data": {"note": 'd\u00e9j\u00e0 "vu"'}}),
]


def test_each_record_gets_its_row_or_the_first_reason_in_schema_order(spark):
    rows = parse(spark, SCHEMA, [value for value, _ in CASES])
    for (value, want), row in zip(CASES, rows, strict=True):
        if isinstance(want, str):
            assert row["error"] is not None and row["error"].startswith(want), (value, row)
            assert row["id"] is None and row["_rescued_data"] is None, (value, row)
            continue
        expected = {"id": "a", **NULLS, "_rescued_data": None, "error": None, **want}
        got = {k: row[k] for k in expected}
        if got["_rescued_data"] is not None:
            got["_rescued_data"] = json.loads(got["_rescued_data"])
        assert got == expected, value


def test_rescue_mode_keeps_wrong_optional_values_and_still_refuses_required_ones(spark):
    values = [record(n="seven", customer={"id": "c", "tier": 3}, extra=[1, {"a": None}]),
              json.dumps({"id": 5}).encode()]
    rescued, refused = parse(spark, SCHEMA, values, wrong_types="rescue")
    assert (rescued["error"], rescued["n"], rescued["customer"]) == (
        None, None, {"id": "c", "tier": None})
    assert json.loads(rescued["_rescued_data"]) == {
        "n": "seven", "customer.tier": 3, "extra": [1, {"a": None}]}
    assert refused["error"] == "wrong type: id must be a string"


def test_declared_rules_refuse_what_the_schema_reads_with_the_first_broken_reason(spark):
    topic = kafka_topic("t", schema="id STRING NOT NULL, n INT", rules={
        "missing id": "id <> ''", "n out of range": "n IS NULL OR n BETWEEN 0 AND 9",
        "n must be even": "n % 2 = 0"})
    values = [b'{"id": "a", "n": 4}', b'{"id": "", "n": 40}', b'{"id": "a", "n": 40}',
              b'{"id": "a", "n": 3}', b'{"id": "a"}', b'{"id": "", "n": "x"}',
              b'{"id": "a", "n": 4, "more": 1}']
    frame = topic.parser(kafka_frame(spark, values))
    rows = frame.orderBy("offset").collect()
    # A rule judges only what the schema read; null (n % 2 of a missing n) breaks it.
    assert [r.error for r in rows] == [
        None, "missing id", "n out of range", "n must be even", "n must be even",
        "wrong type: n must be an integer of 32 bits", None]
    assert [(r.id, r.n, r._rescued_data) for r in rows if r.error is None] == [
        ("a", 4, None), ("a", 4, '{"more":1}')]


FIELD_CHECKS = {
    "unusable name": TextCheck("name", not_empty=True, no_control_characters=True, max_bytes=6),
    "at out of range": YearRange("at", 2000, 2030),
}
# (value, its error), worked out by hand; "at" comes before "name" in the schema, and the
# rule declared first still wins.
CHECKED = [
    (b'{"id": "a", "name": "ok", "at": "2000-01-01T00:00:00Z"}', None),
    (b'{"id": "a", "at": "2030-12-31T23:59:59.999999Z"}', None),  # no name: the schema's call
    (b'{"id": "a", "name": ""}', "unusable name"),
    (b'{"id": "a", "name": "a\\u0001"}', "unusable name"),
    (b'{"id": "a", "name": "a\\u007f"}', "unusable name"),
    (b'{"id": "a", "name": "a\\tb"}', "unusable name"),
    ('{"id": "a", "name": "a\u0085"}'.encode(), None),  # C1 controls are not \\p{Cntrl}
    ('{"id": "a", "name": "\u00e9\u00e9\u00e9"}'.encode(), None),  # 6 bytes
    ('{"id": "a", "name": "\u00e9\u00e9\u00e9\u00e9"}'.encode(), "unusable name"),  # 8
    ('{"id": "a", "name": "\u20ac\u20ac"}'.encode(), None),  # 6 bytes
    ('{"id": "a", "name": "\U0001f600ab"}'.encode(), None),  # 4 + 2 bytes
    ('{"id": "a", "name": "\U0001f600abc"}'.encode(), "unusable name"),
    (b'{"id": "a", "name": "\\ud83d\\ude00ab"}', None),  # the same, escaped
    (b'{"id": "a", "at": "1999-12-31T23:59:59.999999Z"}', "at out of range"),
    (b'{"id": "a", "at": "2000-01-01T00:30:00+01:00"}', "at out of range"),
    (b'{"id": "a", "at": "2031-01-01T00:30:00+01:00"}', None),
    (b'{"id": "a", "at": "2031-01-01T00:00:00Z"}', "at out of range"),
    (b'{"id": "a", "name": "", "at": "1999-01-01"}', "unusable name"),
    # The schema's verdict comes before any rule's.
    (b'{"id": "a", "name": 5, "at": "1999-01-01"}', "wrong type: name must be a string"),
    (b'{"name": ""}', "missing id"),
]


def test_field_checks_refuse_as_their_sql_would_in_the_order_declared(spark):
    schema = parse_schema("id STRING NOT NULL, at TIMESTAMP, name STRING")
    frame = kafka_frame(spark, [value for value, _ in CHECKED] + [b'{"id": "b", "name": ""}'])
    parsers = (
        JsonRecords(schema, rules=tuple(FIELD_CHECKS.items())),
        # The same rules as the SQL each check stands for: Spark's own judgement of them.
        JsonRecords(schema, rules=tuple((r, c.condition) for r, c in FIELD_CHECKS.items())),
        # After a SQL rule, checks are judged as their SQL: the order declared still holds.
        JsonRecords(schema, rules=(("id is b", "id <> 'b'"), *FIELD_CHECKS.items())),
    )
    columns = ("offset", "id", "at", "name", "error")
    tagged = [parse(frame).select(F.lit(n).alias("parser"), *columns)
              for n, parse in enumerate(parsers)]
    rows = tagged[0].unionByName(tagged[1]).unionByName(tagged[2]).orderBy(
        "parser", "offset").collect()
    per_parser = len(CHECKED) + 1
    checked, in_sql, mixed = (rows[n * per_parser:(n + 1) * per_parser]
                              for n in range(len(parsers)))
    want = [error for _, error in CHECKED]
    assert [r.error for r in checked] == [*want, "unusable name"]
    assert [r.error for r in mixed] == [*want, "id is b"]
    assert [r[1:] for r in in_sql] == [r[1:] for r in checked]
    assert [r[1:] for r in mixed[:-1]] == [r[1:] for r in checked[:-1]]
    # A record a check refuses keeps its fields, as one a SQL rule refuses does.
    assert (checked[2].id, checked[2].name) == ("a", "")


def test_field_checks_are_checked_at_declaration():
    with pytest.raises(DeclarationError, match="no such top-level field"):
        kafka_topic("t", schema="id STRING", rules={"bad": TextCheck("name", max_bytes=3)})
    with pytest.raises(DeclarationError, match="the field is int, not a string"):
        kafka_topic("t", schema="id INT", rules={"bad": TextCheck("id", not_empty=True)})
    with pytest.raises(DeclarationError, match="not a timestamp"):
        kafka_topic("t", schema="id STRING", rules={"bad": YearRange("id")})
    with pytest.raises(DeclarationError, match="checks nothing"):
        TextCheck("id")
    with pytest.raises(DeclarationError, match="max_bytes"):
        TextCheck("id", max_bytes=-1)
    with pytest.raises(DeclarationError, match="years are from 1 to 9999"):
        YearRange("at", 2030, 2000)
    assert TextCheck("a b", not_empty=True, max_bytes=3).condition == (
        "`a b` IS NULL OR (`a b` <> '' AND octet_length(`a b`) <= 3)")


def test_two_schemas_in_one_session_each_read_their_own(spark):
    first = parse(spark, "a INT", [b'{"a": 1, "b": "x"}'])[0]
    second = parse(spark, "b STRING", [b'{"a": 1, "b": "x"}'])[0]
    assert (first["a"], json.loads(first["_rescued_data"])) == (1, {"b": "x"})
    assert (second["b"], json.loads(second["_rescued_data"])) == ("x", {"a": 1})


# -- generated records against a plain-Python oracle ----------------------------------------------

# A 10-field schema with a decimal, a nested struct and an array, as the benchmark uses.
TEN = ("payment_id STRING NOT NULL, merchant STRING, amount DECIMAL(10,2) NOT NULL, "
       "quantity INT, fee DOUBLE, refunded BOOLEAN, paid_at TIMESTAMP, "
       "card STRUCT<brand: STRING, last4: STRING NOT NULL>, tags ARRAY<STRING>, "
       "attempt BIGINT")
ORDER = ("payment_id", "merchant", "amount", "quantity", "fee", "refunded", "paid_at", "card",
         "tags", "attempt")
REQUIRED = {"payment_id", "amount"}


def _valid(name: str):
    """(JSON value, the column value Spark must hold) for a well-typed field."""
    if name in ("payment_id", "merchant"):
        return st.text(max_size=8).map(lambda s: (s, s))
    if name == "amount":
        return st.integers(-10**10 + 1, 10**10 - 1).flatmap(lambda cents: st.sampled_from([
            (Decimal(cents) / 100, Decimal(cents) / 100),
            (str(Decimal(cents) / 100), Decimal(cents) / 100)]))
    if name == "quantity":
        return st.integers(-2**31, 2**31 - 1).map(lambda n: (n, n))
    if name == "attempt":
        return st.integers(-2**63, 2**63 - 1).map(lambda n: (n, n))
    if name == "fee":
        return st.floats(allow_nan=False, allow_infinity=False).map(lambda f: (f, f))
    if name == "refunded":
        return st.booleans().map(lambda b: (b, b))
    if name == "paid_at":
        return st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30),
                            timezones=st.just(UTC)).map(
            lambda t: (t.isoformat().replace("+00:00", "Z"), micros(t)))
    if name == "card":
        return st.tuples(st.one_of(st.none(), st.text(max_size=4)), st.text(max_size=4)).map(
            lambda c: ({"brand": c[0], "last4": c[1]}, {"brand": c[0], "last4": c[1]}))
    return st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=3).map(
        lambda tags: (tags, tags))


# A wrong value for each field, and what its reason says the field must be.
WRONG = {
    "payment_id": (7, "a string"), "merchant": (["m"], "a string"),
    "amount": (Decimal("0.001"), "a decimal(10,2)"), "quantity": (2**31, "an integer of 32 bits"),
    "fee": ("1.5", "a finite number"), "refunded": (0, "a boolean"),
    "paid_at": ("2026-02-30T00:00:00Z", "an ISO-8601 timestamp"),
    "card": ([1], "an object"), "tags": ({"a": "b"}, "an array"), "attempt": (1.5, "an integer"),
}


@st.composite
def payments(draw):
    """(JSON text, the error the parser must give, or the row it must give)."""
    document, row, error = {}, {}, None
    for name in ORDER:
        kind = draw(st.sampled_from(["valid", "valid", "valid", "absent", "null", "wrong",
                                     "card_missing_last4" if name == "card" else "valid"]))
        verdict = None
        if kind == "valid":
            document[name], row[name] = draw(_valid(name))
        elif kind == "wrong":
            document[name] = WRONG[name][0]
            verdict = f"wrong type: {name} must be {WRONG[name][1]}"
        elif kind == "card_missing_last4":
            document[name] = {"brand": "visa"}
            verdict = "missing card.last4"
        else:
            if kind == "null":
                document[name] = None
            row[name] = None
            if name in REQUIRED:
                verdict = f"missing {name}"
        error = error or verdict
    extra = draw(st.dictionaries(st.sampled_from(["coupon", "note", "v2"]),
                                 st.one_of(st.integers(), st.text(max_size=3)), max_size=2))
    document.update(extra)
    keys = draw(st.permutations(list(document)))
    text = "{" + ", ".join(f"{json.dumps(k)}: {_json(document[k])}" for k in keys) + "}"
    row["_rescued_data"] = extra or None
    return text.encode(), error, row


def _json(value) -> str:
    if isinstance(value, Decimal):
        return str(value)  # a JSON number with exactly these digits
    return json.dumps(value)


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(payments(), min_size=1, max_size=40))
def test_generated_payments_equal_the_plain_python_oracle(spark, batch):
    rows = parse(spark, TEN, [value for value, _, _ in batch])
    for (value, error, want), row in zip(batch, rows, strict=True):
        if error is not None:
            assert row["error"] == error, value
            assert all(row[name] is None for name in ORDER), value
            continue
        assert row["error"] is None, (value, row["error"])
        got = {name: row[name] for name in [*ORDER, "_rescued_data"]}
        if got["_rescued_data"] is not None:
            got["_rescued_data"] = json.loads(got["_rescued_data"])
        assert got == want, value


def test_dates_span_years_one_to_9999_and_no_further(spark):
    rows = parse(spark, "day DATE, at TIMESTAMP",
                 [b'{"day": "9999-12-31", "at": "0001-01-01T00:00:00Z"}',
                  b'{"day": "10000-01-01"}', b'{"at": "0000-12-31T23:59:59Z"}'])
    assert (rows[0]["day"], rows[0]["at"]) == (
        str(date(9999, 12, 31)), micros(datetime(1, 1, 1, tzinfo=UTC)))
    assert rows[1]["error"] == "wrong type: day must be an ISO-8601 date"
    assert rows[2]["error"] == "wrong type: at must be an ISO-8601 timestamp"
