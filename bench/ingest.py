"""Ingest benchmark: raw_events + dead_letter_queue, against what the machine can do.

Produces N events (1% bad) to a private broker, then, in one process and one SparkSession,
measures side by side, interleaved round after round:

* `read`: a batch read of the topic that only sums the value lengths (the ceiling);
* `seed`: the same read with a plain from_json with the event schema (what a prototype
  without validation pays);
* `parse`: the same read with the project's `parse_events`, all columns, nothing written;
* `plain`: the streaming query written by hand (read Kafka, `parse_events`, one
  `foreachBatch` with two idempotent Delta appends);
* `plain-noop`: the same query with both appends sent to Spark's `noop` sink, so `plain`
  minus `plain-noop` is what the two Delta writes cost;
* `dagster`: a Dagster materialization of the `raw_events` asset, as declared (with the demo's
  one expectation);
* `dagster-bare` and `dagster-5x`: the same with no expectation, and with five, so that their
  difference over five is what one expectation costs.

Prints events/s for each (wall time) and the CPU seconds of the Spark JVM, then the ratios.
On a machine shared with other work the CPU figures are the steadier ones.

    .venv/bin/python bench/ingest.py [--events 1000000] [--bad-ratio 0.01] [--sides ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import JvmCpu, Timer, broker, spark_resource
from bench.parse_cost import seed_parse

SIDES = ("read", "seed", "parse", "plain", "plain-noop", "dagster")
EXTRA_SIDES = ("dagster-bare", "dagster-5x")
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


def parse_only(spark, bootstrap: str, topic: str) -> None:
    from stream_assets.transforms.events import parse_events

    (parse_events(batch_read(spark, bootstrap, topic))
     .write.format("noop").mode("overwrite").save())


def plain_pyspark(spark, bootstrap: str, topic: str, root: Path, noop: bool = False) -> None:
    """The same query without Dagster: read Kafka, parse, split, two idempotent appends.

    `noop` sends both appends to Spark's noop sink: everything but the Delta writes.
    """
    from pyspark.sql import functions as F

    from stream_assets.transforms.events import dead_letters, parse_events, valid_events

    def append(df, name: str, batch_id: int, partition_by: tuple[str, ...] = ()) -> None:
        if noop:
            df.write.format("noop").mode("overwrite").save()
            return
        (df.write.format("delta").mode("append")
         .option("txnAppId", "plain").option("txnVersion", batch_id)
         .partitionBy(*partition_by).save(str(root / name)))

    def write(batch, batch_id):
        parsed = batch.persist()
        now = F.current_timestamp()
        append(valid_events(parsed, now), "raw_events", batch_id, ("event_type",))
        append(dead_letters(parsed, now), "dead_letter_queue", batch_id)
        parsed.unpersist()

    stream = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", topic)
              .option("startingOffsets", "earliest")
              .load())
    query = (parse_events(stream).writeStream.foreachBatch(write)
             .option("checkpointLocation", str(root / "checkpoint"))
             .trigger(availableNow=True).start())
    query.awaitTermination()


def dagster_materialization(spark_res, bootstrap: str, topic: str, root: Path,
                            rules: tuple[tuple[str, str], ...] | None = None) -> None:
    """`rules` replaces raw_events' expectations (as warn rules); None keeps the declared ones."""
    import dataclasses

    from dagster import materialize

    from stream_assets import expect
    from stream_assets.resources import DeltaLake, KafkaSource
    from stream_assets.tables.assets import build_asset
    from stream_assets.tables.catalog import raw_events

    table = raw_events if rules is None else dataclasses.replace(
        raw_events, expectations=tuple(expect(name, rule, max_violation_ratio=1.0)
                                       for name, rule in rules))
    result = materialize(
        [build_asset(table)],
        resources={
            "spark": spark_res,
            "lake": DeltaLake(tables_root=str(root / "tables"),
                              checkpoints_root=str(root / "checkpoints")),
            "stream_source": KafkaSource(bootstrap_servers=bootstrap,
                                         topic_names={"events": topic}),
        },
    )
    assert result.success


