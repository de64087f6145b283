"""Ingest benchmark: raw_events + dead_letter_queue, against what the machine can do.

Produces N events (1% bad) to a private broker, then, in one process and one SparkSession,
measures side by side, interleaved round after round:

* `read`: a batch read of the topic that only sums the value lengths (the ceiling);
* `seed`: the same read with a plain from_json with the event schema (what a prototype
  without validation pays);
* `generic`: the same read with the project's JSON record parser of a declared schema
  (`JsonRecords` over parse_cost.EVENT_DDL, what `kafka_topic(schema=...)` reads), nothing
  written;
* `parse`: the same read with raw_events' parser (`catalog.event_records`: the generic parser
  over the declared EVENT_RECORD with its rules, in raw_events' columns), nothing written;
* `parquet`: the same read and parse, the good rows written once to plain Parquet, with no
  cache, no Delta, no partitions and no dead letters: what any Spark writer of the table pays,
  the floor under every writing side;
* `plain`: the streaming query written by hand (read Kafka, `event_records`, one
  `foreachBatch` with two idempotent Delta appends);
* `plain-noop`: the same query with both appends sent to Spark's `noop` sink, so `plain`
  minus `plain-noop` is what the two Delta writes cost;
* `dagster`: a Dagster materialization of the `raw_events` asset, as declared (with the demo's
  one expectation);
* `dagster-bare` and `dagster-5x`: the same with no expectation, and with five, so that their
  difference over five is what one expectation costs.

Prints events/s for each (wall time) and the CPU seconds of the Spark JVM, then the ratios.
On a machine shared with other work the CPU figures are the steadier ones.

`--lake s3` puts the tables and checkpoints of `plain`, `plain-noop` and every `dagster*` side
on the test S3 server (stream_assets/dev/s3_server.py, moto on loopback, started in a temporary
home), both sides reaching it with the same S3A settings (`DeltaLake.hadoop_options()`). It adds
`plain-local` and `dagster-local`, the same two on a local folder, for the S3 / local ratios,
and prints the S3 server's own CPU seconds beside the JVM's (moto is a separate process), and
how many requests it answered.

    .venv/bin/python bench/ingest.py [--events 1000000] [--bad-ratio 0.01] [--sides ...]
                                     [--lake local|s3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    JvmCpu,
    ProcessCpu,
    S3Requests,
    Timer,
    broker,
    s3_server,
    s3_server_pid,
    spark_resource,
)
from bench.parse_cost import EVENT_DDL, seed_parse
from stream_assets.resources import DeltaLake

SIDES = ("read", "seed", "generic", "parse", "parquet", "plain", "plain-noop", "dagster")
EXTRA_SIDES = ("dagster-bare", "dagster-5x")
# With --lake s3: the plain query and the materialization on a local folder, against the same
# on the server, so that the run also gives the local ratio on the same machine and moment.
S3_SIDES = ("plain-local", "dagster-local")
LOCAL_SIDES = {"plain-local": "plain", "dagster-local": "dagster"}
# Rules of the kind a user declares on events: each reads a column or two of every row.
FIVE_RULES = (
    ("numeric_duration", "try_cast(properties['duration'] AS DOUBLE) IS NOT NULL"),
    ("known_page", "properties['page'] IS NOT NULL"),
    ("has_user", "user_id IS NOT NULL AND user_id <> ''"),
    ("recent", "timestamp > TIMESTAMP'2000-01-01'"),
    ("short_type", "length(event_type) < 40"),
)


def batch_read(spark, bootstrap: str, topic: str):
    """The whole topic as one batch DataFrame, with the columns the streaming source has."""
    return (spark.read.format("kafka")
            .option("kafka.bootstrap.servers", bootstrap)
            .option("subscribe", topic)
            .option("startingOffsets", "earliest")
            .option("endingOffsets", "latest")
            .load())


def read_only(spark, bootstrap: str, topic: str) -> None:
    """Every record fetched and looked at once: what no query on this machine can beat."""
    from pyspark.sql import functions as F

    batch_read(spark, bootstrap, topic).agg(F.sum(F.length("value"))).collect()


def seed_only(spark, bootstrap: str, topic: str) -> None:
    seed_parse(batch_read(spark, bootstrap, topic)).write.format("noop").mode("overwrite").save()


def generic_only(spark, bootstrap: str, topic: str) -> None:
    from stream_assets.records.ddl import parse_schema
    from stream_assets.records.json_records import JsonRecords

    (JsonRecords(parse_schema(EVENT_DDL))(batch_read(spark, bootstrap, topic))
     .write.format("noop").mode("overwrite").save())


def parse_only(spark, bootstrap: str, topic: str) -> None:
    from stream_assets.tables.catalog import event_records

    (event_records(batch_read(spark, bootstrap, topic))
     .write.format("noop").mode("overwrite").save())


def valid_events(parsed):
    """raw_events' rows of a parsed batch."""
    return parsed.where("error IS NULL").drop("key", "value", "error")


