"""An example project on stream_assets' public API: an `orders` topic and two tables on it.

- `orders`: every usable order from the `orders` Kafka topic, appended once, partitioned by
  country. Records that are not usable orders land in `orders_dead_letters` with the reason
  and their exact bytes, in the same micro-batch.
- `order_totals`: per customer, the number of orders, their total amount and the first and
  last order time, upserted (MERGE) as new orders arrive.

Nothing in the `stream_assets` package knows about these tables: everything here comes from
`from stream_assets import ...`. Run it with `dagster dev -f examples/orders/orders_pipeline.py`
and feed it with `python examples/orders/orders_pipeline.py produce` (see README.md beside it).

An order on the topic is a UTF-8 JSON object:
`{"order_id": "o-1", "customer_id": "c-7", "country": "FR", "amount": 12.5,
"ordered_at": "2026-03-01T10:00:00Z"}`; `amount` is a number (or a string holding one) with at
most two decimals, `ordered_at` ISO-8601 (no offset means UTC). `ORDER` declares that.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DecimalType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from stream_assets import (
    DeltaAppend,
    DeltaMerge,
    StreamingTable,
    build_definitions,
    expect_or_drop,
    kafka_topic,
    upstream,
)

TOPIC = "orders"
# Cents are exact in a decimal (DECIMAL(12,2) below); a double would make the totals drift.
TOTAL = DecimalType(22, 2)  # what Spark's sum of a decimal(12, 2) gives

# What an order holds. Each record is read into these typed columns, or refused into
# orders_dead_letters with a reason naming the field ("missing order_id", "wrong type: amount
# must be a decimal(12,2)"); fields not named here are kept in the row's `_rescued_data`.
ORDER = (
    "order_id STRING NOT NULL, customer_id STRING NOT NULL, country STRING NOT NULL, "
    "amount DECIMAL(12,2) NOT NULL, ordered_at TIMESTAMP NOT NULL"
)

orders = StreamingTable(
    name="orders",
    sources={"orders": kafka_topic(TOPIC, schema=ORDER)},
    sink=DeltaAppend(),
    dead_letters="orders_dead_letters",
    partition_by=("country",),
    keys=("order_id",),
    # A rule of the shop rather than of the format: refused with the expectation's name.
    expectations=(expect_or_drop("amount_not_negative", "amount >= 0"),),
    # The shop never reuses an order id: a duplicate is a producer bug the check should show.
    unique_keys=True,
    description="Every usable order from the `orders` topic, once. Records that are not "
    "usable orders land in `orders_dead_letters` with the reason and their exact bytes.",
    column_descriptions={
        "order_id": "The shop's id of the order.",
        "customer_id": "Who ordered.",
        "country": "Where the order ships to; the partition column.",
        "amount": "Order total, exact to the cent.",
        "ordered_at": "When the order was placed (UTC).",
        "_rescued_data": "Fields of the record that `ORDER` does not name, as JSON.",
        "topic": "Kafka topic of the record.",
        "partition": "Kafka partition of the record.",
        "offset": "Kafka offset of the record.",
    },
    group="orders",
    owners=("team:shop-data",),
    tags={"domain": "shop"},
)


def totals_per_customer(orders: DataFrame) -> DataFrame:
    """Running totals per customer. Spark keeps one state row per customer (no watermark:
    totals never close), and update mode emits the customers a micro-batch changed."""
    return orders.groupBy("customer_id").agg(
        F.count(F.lit(1)).alias("order_count"),
        F.sum("amount").alias("total_amount"),
        F.min("ordered_at").alias("first_order_at"),
        F.max("ordered_at").alias("last_order_at"),
    )


ORDER_TOTALS_SCHEMA = StructType([
    StructField("customer_id", StringType(), False),
    StructField("order_count", LongType(), False),
    StructField("total_amount", TOTAL, False),
    StructField("first_order_at", TimestampType(), False),
    StructField("last_order_at", TimestampType(), False),
    StructField("updated_at", TimestampType(), False),
])

order_totals = StreamingTable(
    name="order_totals",
    sources={"orders": upstream("orders")},
    transform=totals_per_customer,
    sink=DeltaMerge(),  # stamps updated_at
    keys=("customer_id",),
    schema=ORDER_TOTALS_SCHEMA,
    description="Per customer: number of orders, total amount, first and last order time, "
    "upserted on customer_id as orders arrive.",
    column_descriptions={
        "customer_id": "The customer.",
        "order_count": "Usable orders so far.",
        "total_amount": "Sum of their amounts.",
        "first_order_at": "Earliest order time.",
        "last_order_at": "Latest order time.",
        "updated_at": "When the micro-batch that last changed the row ran.",
    },
    group="orders",
    owners=("team:shop-data",),
    tags={"domain": "shop"},
)

TABLES = (orders, order_totals)

# The code location: `dagster dev -f examples/orders/orders_pipeline.py`. Resources default to
# a local Spark, the lake under STREAM_ASSETS_HOME and Kafka at STREAM_ASSETS_KAFKA_BOOTSTRAP.
defs = build_definitions(TABLES)


# -- the generator -----------------------------------------------------------------------------

GOOD = "good"
# The kinds of bad record the generator writes, each refused with its own reason.
BAD_KINDS = ("not_json", "missing_order_id", "negative_amount", "non_numeric_amount",
             "bad_timestamp", "tombstone")
COUNTRIES = ("DE", "FR", "NL", "PL", "SE")
START = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class OrderRecord:
    """One Kafka message and what it is: `order` is the JSON object of a good one."""

    key: bytes
    value: bytes | None
    kind: str = GOOD
    order: dict | None = None


def generate_orders(
    count: int,
    *,
    seed: int = 0,
    bad_share: float = 0.1,
    customers: int = 20,
    prefix: str = "o",
    start: datetime = START,
) -> Iterator[OrderRecord]:
    """`count` deterministic records (the same seed gives the same bytes), `bad_share` of them
    bad, of every kind in BAD_KINDS in turn. Keys are `<prefix>-<n>`, unique per record;
    a good order's order_id is its key."""
    rng = random.Random(seed)
    bad_seen = 0
    for n in range(count):
        order_id = f"{prefix}-{n:06d}"
        cents = rng.randrange(1, 50_000)
        order = {
            "order_id": order_id,
            "customer_id": f"c-{rng.randrange(customers):03d}",
            "country": rng.choice(COUNTRIES),
            # cents / 100 prints with at most two decimals: the shortest float repr round-trips.
            "amount": cents / 100,
            "ordered_at": (start + timedelta(seconds=n * 7 + rng.randrange(5)))
            .isoformat().replace("+00:00", "Z"),
        }
        if n % 5 == 4:
            # A field the shop's newer producers add: ORDER does not name it, so it is kept
            # in the row's _rescued_data rather than dropped.
            order["coupon"] = f"SPRING-{rng.randrange(100):02d}"
        key = order_id.encode()
        if rng.random() >= bad_share:
            yield OrderRecord(key, json.dumps(order).encode(), GOOD, order)
            continue
        kind = BAD_KINDS[bad_seen % len(BAD_KINDS)]
        bad_seen += 1
        yield OrderRecord(key, _bad_value(kind, rng, order), kind)