def delta_files(spark, path: Path) -> tuple[int, int]:
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
    parser.add_argument("--sides", nargs="+", choices=SIDES + EXTRA_SIDES,
                        default=list(SIDES))
    args = parser.parse_args()

    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    work = Path(tempfile.mkdtemp(prefix="stream_assets_bench_"))
    with broker() as kafka:
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

        def run(side: str, root: Path) -> None:
            if side == "read":
                read_only(spark, kafka.bootstrap, topic)
            elif side == "seed":
                seed_only(spark, kafka.bootstrap, topic)
            elif side == "parse":
                parse_only(spark, kafka.bootstrap, topic)
            elif side in ("plain", "plain-noop"):
                plain_pyspark(spark, kafka.bootstrap, topic, root, noop=side == "plain-noop")
            elif side == "dagster-bare":
                dagster_materialization(spark_res, kafka.bootstrap, topic, root, rules=())
            elif side == "dagster-5x":
                dagster_materialization(spark_res, kafka.bootstrap, topic, root, FIVE_RULES)
            else:
                dagster_materialization(spark_res, kafka.bootstrap, topic, root)

        # A first pass of each side, not counted: the first run on a new JVM is a third slower
        # (class loading, JIT), and would otherwise always land on the side that goes first.
        with Timer() as warm:
            for side in args.sides:
                run(side, work / f"warm-{side}")
        print(f"  warm-up (not counted): {warm.seconds:6.1f} s", flush=True)

        # Forward then reverse order, fresh tables each time: no side always runs on a warmer
        # JVM or right after the same neighbour.
        times: dict[str, list[float]] = {side: [] for side in args.sides}
        busy: dict[str, list[float]] = {side: [] for side in args.sides}
        loads: list[float] = []
        order = [*args.sides, *reversed(args.sides)] * args.rounds
        files: dict[str, tuple[int, int]] = {}
        for index, side in enumerate(order):
            root = work / f"{side}-{index}"
            with Timer() as timer, cpu:
                run(side, root)
            times[side].append(timer.seconds)
            busy[side].append(cpu.seconds)
            loads.append(os.getloadavg()[0])
            print(f"  {side:10s} run {index}: {timer.seconds:6.1f} s, "
                  f"JVM CPU {cpu.seconds:6.1f} s, load {loads[-1]:.1f}", flush=True)
            if side.startswith("dagster"):
                tables = root / "tables"
                raw = spark.read.format("delta").load(str(tables / "raw_events"))
                dlq = spark.read.format("delta").load(str(tables / "dead_letter_queue"))
                landed = raw.count() + dlq.count()
                assert landed == args.events, f"{landed} rows landed for {args.events} events"
                files = {name: delta_files(spark, tables / name)
                         for name in ("raw_events", "dead_letter_queue")}
        spark.stop()

    print(f"{args.events:,} events, {args.partitions} partitions, median of "
          f"{2 * args.rounds} runs per side, load average {min(loads):.1f}-{max(loads):.1f}")
    wall = {side: statistics.median(t) for side, t in times.items()}
    cpu_s = {side: statistics.median(c) for side, c in busy.items()}
    for side in args.sides:
        print(f"  {side:10s} {wall[side]:6.1f} s {args.events / wall[side]:>9,.0f} events/s   "
              f"JVM CPU {cpu_s[side]:6.1f} s {args.events / cpu_s[side]:>9,.0f} events/CPU s")

    def ratio(a: str, b: str, goal: str = "") -> None:
        # A rate ratio: b's time over a's time, i.e. how fast a runs compared with b.
        if a in wall and b in wall:
            print(f"  {a} / {b}: {wall[b] / wall[a]:.2f} wall, {cpu_s[b] / cpu_s[a]:.2f} CPU"
                  + (f" (goal {goal})" if goal else ""))

    ratio("parse", "seed", ">= 0.90")
    ratio("dagster", "read", ">= 0.50")
    ratio("dagster", "seed")
    ratio("dagster", "plain", ">= 0.95")
    ratio("dagster-bare", "plain")
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
