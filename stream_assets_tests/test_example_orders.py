"""The example project in examples/orders, as a user would run it: its own topic, generator,
parser and tables, declared with the public API only, materialized through Dagster against the
session's real broker, Spark and Delta.

The expectations come from the generator's records in plain Python (which orders are good,
their fields, per-customer sums with Decimal), never from what the pipeline wrote. Tables are
read back twice: with Spark, and with delta-rs (`deltalake`), a reader that shares no code with
the writer, so a table only Spark could make sense of would fail here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from dagster import AssetKey, AssetsDefinition, DagsterInstance, materialize
from deltalake import DeltaTable
from pyspark.sql import functions as F

from stream_assets import DeltaLake, KafkaSource

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "orders" / "orders_pipeline.py"

# The contract of examples/orders/README.md: why each kind of bad record is refused.
REASONS = {
    "not_json": "invalid JSON",
    "missing_order_id": "missing order_id",
    "negative_amount": "amount_not_negative",
    "non_numeric_amount": "wrong type: amount must be a decimal(12,2)",
    "bad_timestamp": "wrong type: ordered_at must be an ISO-8601 timestamp",
    "tombstone": "null value (tombstone)",
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")
# The fields the example's ORDER schema names (its DDL, read by hand).
DECLARED = {"order_id", "customer_id", "country", "amount", "ordered_at"}
TABLE_NAMES = ("orders", "orders_dead_letters", "order_totals")


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example loaded from its file, as `dagster dev -f` does: it is not a package."""
    spec = importlib.util.spec_from_file_location("orders_pipeline", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


# -- plain-Python expectations -------------------------------------------------------------------


def micros(moment: datetime) -> int:
    if moment.tzinfo is None:  # Spark and delta-rs give UTC; naive means UTC here
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def expected_orders(records: list) -> dict[str, dict[str, Any]]:
    """order_id -> the row `orders` must hold, from the generator's JSON objects."""
    rows = {}
    for record in records:
        if record.order is None:
            continue
        order = record.order
        rows[order["order_id"]] = {
            "customer_id": order["customer_id"],
            "country": order["country"],
            # The JSON number's shortest text; the cast to cents is exact for two decimals.
            "amount": Decimal(repr(order["amount"])).quantize(CENT),
            "ordered_at": micros(datetime.fromisoformat(order["ordered_at"])),
            # Whatever the record holds beyond the declared fields, as JSON by field name.
            "_rescued_data": {k: v for k, v in order.items() if k not in DECLARED} or None,
        }
    return rows


def expected_totals(records: list) -> dict[str, dict[str, Any]]:
    """customer_id -> orders, total amount, first and last order time of the good orders."""
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in expected_orders(records).values():
        by_customer[row["customer_id"]].append(row)
    return {
        customer: {
            "order_count": len(rows),
            "total_amount": sum((r["amount"] for r in rows), Decimal(0)),
            "first_order_at": min(r["ordered_at"] for r in rows),
            "last_order_at": max(r["ordered_at"] for r in rows),
        }
        for customer, rows in by_customer.items()
    }


def expected_dead_letters(records: list) -> dict[bytes, tuple[str, bytes | None]]:
    """Record key -> (reason, exact value bytes) of every bad record."""
    return {r.key: (REASONS[r.kind], r.value) for r in records if r.order is None}


# -- reading the tables back, two independent ways -----------------------------------------------


def spark_rows(spark, path: str) -> list[dict[str, Any]]:
    frame = spark.read.format("delta").load(path)
    # Timestamps as epoch micros: collect() would convert them with the local time zone.
    stamps = [f.name for f in frame.schema.fields if f.dataType.typeName() == "timestamp"]
    for name in stamps:
        frame = frame.withColumn(name, F.unix_micros(name))
    rows = []
    for row in frame.collect():
        row = row.asDict()
        for name in ("raw_bytes", "key"):
            if row.get(name) is not None:
                row[name] = bytes(row[name])
        rows.append(row)
    return rows


def delta_rs_rows(path: str) -> list[dict[str, Any]]:
    rows = DeltaTable(path).to_pyarrow_table().to_pylist()
    for row in rows:
        for name, value in row.items():
            if isinstance(value, datetime):
                row[name] = micros(value)
    return rows


def readers(spark, lake: DeltaLake, table: str) -> dict[str, list[dict[str, Any]]]:
    """The table's rows by reader: delta-rs always, Spark too when given a session."""
    path = lake.table_path(table)
    rows = {"delta-rs": delta_rs_rows(path)}
    if spark is not None:
        rows["spark"] = spark_rows(spark, path)
    return rows


# -- the pipeline ---------------------------------------------------------------------------------


class Project:
    """The example's definitions bound to a fresh topic and lake; one Dagster instance for all
    runs, as in a deployment."""

    def __init__(self, example: ModuleType, broker, topic: str, spark_resource, root: Path):
        self.example, self.broker, self.topic = example, broker, topic
        self.lake = DeltaLake(tables_root=str(root / "tables"),
                              checkpoints_root=str(root / "checkpoints"))
        self.resources = {
            "spark": spark_resource,
            "lake": self.lake,
            "stream_source": KafkaSource(bootstrap_servers=broker.bootstrap,
                                         topic_names={"orders": topic}),
        }
        self.instance = DagsterInstance.ephemeral()
        # The example's own Definitions, as `dagster dev` loads them. Its checks are left out:
        # they cost a Spark job each, and the generator's 20% of bad records is far above the
        # default dead-letter ratio the check allows.
        self.assets = [a for a in example.defs.assets or () if isinstance(a, AssetsDefinition)]

    def send(self, records: list) -> None:
        assert self.example.produce(records, self.broker.bootstrap, self.topic) == len(records)

    def materialize(self):
        result = materialize(self.assets, resources=self.resources, instance=self.instance)
        assert result.success
        return result


@pytest.fixture
def project(example, kafka_broker, topic_factory, spark_resource, workdir) -> Project:
    return Project(example, kafka_broker, topic_factory("orders"), spark_resource, workdir)


def assert_tables_hold(spark, project: Project, records: list) -> None:
    """orders, orders_dead_letters and order_totals equal the expectation, by each reader."""
    want_orders = expected_orders(records)
    want_dead = expected_dead_letters(records)
    want_totals = expected_totals(records)

    for reader, rows in readers(spark, project.lake, "orders").items():
        ids = [r["order_id"] for r in rows]
        assert len(ids) == len(set(ids)), f"{reader}: an order landed twice"
        got = {r["order_id"]: {k: r[k] for k in ("customer_id", "country", "amount",
                                                   "ordered_at")} for r in rows}
        for r in rows:
            rescued = r["_rescued_data"]
            got[r["order_id"]]["_rescued_data"] = None if rescued is None else json.loads(rescued)
        assert got == want_orders, reader
        assert {r["topic"] for r in rows} == {project.topic}, reader
        orders_positions = [(r["partition"], r["offset"]) for r in rows]

    for reader, rows in readers(spark, project.lake, "orders_dead_letters").items():
        keys = [r["key"] for r in rows]
        assert len(keys) == len(set(keys)), f"{reader}: a record was dead-lettered twice"
        got = {r["key"]: (r["error"], r["raw_bytes"]) for r in rows}
        assert got == want_dead, reader
        assert {(r["topic"], r["refused_by"]) for r in rows} == {(project.topic, "orders")}
        dead_positions = [(r["partition"], r["offset"]) for r in rows]

    # Each Kafka record in exactly one of the two tables.
    positions = orders_positions + dead_positions
    assert len(positions) == len(set(positions)) == len(records)

    for reader, rows in readers(spark, project.lake, "order_totals").items():
        got = {r["customer_id"]: {k: r[k] for k in ("order_count", "total_amount",
                                                      "first_order_at", "last_order_at")}
               for r in rows}
        assert len(rows) == len(got), f"{reader}: a customer has two rows"
        assert got == want_totals, reader


def updated_at(project: Project) -> dict[str, int]:
    return {r["customer_id"]: r["updated_at"]
            for r in delta_rs_rows(project.lake.table_path("order_totals"))}


def written(result, node: str) -> dict[str, int]:
    return {m.asset_key.to_user_string(): m.metadata["rows_written"].value
            for m in result.asset_materializations_for_node(node)}


def merged_rows(project: Project, since_version: int) -> int:
    """Rows inserted or updated by order_totals' MERGE commits after `since_version`, from
    Delta's own log as delta-rs reads it."""
    total = 0
    for commit in DeltaTable(project.lake.table_path("order_totals")).history():
        if commit["version"] > since_version and commit.get("operation") == "MERGE":
            metrics = commit.get("operationMetrics") or {}
            total += int(metrics.get("numTargetRowsInserted", 0))
            total += int(metrics.get("numTargetRowsUpdated", 0))
    return total


# -- the tests ------------------------------------------------------------------------------------


def test_example_tables_equal_plain_python_and_grow_incrementally(example, project, spark):
    first = list(example.generate_orders(240, seed=1, bad_share=0.2, customers=20, prefix="a"))
    assert {r.kind for r in first} == {"good", *REASONS}  # every kind of bad record is there
    project.send(first)
    result = project.materialize()
    # Schema drift: the rows the parser read (the negative amounts are dropped only after)
    # whose JSON has fields ORDER does not name, and those names, in a WARN check.
    with_extra = [r for r in first if r.kind in ("good", "negative_amount")
                  and set(json.loads(r.value)) - DECLARED]
    (drift,) = [e for e in result.get_asset_check_evaluations()
                if e.check_name == "rescued_data"]
    assert (drift.passed, drift.severity.value) == (False, "WARN")
    assert drift.metadata["rows_failed"].value == len(with_extra) > 0
    assert drift.metadata["fields"].value == ["coupon"]
    assert drift.description.endswith("kept in _rescued_data: coupon"), drift.description
    # delta-rs alone in between: a Spark read of three tables costs seconds on a busy driver.
    assert_tables_hold(None, project, first)
    # What the schema check compares: the declared column types are the written ones.
    # orders' columns are read from the DDL by hand here: the record schema's fields, the
    # rescued fields, then the Kafka position.
    orders_columns = [("order_id", "string"), ("customer_id", "string"), ("country", "string"),
                      ("amount", "decimal(12,2)"), ("ordered_at", "timestamp"),
                      ("_rescued_data", "string"), ("topic", "string"), ("partition", "int"),
                      ("offset", "bigint")]
    for table, declared in (
            ("orders", orders_columns),
            ("order_totals", [(f.name, f.dataType.simpleString())
                              for f in example.ORDER_TOTALS_SCHEMA.fields])):
        written_types = spark.read.format("delta").load(project.lake.table_path(table)).schema
        assert [(f.name, f.dataType.simpleString())
                for f in written_types.fields] == declared, table
        assert [(f.name, f.dataType.simpleString())
                for f in getattr(example, table).schema.fields] == declared, table
    before = updated_at(project)
    totals_version = DeltaTable(project.lake.table_path("order_totals")).version()

    # The second batch touches only some customers: the others' rows must not be rewritten.
    # Produced by the example's command line, as its README says; the same arguments give the
    # same records, so the expectation is computed from generate_orders.
    second = list(example.generate_orders(120, seed=2, bad_share=0.2, customers=6, prefix="b"))
    assert example.main(["produce", "--bootstrap", project.broker.bootstrap, "--topic",
                         project.topic, "--count", "120", "--seed", "2", "--bad-share", "0.2",
                         "--customers", "6", "--prefix", "b"]) == 0
    result = project.materialize()
    assert_tables_hold(spark, project, first + second)

    good_second = [r for r in second if r.order is not None]
    assert written(result, "orders") == {"orders": len(good_second),
                                         "orders_dead_letters": len(second) - len(good_second)}
    touched = {r.order["customer_id"] for r in good_second}
    after = updated_at(project)
    assert set(before) - touched, "some customers must be left untouched by the second batch"
    for customer, stamp in after.items():
        if customer in touched:
            assert stamp > before.get(customer, -1), customer
        else:
            assert stamp == before[customer], f"{customer} was rewritten without new orders"
    # One row upserted per customer with new orders, and no other.
    assert merged_rows(project, totals_version) == len(touched)


def test_the_package_knows_nothing_of_the_example():
    """The example proves the public API is enough only if the package has no special case
    for it: no file under stream_assets/ may name its topic or tables."""
    names = re.compile(r"\b(orders|order_totals|orders_dead_letters|order_records)\b", re.I)
    package = ROOT / "stream_assets"
    mentions = []
    for path in package.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        mentions += [f"{path.relative_to(ROOT)}:{text.count(m.group(0))} {m.group(0)!r}"
                     for m in [names.search(text)] if m]
    assert not mentions, mentions


def test_the_example_loads_as_a_code_location(example):
    """What `dagster dev -f examples/orders/orders_pipeline.py` loads, without Spark."""
    keys = {key.to_user_string() for key in example.defs.resolve_all_asset_keys()}
    assert {"orders", "orders_dead_letters", "order_totals", "kafka/orders"} <= keys
    graph = example.defs.resolve_asset_graph()
    assert graph.get(AssetKey("order_totals")).parent_keys == {AssetKey("orders")}
    assert graph.get(AssetKey("orders")).parent_keys == {AssetKey(["kafka", "orders"])}


def test_a_field_added_to_the_schema_evolves_the_table_in_place(example, project, spark):
    """The producer's `coupon` is rescued until the declaration names it; then the table
    grows a column (old rows read null) without a refresh, and a change that is not additive
    is refused before anything is written."""
    import dataclasses

    from stream_assets import build_definitions, kafka_topic

    def redeclare(ddl: str) -> None:
        orders = dataclasses.replace(
            example.orders, sources={"orders": kafka_topic(example.TOPIC, schema=ddl)},
            schema=None, expectations=(example.orders.expectations[0],))
        defs = build_definitions([orders, example.order_totals])
        project.assets = [a for a in defs.assets or () if isinstance(a, AssetsDefinition)]

    first = list(example.generate_orders(100, seed=3, bad_share=0.1, customers=8, prefix="e"))
    project.send(first)
    result = project.materialize()
    (drift,) = [e for e in result.get_asset_check_evaluations()
                if e.check_name == "rescued_data"]
    assert drift.metadata["fields"].value == ["coupon"]

    # Not additive: refused before anything is written, naming the column and both types.
    versions = {t: DeltaTable(project.lake.table_path(t)).version() for t in TABLE_NAMES}
    redeclare(example.ORDER.replace("amount DECIMAL(12,2)", "amount DOUBLE"))
    refused = materialize(project.assets, resources=project.resources,
                          instance=project.instance, raise_on_error=False)
    assert not refused.success
    errors = [e.step_failure_data.error for e in refused.all_events if e.is_step_failure]
    message = " ".join(f"{error.message} {error.cause.message if error.cause else ''}"
                       for error in errors)
    assert "amount changes type from decimal(12,2) to double" in message, message
    assert "full refresh" in message and "'orders'" in message
    assert {t: DeltaTable(project.lake.table_path(t)).version() for t in TABLE_NAMES} == versions

    # Additive: the next run adds the column; the records sent since carry it.
    redeclare(example.ORDER + ", coupon STRING")
    second = list(example.generate_orders(60, seed=4, bad_share=0.1, customers=8, prefix="f"))
    project.send(second)
    result = project.materialize()
    meta = result.asset_materializations_for_node("orders")[0].metadata
    assert "coupon" in meta["schema_evolved"].value
    (drift,) = [e for e in result.get_asset_check_evaluations()
                if e.check_name == "rescued_data"]
    assert drift.passed, drift.description
    coupons = {r.order["order_id"]: r.order.get("coupon") for r in second if r.order}
    for reader, rows in readers(spark, project.lake, "orders").items():
        got = {r["order_id"]: r["coupon"] for r in rows}
        assert len(got) == len(rows), f"{reader}: an order landed twice"
        # Each good order once; the earlier ones read null, the coupon stays in their
        # rescued data.
        assert got == {**dict.fromkeys(expected_orders(first)), **coupons}, reader
    totals = {r["customer_id"]: {k: r[k] for k in ("order_count", "total_amount",
                                                     "first_order_at", "last_order_at")}
              for r in delta_rs_rows(project.lake.table_path("order_totals"))}
    assert totals == expected_totals(first + second)