def _bad_value(kind: str, rng: random.Random, order: dict) -> bytes | None:
    broken = dict(order)
    if kind == "not_json":
        return rng.choice([json.dumps(order).encode()[:-3], b"order please", b"{'a': 1}"])
    if kind == "tombstone":
        return None
    if kind == "missing_order_id":
        del broken["order_id"]
    elif kind == "negative_amount":
        broken["amount"] = -order["amount"]
    elif kind == "non_numeric_amount":
        broken["amount"] = rng.choice(["twelve", "12,50", "", "NaN euros"])
    elif kind == "bad_timestamp":
        broken["ordered_at"] = rng.choice(["yesterday", "2026-13-01T00:00:00Z", "12:00",
                                           "01/03/2026"])
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return json.dumps(broken).encode()


def produce(records: Iterable[OrderRecord], bootstrap: str, topic: str = TOPIC,
            timeout_s: float = 60.0) -> int:
    """Write the records to `topic` and wait for the broker's acknowledgements.

    Idempotent producer: a retry cannot write a record twice, so each record is in the topic
    exactly once and a test can count on it.
    """
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 20})
    failures: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    sent = 0
    for record in records:
        producer.produce(topic, key=record.key, value=record.value, on_delivery=on_delivery)
        producer.poll(0)
        sent += 1
    remaining = producer.flush(timeout_s)
    if remaining or failures:
        raise RuntimeError(f"{remaining + len(failures)} of {sent} records not acknowledged by "
                           f"{bootstrap}: {failures[:1] or 'timeout'}")
    return sent


def create_topic(bootstrap: str, topic: str = TOPIC, partitions: int = 3) -> None:
    """Create the topic unless it exists: the local broker does not create topics on first
    write, and `stream-assets kafka start` creates only the demo's."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
    try:
        future.result(30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("produce", help="write generated orders to Kafka")
    cmd.add_argument("--bootstrap", default="localhost:9092")
    cmd.add_argument("--topic", default=TOPIC)
    cmd.add_argument("--count", type=int, default=1000)
    cmd.add_argument("--bad-share", type=float, default=0.1)
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--customers", type=int, default=20)
    cmd.add_argument("--prefix", default="o", help="order ids are <prefix>-<n>: change it "
                     "between runs to add new orders rather than repeat them")
    cmd.add_argument("--partitions", type=int, default=3,
                     help="partitions of the topic, when it has to be created")
    args = parser.parse_args(argv)
    create_topic(args.bootstrap, args.topic, args.partitions)
    records = generate_orders(args.count, seed=args.seed, bad_share=args.bad_share,
                              customers=args.customers, prefix=args.prefix)
    sent = produce(records, args.bootstrap, args.topic)
    print(f"produced {sent} records to {args.topic} at {args.bootstrap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
