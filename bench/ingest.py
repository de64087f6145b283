"""Ingest benchmark: raw_events + dead_letter_queue through Dagster vs a plain PySpark script.

Produces N events (1% bad) to a private broker, then processes them twice in one process and
one SparkSession: once as the plain PySpark query a user would write by hand, once as a
Dagster materialization of the `raw_events` asset. Prints events/s for both and the ratio.

    .venv/bin/python bench/ingest.py [--events 1000000] [--bad-ratio 0.01]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Timer, broker, spark_resource


def plain_pyspark(spark, bootstrap: str, topic: str, root: Path) -> None:
    """The same query without Dagster: read Kafka, parse, split, two idempotent appends."""
    from pyspark.sql import functions as F

    from stream_assets.transforms.events import dead_letters, parse_events, valid_events

    def write(batch, batch_id):
        parsed = batch.persist()
        now = F.current_timestamp()
        (valid_events(parsed, now).write.format("delta").mode("append")
         .option("txnAppId", "plain").option("txnVersion", batch_id)
         .partitionBy("event_type").save(str(root / "raw_events")))
        (dead_letters(parsed, now).write.format("delta").mode("append")
         .option("txnAppId", "plain").option("txnVersion", batch_id)
         .save(str(root / "dead_letter_queue")))
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


def dagster_materialization(spark_res, bootstrap: str, topic: str, root: Path) -> None:
    from dagster import materialize

    from stream_assets.resources import DeltaLake, KafkaSource
    from stream_assets.tables.assets import build_asset
    from stream_assets.tables.catalog import raw_events

    result = materialize(
        [build_asset(raw_events)],
        resources={
            "spark": spark_res,
            "lake": DeltaLake(tables_root=str(root / "tables"),
                              checkpoints_root=str(root / "checkpoints")),
            "stream_source": KafkaSource(bootstrap_servers=bootstrap,
                                         topic_names={"events": topic}),
        },
    )
    assert result.success


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--bad-ratio", type=float, default=0.01)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2,
                        help="repetitions of the order plain, Dagster, Dagster, plain")
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
        # A first full pass, not counted: the first run on a new JVM is a third slower (class
        # loading, JIT), and would otherwise always land on the side that goes first.
        with Timer() as warm:
            plain_pyspark(spark, kafka.bootstrap, topic, work / "warm")
        print(f"  warm-up (not counted): {warm.seconds:6.1f} s", flush=True)

        # ABBA order, fresh tables each time: neither side always runs on a warmer JVM.
        times: dict[str, list[float]] = {"plain": [], "dagster": []}
        for index, side in enumerate(["plain", "dagster", "dagster", "plain"] * args.rounds):
            root = work / f"{side}-{index}"
            with Timer() as timer:
                if side == "plain":
                    plain_pyspark(spark, kafka.bootstrap, topic, root)
                else:
                    dagster_materialization(spark_res, kafka.bootstrap, topic, root)
            times[side].append(timer.seconds)
            print(f"  {side:8s} run {index}: {timer.seconds:6.1f} s", flush=True)
            if side == "dagster":
                raw = spark.read.format("delta").load(str(root / "tables" / "raw_events"))
                dlq = spark.read.format("delta").load(str(root / "tables" / "dead_letter_queue"))
                landed = raw.count() + dlq.count()
                assert landed == args.events, f"{landed} rows landed for {args.events} events"
        spark.stop()

    for label, pick in (("median", statistics.median), ("best", min)):
        plain, managed = pick(times["plain"]), pick(times["dagster"])
        print(f"{label} of {len(times['plain'])} each: plain PySpark {plain:6.1f} s "
              f"({args.events / plain:,.0f} events/s), Dagster {managed:6.1f} s "
              f"({args.events / managed:,.0f} events/s), ratio {plain / managed:.2f} "
              "(goal >= 0.90)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