def dead_letters(parsed):
    """dead_letter_queue's rows of a parsed batch (the columns a hand-written script keeps)."""
    from pyspark.sql import functions as F

    return parsed.where("error IS NOT NULL").select(
        F.col("value").cast("string").alias("raw_value"), "error",
        F.current_timestamp().alias("error_time"), "topic", "partition", "offset",
        F.col("value").alias("raw_bytes"), "key")


def parquet_only(spark, bootstrap: str, topic: str, path: str) -> None:
    from stream_assets.tables.catalog import event_records

    valid_events(event_records(batch_read(spark, bootstrap, topic))).write.parquet(path)


def plain_pyspark(spark, bootstrap: str, topic: str, lake: DeltaLake,
                  noop: bool = False) -> None:
    """The same query without Dagster: read Kafka, parse, split, two idempotent appends.

    `lake` only gives the paths and, for S3, the Hadoop settings a hand-written script would
    set on its session: the same ones the Dagster side's lake sets (DeltaLake.attach).
    `noop` sends both appends to Spark's noop sink: everything but the Delta writes.
    """
    from stream_assets.tables.catalog import event_records

    for key, value in lake.hadoop_options().items():
        spark.conf.set(key, value)

    def append(df, name: str, batch_id: int, partition_by: tuple[str, ...] = ()) -> None:
        if noop:
            df.write.format("noop").mode("overwrite").save()
            return
        (df.write.format("delta").mode("append")
         .option("txnAppId", "plain").option("txnVersion", batch_id)
         .partitionBy(*partition_by).save(lake.table_path(name)))

    def write(batch, batch_id):
        parsed = batch.persist()
        append(valid_events(parsed), "raw_events", batch_id, ("event_type",))
        append(dead_letters(parsed), "dead_letter_queue", batch_id)
        parsed.unpersist()

    stream = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", topic)
              .option("startingOffsets", "earliest")
              .load())
    query = (event_records(stream).writeStream.foreachBatch(write)
             .option("checkpointLocation", lake.checkpoint_path("plain"))
             .trigger(availableNow=True).start())
    query.awaitTermination()


def dagster_materialization(spark_res, bootstrap: str, topic: str, lake: DeltaLake,
                            rules: tuple[tuple[str, str], ...] | None = None) -> None:
    """`rules` replaces raw_events' expectations (as warn rules); None keeps the declared ones."""
    import dataclasses

    from dagster import materialize

    from stream_assets import expect
    from stream_assets.resources import KafkaSource
    from stream_assets.tables.assets import build_asset
    from stream_assets.tables.catalog import raw_events

    table = raw_events if rules is None else dataclasses.replace(
        raw_events, expectations=tuple(expect(name, rule, max_violation_ratio=1.0)
                                       for name, rule in rules))
    result = materialize(
        [build_asset(table)],
        resources={
            "spark": spark_res,
            "lake": lake,
            "stream_source": KafkaSource(bootstrap_servers=bootstrap,
                                         topic_names={"events": topic}),
        },
    )
    assert result.success


