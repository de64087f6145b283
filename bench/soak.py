"""Soak (issue 30, item 1; a skeleton): raw_events and event_counts running for a long time.

Produces --rate events/s into a private broker for --minutes while both queries run with
processing-time triggers (each declaration's, or --trigger), started by `runner.start` as the
continuous job starts them, and every --sample-minutes appends one JSON line per query to
--out with what grows over a stream's life:

- batch duration p50 / p99 (ms) over the batches since the last sample, batches, rows;
- the table's live files, bytes, average file size, `_delta_log` files and bytes
  (tables/maintenance_run.table_figures), and the checkpoint folder's files and bytes;
- state rows and bytes (the last progress report), the driver JVM's used heap.

With --maintain-minutes N, each table is maintained as declared (compaction, VACUUM when due:
tables/maintenance_run.maintain) every N minutes in the same session, as the maintain_tables
job would; without it, nothing compacts and the growth of an unmaintained table shows.

Not yet here (issue 30, item 1): the other demo tables, a start from a pre-filled table (a
month of small files), the Dagster event log's rows and size, and the chart.

    .venv/bin/python bench/soak.py [--rate 2000] [--minutes 60] [--sample-minutes 5]
                                   [--maintain-minutes 15] [--out soak.jsonl]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOPIC = "bench-latency"  # bench/latency.py's start_queries warms this topic up


def produce_for(bootstrap: str, rate: int, seconds: int) -> None:
    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    count = rate * seconds
    events = generate_events(count, seed=31, start=datetime.now(UTC),
                             spacing=timedelta(seconds=1 / rate), users=10_000,
                             id_prefix="soak", topic=TOPIC)
    produce(events, KafkaConnection(bootstrap_servers=bootstrap), rate=rate, total=count)


def folder_size(path: str) -> tuple[int, int]:
    files = sizes = 0
    for root, _, names in os.walk(path):
        for name in names:
            files += 1
            sizes += os.path.getsize(os.path.join(root, name))
    return files, sizes


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sample(spark, lake, query, seen: set) -> dict:
    from stream_assets.tables.maintenance_run import table_figures

    reports = [p for p in query.recentProgress if p.batchId not in seen]
    seen.update(p.batchId for p in reports)
    durations = [p.durationMs.get("triggerExecution", 0) for p in reports if p.numInputRows]
    last = reports[-1] if reports else query.lastProgress
    state = last.stateOperators if last is not None else []
    runtime = spark._jvm.java.lang.Runtime.getRuntime()
    files, size = folder_size(lake.checkpoint_path(query.name))
    return {
        "at": time.time(), "query": query.name, "batches": len(durations),
        "rows": sum(p.numInputRows for p in reports),
        "batch_ms_p50": percentile(durations, 0.5), "batch_ms_p99": percentile(durations, 0.99),
        **table_figures(spark, lake.table_path(query.name), lake.files),
        "checkpoint_files": files, "checkpoint_bytes": size,
        "state_rows": sum(op.numRowsTotal for op in state),
        "state_bytes": sum(op.memoryUsedBytes for op in state),
        "driver_heap_used_bytes": runtime.totalMemory() - runtime.freeMemory(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="events per second")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--sample-minutes", type=float, default=5)
    parser.add_argument("--maintain-minutes", type=float, default=None)
    parser.add_argument("--trigger", default=None)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--out", default="soak.jsonl")
    args = parser.parse_args()

    from bench.common import broker, spark_resource
    from bench.latency import start_queries, stop_between_batches
    from stream_assets.resources import DeltaLake, KafkaSource
    from stream_assets.resources.kafka import KafkaConnection
    from stream_assets.tables.catalog import event_counts, raw_events
    from stream_assets.tables.maintenance_run import maintain
    from stream_assets.tables.runner import StreamContext

    work = Path(tempfile.mkdtemp(prefix="stream_assets_bench_soak_"))
    with broker() as kafka, open(args.out, "a") as out:
        kafka.create_topics([TOPIC], partitions=args.partitions)
        spark = spark_resource().spark_session
        lake = DeltaLake(tables_root=str(work / "tables"),
                         checkpoints_root=str(work / "checkpoints"))
        source = KafkaSource(bootstrap_servers=kafka.bootstrap, topic_names={"events": TOPIC})
        ctx = StreamContext(spark=spark, lake=lake, source=source)
        queries = start_queries(ctx, KafkaConnection(bootstrap_servers=kafka.bootstrap),
                                args.trigger)
        seconds = int(args.minutes * 60)
        producer = multiprocessing.get_context("spawn").Process(
            target=produce_for, args=(kafka.bootstrap, args.rate, seconds))
        producer.start()
        seen: dict[str, set] = {q.name: set() for q in queries}
        readers = {"raw_events": {"event_counts": lake.checkpoint_path("event_counts")}}
        vacuumed: dict[str, float] = {}
        started = next_sample = next_maintenance = time.monotonic()
        next_sample += args.sample_minutes * 60
        if args.maintain_minutes:
            next_maintenance += args.maintain_minutes * 60
        try:
            while time.monotonic() - started < seconds:
                time.sleep(1)
                if args.maintain_minutes and time.monotonic() >= next_maintenance:
                    next_maintenance += args.maintain_minutes * 60
                    for table in (raw_events, event_counts):
                        for name in table.tables:
                            report = maintain(spark, name, lake.table_path(name),
                                              table.maintenance, readers.get(name, {}),
                                              lake.files, vacuumed.get(name))
                            if report.vacuum is not None:
                                vacuumed[name] = time.time()
                            out.write(json.dumps({"at": time.time(), "maintained": name,
                                                  **report.metadata(time.time())}) + "\n")
                if time.monotonic() >= next_sample:
                    next_sample += args.sample_minutes * 60
                    for query in queries:
                        line = sample(spark, lake, query, seen[query.name])
                        out.write(json.dumps(line) + "\n")
                        print(json.dumps(line), flush=True)
                    out.flush()
        finally:
            producer.terminate()
            stop_between_batches(queries)


if __name__ == "__main__":
    main()
