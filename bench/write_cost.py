"""Where the write side of raw_events spends its time: writers and caches, one at a time.

Generated records (the ingest benchmark's mix) go to a private broker. Then, in one
SparkSession, two groups of figures, interleaved round after round, median wall time and
median CPU time of the Spark JVM:

* writers, each writing the same cached rows (raw_events' rows as its parser routes them,
  cached once beforehand, so no read and no parse): Spark's `noop` sink, plain Parquet,
  Parquet partitioned by `event_type`, Delta, Delta partitioned, Delta partitioned without
  file statistics;
* the batch before the writes, from the topic: read and parse to `noop`, the same through the
  cache `split_writer` takes (stream_assets/tables/writes.py), the same with Spark's in-memory
  columnar compression off, and with a local checkpoint instead of the cache.

    .venv/bin/python bench/write_cost.py [--events 1000000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import JvmCpu, Timer, broker, spark_resource
from bench.ingest import batch_read

NO_STATS = {"spark.databricks.delta.stats.collect": "false"}
RAW_CACHE = {"spark.sql.inMemoryColumnarStorage.compressed": "false"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection
    from stream_assets.tables import dead_letters
    from stream_assets.tables.catalog import event_records

    work = Path(tempfile.mkdtemp(prefix="stream_assets_bench_writes_"))
    with broker() as kafka:
        topic = "bench-events"
        kafka.create_topics([topic], partitions=4)
        produce((r.__class__(topic, r.key, r.value, r.kind, r.event)
                 for r in generate_events(args.events, bad_ratio=0.01, seed=1)),
                KafkaConnection(bootstrap_servers=kafka.bootstrap), total=args.events)
        spark = spark_resource().spark_session
        cpu = JvmCpu(spark)

        def routed():
            parsed = event_records(batch_read(spark, kafka.bootstrap, topic))
            return dead_letters.routed(parsed, "raw_events")

        cached = routed().persist()
        cached.count()
        rows = dead_letters.table_rows(cached)
        paths = itertools.count()

        def path() -> str:
            return str(work / f"t{next(paths)}")

        def with_conf(conf: dict[str, str], action: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                for key, value in conf.items():
                    spark.conf.set(key, value)
                try:
                    action()
                finally:
                    for key in conf:
                        spark.conf.unset(key)
            return run

        def through(keep: Callable) -> Callable[[], None]:
            def run() -> None:
                batch = keep(routed())
                batch.write.format("noop").mode("overwrite").save()
                batch.unpersist()
            return run

        def delta(partitioned: bool) -> Callable[[], None]:
            def run() -> None:
                writer = rows.write.format("delta")
                (writer.partitionBy("event_type") if partitioned else writer).save(path())
            return run

        cases: dict[str, Callable[[], None]] = {
            "cached rows -> noop": lambda: rows.write.format("noop").mode("overwrite").save(),
            "cached rows -> Parquet": lambda: rows.write.parquet(path()),
            "cached rows -> Parquet, partitioned": (
                lambda: rows.write.partitionBy("event_type").parquet(path())),
            "cached rows -> Delta": delta(False),
            "cached rows -> Delta, partitioned": delta(True),
            "cached rows -> Delta, partitioned, no stats": with_conf(NO_STATS, delta(True)),
            "read + parse -> noop": through(lambda frame: frame),
            "read + parse + cache -> noop": through(lambda frame: frame.persist()),
            "... cache uncompressed": with_conf(RAW_CACHE, through(lambda f: f.persist())),
            "... local checkpoint": through(lambda frame: frame.localCheckpoint(eager=False)),
        }
        for action in cases.values():  # warm-up, not counted
            action()
        wall: dict[str, list[float]] = {name: [] for name in cases}
        busy: dict[str, list[float]] = {name: [] for name in cases}
        for round_ in range(args.rounds):
            names = list(cases) if round_ % 2 == 0 else list(reversed(cases))
            for name in names:
                with Timer() as timer, cpu:
                    cases[name]()
                wall[name].append(timer.seconds)
                busy[name].append(cpu.seconds)
        spark.stop()

    print(f"{args.events:,} events, median of {args.rounds} rounds")
    for name in cases:
        print(f"  {name:45s} {statistics.median(wall[name]):6.2f} s wall "
              f"{statistics.median(busy[name]):6.2f} s JVM CPU")


if __name__ == "__main__":
    main()