def delta_files(spark, path: str) -> tuple[int, int]:
    """(files, versions) of a Delta table: how many files its appends left, in how many commits."""
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").collect()[0]
    versions = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").count()
    return detail["numFiles"], versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--bad-ratio", type=float, default=0.01)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2,
                        help="repetitions of the sides in order, then in reverse order")
    parser.add_argument("--sides", nargs="+", choices=SIDES + EXTRA_SIDES + S3_SIDES,
                        help=f"default: {' '.join(SIDES)}, and with --lake s3 also "
                        f"{' '.join(S3_SIDES)}")
    parser.add_argument("--lake", choices=("local", "s3"), default="local",
                        help="where the writing sides put tables and checkpoints: a local "
                        "folder, or the test S3 server (moto on loopback)")
    args = parser.parse_args()
    if args.sides is None:
        args.sides = list(SIDES) + (list(S3_SIDES) if args.lake == "s3" else [])
    elif args.lake != "s3" and set(args.sides) & set(S3_SIDES):
        parser.error(f"{', '.join(S3_SIDES)} compares with the S3 lake: add --lake s3")

    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    work = Path(tempfile.mkdtemp(prefix="stream_assets_bench_"))
    with broker() as kafka, s3_server(work / "s3", args.lake == "s3") as server:
        topic = "bench-events"
        kafka.create_topics([topic], partitions=args.partitions)
        connection = KafkaConnection(bootstrap_servers=kafka.bootstrap)
        records = (r.__class__(topic, r.key, r.value, r.kind, r.event)
                   for r in generate_events(args.events, bad_ratio=args.bad_ratio, seed=1))
        with Timer() as produced:
            produce(records, connection, total=args.events, progress=True)
        print(f"produced {args.events:,} events in {produced.seconds:.1f} s")

        spark_res = spark_resource()
        spark = spark_res.spark_session
        cpu = JvmCpu(spark)
        # The S3 server's own work is outside the JVM: measured apart, not hidden in "wall".
        server_cpu = ProcessCpu(s3_server_pid(server)) if server else None
        requests = S3Requests(server) if server else None

        def lake_for(side: str, name: str) -> DeltaLake:
            if server is None or side in LOCAL_SIDES:
                return DeltaLake(tables_root=str(work / name / "tables"),
                                 checkpoints_root=str(work / name / "checkpoints"))
            # The lake's own S3A defaults (resources/lake.py), not the tests' fail-fast ones:
            # what a user's configuration gets.
            return server.lake(server.uri("bench", name), fail_fast=False)

        def run(side: str, lake: DeltaLake) -> None:
            side = LOCAL_SIDES.get(side, side)  # the lake says where, the side says what
            if side == "read":
                read_only(spark, kafka.bootstrap, topic)
            elif side == "seed":
                seed_only(spark, kafka.bootstrap, topic)
            elif side == "generic":
                generic_only(spark, kafka.bootstrap, topic)
            elif side == "parse":
                parse_only(spark, kafka.bootstrap, topic)
            elif side == "parquet":
                parquet_only(spark, kafka.bootstrap, topic, lake.table_path("raw_events_parquet"))
            elif side in ("plain", "plain-noop"):
                plain_pyspark(spark, kafka.bootstrap, topic, lake, noop=side == "plain-noop")
            elif side == "dagster-bare":
                dagster_materialization(spark_res, kafka.bootstrap, topic, lake, rules=())
            elif side == "dagster-5x":
                dagster_materialization(spark_res, kafka.bootstrap, topic, lake, FIVE_RULES)
            else:
                dagster_materialization(spark_res, kafka.bootstrap, topic, lake)

        # A first pass of each side, not counted: the first run on a new JVM is a third slower
        # (class loading, JIT), and would otherwise always land on the side that goes first.
        with Timer() as warm:
            for side in args.sides:
                run(side, lake_for(side, f"warm-{side}"))
        print(f"  warm-up (not counted): {warm.seconds:6.1f} s", flush=True)

        # Forward then reverse order, fresh tables each time: no side always runs on a warmer
        # JVM or right after the same neighbour.
        times: dict[str, list[float]] = {side: [] for side in args.sides}
        busy: dict[str, list[float]] = {side: [] for side in args.sides}
        served: dict[str, list[float]] = {side: [] for side in args.sides}
        asked: dict[str, list[int]] = {side: [] for side in args.sides}
        loads: list[float] = []
        order = [*args.sides, *reversed(args.sides)] * args.rounds
        files: dict[str, tuple[int, int]] = {}
        for index, side in enumerate(order):
            lake = lake_for(side, f"{side}-{index}")
            with (Timer() as timer, cpu, server_cpu or contextlib.nullcontext(),
                  requests or contextlib.nullcontext()):
                run(side, lake)
            times[side].append(timer.seconds)
            busy[side].append(cpu.seconds)
            served[side].append(server_cpu.seconds if server_cpu else 0.0)
            asked[side].append(requests.total if requests else 0)
            loads.append(os.getloadavg()[0])
            print(f"  {side:10s} run {index}: {timer.seconds:6.1f} s, "
                  f"JVM CPU {cpu.seconds:6.1f} s, "
                  + (f"S3 server CPU {served[side][-1]:6.1f} s, requests {requests}, "
                     if server else "")
                  + f"load {loads[-1]:.1f}", flush=True)
            if side.startswith(("dagster", "plain")) and side != "plain-noop":
                raw = spark.read.format("delta").load(lake.table_path("raw_events"))
                dlq = spark.read.format("delta").load(lake.table_path("dead_letter_queue"))
                landed = raw.count() + dlq.count()
                assert landed == args.events, f"{side}: {landed} rows for {args.events} events"
            if side.startswith("dagster"):
                files = {name: delta_files(spark, lake.table_path(name))
                         for name in ("raw_events", "dead_letter_queue")}
            if server is not None and side not in LOCAL_SIDES:
                # moto keeps every object in memory: drop each run's lake once it is checked.
                lake.files.delete_tree(lake.tables_root.removesuffix("/tables"))
        spark.stop()

    where = "the S3 server (*-local: a local folder)" if args.lake == "s3" else "local"
    print(f"{args.events:,} events, {args.partitions} partitions, median of "
          f"{2 * args.rounds} runs per side, load average {min(loads):.1f}-{max(loads):.1f}, "
          f"lake: {where}")
    wall = {side: statistics.median(t) for side, t in times.items()}
    cpu_s = {side: statistics.median(c) for side, c in busy.items()}
    server_s = {side: statistics.median(c) for side, c in served.items()}
    asked_n = {side: statistics.median(n) for side, n in asked.items()}
    for side in args.sides:
        print(f"  {side:10s} {wall[side]:6.1f} s {args.events / wall[side]:>9,.0f} events/s   "
              f"JVM CPU {cpu_s[side]:6.1f} s {args.events / cpu_s[side]:>9,.0f} events/CPU s"
              + (f"   S3 server CPU {server_s[side]:6.1f} s, {asked_n[side]:5.0f} requests"
                 if args.lake == "s3" else ""))

    def ratio(a: str, b: str, goal: str = "") -> None:
        # A rate ratio: b's time over a's time, i.e. how fast a runs compared with b.
        if a in wall and b in wall:
            print(f"  {a} / {b}: {wall[b] / wall[a]:.2f} wall, {cpu_s[b] / cpu_s[a]:.2f} CPU"
                  + (f" (goal {goal})" if goal else ""))

    ratio("generic", "seed", ">= 1.2")
    ratio("parse", "seed", ">= 1.2")
    ratio("dagster", "read", ">= 0.50")
    ratio("parquet", "read")  # the floor: no side that writes the table can beat it
    ratio("dagster", "seed")
    ratio("dagster", "plain", ">= 0.95")
    ratio("dagster-bare", "plain")
    ratio("dagster-local", "plain-local")  # the ratio above, on a local folder, same run
    ratio("plain", "plain-local")  # each on S3 against the same on a local folder
    ratio("dagster", "dagster-local")
    if "dagster-bare" in wall and "dagster-5x" in wall:
        per_rule = (wall["dagster-5x"] - wall["dagster-bare"]) / len(FIVE_RULES)
        per_rule_cpu = (cpu_s["dagster-5x"] - cpu_s["dagster-bare"]) / len(FIVE_RULES)
        print(f"  one expectation: {per_rule:+.2f} s wall ({per_rule / wall['dagster-bare']:+.1%}),"
              f" {per_rule_cpu:+.2f} CPU s ({per_rule_cpu / cpu_s['dagster-bare']:+.1%})")
    if "plain" in wall and "plain-noop" in wall:
        share = (wall["plain"] - wall["plain-noop"]) / wall["plain"]
        cpu_share = (cpu_s["plain"] - cpu_s["plain-noop"]) / cpu_s["plain"]
        print(f"  Delta writes: {share:.0%} of the plain query's wall time, "
              f"{cpu_share:.0%} of its CPU")
    for name, (count, versions) in files.items():
        print(f"  {name}: {count} files in {versions} versions (last dagster run)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
