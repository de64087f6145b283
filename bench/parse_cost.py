"""Where the events' parse spends its time: expressions timed one by one on a cached batch.

Generated records (the ingest benchmark's mix) are cached as Kafka-shaped rows in the driver's
SparkSession, so each figure is the cost of one projection alone, with no Kafka read and no
Delta write. Each projection runs through Spark's `noop` sink, which evaluates every column
and writes nothing. The projections run interleaved, round after round; the median wall time
and the median CPU time of the Spark JVM are printed. On a shared machine the CPU time is the
figure to compare: wall time also measures whoever else runs. The generic parser of a declared
schema (`JsonRecords`) is timed on the events as EVENT_DDL, as raw_events reads them
(`catalog.event_records`: the declared EVENT_RECORD with its rules, in raw_events' columns),
and on as many 10-field payments against Spark's from_json of the same schema; the goals'
ratios are printed last.

    .venv/bin/python bench/parse_cost.py [--events 400000] [--rounds 5] [--only NAME ...]
        [--reference FILE]   # a module with parse_events(kafka), e.g. an older events.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import JvmCpu, Timer, spark_resource

# The columns of Spark's Kafka source that the parser reads.
KAFKA_ROWS = "key binary, value binary, topic string, partition int, offset long"


def load(spark, events: int, bad_ratio: float):
    """A cached DataFrame of Kafka-shaped rows holding `events` generated records."""
    from stream_assets.dev.generator import generate_events

    rows = [(r.key, r.value, "events", i % 4, i)
            for i, r in enumerate(generate_events(events, bad_ratio=bad_ratio, seed=1))]
    # createDataFrame from a list puts everything in one partition; spread it over the cores.
    frame = spark.createDataFrame(rows, KAFKA_ROWS).repartition(os.cpu_count() or 2).cache()
    frame.count()
    return frame


FIXED_INSTANT = datetime(2026, 12, 7, tzinfo=UTC)
# The demo's event as a declared record schema: what a user of kafka_topic(schema=) gets.
EVENT_DDL = ("event_id STRING NOT NULL, event_type STRING, user_id STRING, "
             "timestamp TIMESTAMP NOT NULL, properties MAP<STRING, STRING>")
# Ten fields with a decimal, a nested struct and an array (the second case).
PAYMENT_DDL = ("payment_id STRING NOT NULL, merchant STRING, amount DECIMAL(10,2) NOT NULL, "
               "quantity INT, fee DOUBLE, refunded BOOLEAN, paid_at TIMESTAMP, "
               "card STRUCT<brand: STRING, last4: STRING>, tags ARRAY<STRING>, attempt BIGINT")


def payments(count: int) -> list[bytes]:
    """`count` JSON payments of PAYMENT_DDL, deterministic, one in a hundred unusable."""
    import json
    import random

    rng = random.Random(3)
    values = []
    for n in range(count):
        payment = {
            "payment_id": f"p-{n}", "merchant": f"m-{rng.randrange(500)}",
            "amount": round(rng.uniform(0, 5000), 2), "quantity": rng.randrange(1, 20),
            "fee": rng.random(), "refunded": rng.random() < 0.05,
            "paid_at": f"2026-03-01T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
            "card": {"brand": rng.choice(["visa", "amex"]), "last4": f"{rng.randrange(9999):04d}"},
            "tags": rng.sample(["web", "app", "promo", "gift"], rng.randrange(3)),
            "attempt": rng.randrange(3),
        }
        if n % 100 == 99:
            payment["amount"] = "twelve"
        values.append(json.dumps(payment).encode())
    return values


def load_payments(spark, count: int):
    rows = [(None, v, "payments", i % 4, i) for i, v in enumerate(payments(count))]
    frame = spark.createDataFrame(rows, KAFKA_ROWS).repartition(os.cpu_count() or 2).cache()
    frame.count()
    return frame


def payment_projections() -> dict[str, Callable]:
    from pyspark.sql import functions as F

    from stream_assets.records.ddl import parse_schema
    from stream_assets.records.json_records import JsonRecords

    schema = parse_schema(PAYMENT_DDL)
    return {
        # Spark's own reader of the same schema: lenient, no verdict per record.
        "10 fields: from_json": lambda k: k.select(
            F.from_json(F.col("value").cast("string"), schema).alias("p"), "topic",
            "partition", "offset").select("p.*", "topic", "partition", "offset"),
        # Full verdicts: missing, wrong types, duplicates, rescued data.
        "10 fields: JsonRecords": lambda k: JsonRecords(schema)(k).drop("key", "value"),
    }


def seed_parse(kafka):
    """The seed's parse: a plain from_json with the event schema, then the columns."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType, StringType, StructField, StructType, TimestampType

    schema = StructType([
        StructField("event_id", StringType()),
        StructField("event_type", StringType()),
        StructField("user_id", StringType()),
        StructField("timestamp", TimestampType()),
        StructField("properties", MapType(StringType(), StringType())),
    ])
    return kafka.select(F.from_json(F.col("value").cast("string"), schema).alias("data"),
                        "topic", "partition", "offset").select("data.*", "topic", "partition",
                                                               "offset")


