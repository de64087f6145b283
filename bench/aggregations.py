"""Aggregation benchmark: event_counts and user_sessions, Dagster vs plain PySpark; state size.

1. Throughput: N events (default 1,000,000) are produced and ingested into raw_events once.
   Then event_counts and user_sessions each run twice from that Delta table, in one
   SparkSession: as a plain PySpark query (same transform, foreachBatch MERGE written by
   hand) and as a Dagster materialization. Prints events/s and the ratio for each.
2. State size: user_sessions over events spread across four hours of event time, for
   10k, 100k and 1M distinct users; prints the state rows and bytes Spark reports at the
   end. State expires an hour after a user's last event, so rows stay near the number of
   users active in the last hour instead of growing with everyone ever seen.

    .venv/bin/python bench/aggregations.py [--events 1000000] [--state-events 300000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Timer, broker, spark_resource


def resources(spark_res, bootstrap: str, topic: str, root: Path) -> dict:
    from stream_assets.resources import DeltaLake, KafkaSource

    return {
        "spark": spark_res,
        "lake": DeltaLake(tables_root=str(root / "tables"),
                          checkpoints_root=str(root / "checkpoints")),
        "stream_source": KafkaSource(bootstrap_servers=bootstrap, topic_names={"events": topic}),
    }


def materialize(table, res: dict):
    from dagster import materialize as run

    from stream_assets.tables.assets import build_asset

    result = run([build_asset(table)], resources=res)
    assert result.success
    return result


def plain_merge(spark, source: str, transform, keys: tuple[str, ...], target: str,
                checkpoint: str) -> None:
    """The hand-written equivalent: read Delta, transform, MERGE each batch."""
    from delta.tables import DeltaTable

    def write(batch, batch_id):
        if not DeltaTable.isDeltaTable(batch.sparkSession, target):
            batch.write.format("delta").save(target)
            return
        cond = " AND ".join(f"t.{k} <=> s.{k}" for k in keys)
        (DeltaTable.forPath(batch.sparkSession, target).alias("t")
         .merge(batch.alias("s"), cond).whenMatchedUpdateAll().whenNotMatchedInsertAll()
         .execute())

    stream = transform(spark.readStream.format("delta").load(source))
    query = (stream.writeStream.outputMode("update").foreachBatch(write)
             .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())
    query.awaitTermination()


def produce_events(kafka, topic: str, count: int, users: int, spacing: timedelta) -> None:
    from stream_assets.dev.generator import Record, generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    kafka.create_topics([topic], partitions=4)
    records = (Record(topic, r.key, r.value, r.kind, r.event)
               for r in generate_events(count, seed=3, users=users, spacing=spacing,
                                        jitter=timedelta(seconds=20)))
    produce(records, KafkaConnection(bootstrap_servers=kafka.bootstrap), total=count,
            progress=True)


def shared_raw_lake(raw_path: str, root: Path):
    """A lake whose raw_events is the shared, already ingested table; the rest under `root`."""
    from stream_assets.resources import DeltaLake

    class _Lake(DeltaLake):
        def table_path(self, table: str) -> str:
            return raw_path if table == "raw_events" else super().table_path(table)

    return _Lake(tables_root=str(root / "tables"), checkpoints_root=str(root / "checkpoints"))


def throughput(kafka, spark_res, events: int, work: Path, rounds: int) -> list[str]:
    from stream_assets.tables import catalog
    from stream_assets.transforms import sessions, windows

    topic = "bench-agg"
    produce_events(kafka, topic, events, users=10_000, spacing=timedelta(milliseconds=20))
    res = resources(spark_res, kafka.bootstrap, topic, work / "lake")
    materialize(catalog.raw_events, res)
    spark = spark_res.spark_session
    raw = res["lake"].table_path("raw_events")
    lines = []
    for table, transform, keys in (
        (catalog.event_counts, windows.tumbling_counts, ("window_start", "event_type")),
        (catalog.user_sessions, sessions.user_sessions, ("user_id",)),
    ):
        def plain_run(tag: str, table=table, transform=transform, keys=keys) -> None:
            plain_merge(spark, raw, transform, keys, str(work / tag / table.name),
                        str(work / tag / f"{table.name}.ckpt"))

        def managed_run(tag: str, table=table) -> None:
            # A lake of its own per run (reading the shared raw_events), so every run starts
            # from an empty checkpoint, like the plain side.
            materialize(table, {**res, "lake": shared_raw_lake(raw, work / tag)})

        # An uncounted first pass: the first run of a query shape on a JVM is much slower
        # (class loading, JIT, state store set-up) and would otherwise favour whichever side
        # goes second. Then plain, Dagster, Dagster, plain; the median of each side.
        with Timer() as warm:
            plain_run(f"warm-{table.name}")
        print(f"  {table.name} warm-up (not counted): {warm.seconds:.1f} s", flush=True)
        times: dict[str, list[float]] = {"plain": [], "dagster": []}
        for index, side in enumerate(["plain", "dagster", "dagster", "plain"] * rounds):
            with Timer() as timer:
                (plain_run if side == "plain" else managed_run)(f"{side}-{index}")
            times[side].append(timer.seconds)
            print(f"  {table.name} {side:8s} run {index}: {timer.seconds:6.1f} s", flush=True)
        plain_s, managed_s = statistics.median(times["plain"]), statistics.median(times["dagster"])
        lines.append(
            f"{table.name:14s} plain {events / plain_s:9,.0f} ev/s  "
            f"dagster {events / managed_s:9,.0f} ev/s  "
            f"ratio {plain_s / managed_s:.2f}  (median of {len(times['plain'])} each)"
        )
        print(lines[-1], flush=True)
    return lines


def state_size(kafka, spark_res, events: int, work: Path) -> list[str]:
    from dagster import AssetKey

    from stream_assets.tables import catalog

    lines = []
    for users in (10_000, 100_000, 1_000_000):
        topic = f"bench-state-{users}"
        # Four hours of event time whatever the count: state must stay near one hour's users.
        spacing = timedelta(seconds=4 * 3600 / events)
        produce_events(kafka, topic, events, users=users, spacing=spacing)
        res = resources(spark_res, kafka.bootstrap, topic, work / f"state-{users}")
        materialize(catalog.raw_events, res)
        result = materialize(catalog.user_sessions, res)
        meta = {m.asset_key: m.metadata for m in
                result.asset_materializations_for_node("user_sessions")}[AssetKey("user_sessions")]
        rows = meta["state_rows"].value if "state_rows" in meta else 0
        size = meta["state_memory_bytes"].value if "state_memory_bytes" in meta else 0
        table_rows = meta["dagster/row_count"].value
        lines.append(f"users {users:>9,}: state rows {rows:>9,}  state bytes {size:>12,}  "
                     f"table rows {table_rows:>9,}")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--state-events", type=int, default=300_000)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-state", action="store_true")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repetitions of the order plain, Dagster, Dagster, plain")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stream_assets_bench_agg_"))
    with broker() as kafka:
        spark_res = spark_resource()
        lines = [] if args.skip_throughput else throughput(kafka, spark_res, args.events, work,
                                                           args.rounds)
        if not args.skip_state:
            lines += state_size(kafka, spark_res, args.state_events, work)
        spark_res.spark_session.stop()
    print("\n".join(["", "summary:", *lines]))


if __name__ == "__main__":
    main()