def reference_parser(path: str | None) -> Callable | None:
    """parse_events from another version of events.py, e.g. `git show main:<path> > file`."""
    if not path:
        return None
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_events", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_events


def projections(reference: Callable | None = None) -> dict[str, Callable]:
    """Name -> (kafka DataFrame -> DataFrame): each a piece of the parser, or all of it."""
    from pyspark.sql import functions as F

    from stream_assets.records.ddl import parse_schema
    from stream_assets.records.json_records import JsonRecords
    from stream_assets.tables.catalog import event_records

    text = F.col("value").cast("string")
    strings = ("event_id", "timestamp", "event_type", "user_id")

    built = {
        "read only (length of value)": lambda k: k.select(F.length("value")),
        "is_valid_utf8": lambda k: k.select(F.is_valid_utf8(text)),
        # Spark's own strict parser, which gave the verdicts until 2026-12-02.
        "try_parse_json": lambda k: k.select(F.try_parse_json(text)),
        "try_parse_json + 4 strings": lambda k: k.select(
            F.try_variant_get(F.try_parse_json(text), "$",
                              "struct<" + ", ".join(f"{n} variant" for n in strings) + ">")
            .alias("p")).select(*[F.try_variant_get(F.col("p")[n], "$", "string")
                                  for n in strings]),
        "from_json, all strings": lambda k: k.select(F.from_json(
            text, "struct<" + ", ".join(f"{name} string" for name in strings)
            + ", properties map<string,string>>")),
        "seed: from_json (typed)": seed_parse,
        # The generic parser of a declared schema (kafka_topic(schema=EVENT_DDL)).
        "JsonRecords (event schema)": lambda k: JsonRecords(parse_schema(EVENT_DDL))(k)
        .drop("key", "value"),
        # raw_events' parser: the declared events with their rules (event_type, time range).
        "event_records (raw_events)": lambda k: event_records(k).drop("key", "value"),
        # Where its ingest time goes: without the column, and with one instant fixed for every
        # round (current_timestamp() is a new literal in each query's generated code).
        "event_records, no ingested_at": lambda k: event_records(k).drop(
            "key", "value", "ingested_at"),
        "event_records, fixed ingested_at": lambda k: event_records(k).drop(
            "key", "value").withColumn("ingested_at", F.lit(FIXED_INSTANT)),
    }
    if reference:
        built["reference parse_events"] = lambda k: reference(k).drop("raw_bytes", "key")
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--bad-ratio", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="names (substrings) of projections to run")
    parser.add_argument("--reference", help="a file with another parse_events to compare")
    parser.add_argument("--explain", help="print the codegen plan of this projection and stop")
    args = parser.parse_args()

    spark = spark_resource().spark_session
    kafka = load(spark, args.events, args.bad_ratio)
    paid = load_payments(spark, args.events)
    built = {name: (kafka, build)
             for name, build in projections(reference_parser(args.reference)).items()}
    built.update({name: (paid, build) for name, build in payment_projections().items()})
    chosen = {name: build for name, build in built.items()
              if not args.only or any(o in name for o in args.only)}
    if args.explain:
        name = next(n for n in chosen if args.explain in n)
        frame, build = chosen[name]
        build(frame).explain("codegen")
        return

    cpu = JvmCpu(spark)

    def run(chosen_build) -> tuple[float, float]:
        frame, build = chosen_build
        with Timer() as timer, cpu:
            build(frame).write.format("noop").mode("overwrite").save()
        return timer.seconds, cpu.seconds

    for build in chosen.values():  # warm-up: JIT and codegen, not counted
        run(build)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in chosen}
    for round_ in range(args.rounds):
        names = list(chosen) if round_ % 2 == 0 else list(reversed(chosen))
        for name in names:
            times[name].append(run(chosen[name]))
    load_avg = os.getloadavg()
    print(f"{args.events:,} cached records, median of {args.rounds} rounds, "
          f"load {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    print(f"  {'projection':34s} {'wall s':>7s} {'JVM CPU s':>9s} {'records/CPU s':>13s}")
    for name, measured in times.items():
        wall = statistics.median(t for t, _ in measured)
        busy = statistics.median(c for _, c in measured)
        print(f"  {name:34s} {wall:7.2f} {busy:9.2f} {args.events / busy:13,.0f}")
    # The goals, as speed ratios (the baseline's time over the parser's).
    for parser_name, baseline, goal in (
            ("JsonRecords (event schema)", "seed: from_json (typed)", 1.2),
            ("event_records (raw_events)", "seed: from_json (typed)", 1.2),
            ("10 fields: JsonRecords", "10 fields: from_json", 1.0)):
        if parser_name in times and baseline in times:
            ratios = [statistics.median(t[i] for t in times[baseline])
                      / statistics.median(t[i] for t in times[parser_name]) for i in (1, 0)]
            print(f"  {parser_name} vs {baseline}: {ratios[0]:.2f} CPU, {ratios[1]:.2f} wall "
                  f"(goal {goal})")
    spark.stop()


if __name__ == "__main__":
    main()
