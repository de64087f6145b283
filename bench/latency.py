"""End-to-end latency in continuous mode: from produce to visible in raw_events and event_counts.

Produces --rate events/s for --seconds into a private broker while the `raw_events` and
`event_counts` queries run with processing-time triggers, each started by
`runner.start(..., available_now=False)` as the continuous job's Supervisor starts them, in one
SparkSession. The trigger is each declaration's `trigger_interval` (what the job uses unless
its `trigger_interval` config overrides it) or --trigger. Not measured: the Supervisor's
Dagster side (query listener, per-batch events), which runs beside the queries, not in them.

Per event:

- produced at: the wall time (time.time()) at which the project's producer
  (dev/producer.produce, paced by its `rate`) takes the record to send it. The producer runs
  in a process of its own, as a real one would, and writes one time per event, indexed by the
  number in the event id.
- visible in raw_events: the commit time of the Delta version whose added files hold the
  event's row, taken as the modification time of `_delta_log/<version>.json`, whose creation
  is what makes the version visible to readers (DESCRIBE HISTORY reports the same time unless
  in-commit timestamps are on). The log is read after the run, so no poller competes with the
  queries for the cores while events flow (after the last send, a count once a second decides
  when every event has arrived).
- visible in event_counts: the commit time of the first event_counts version that writes the
  event's (window_start, event_type) row with event_count >= the number of measured events of
  that window and type in raw_events versions up to the event's own. An event_counts batch
  normally reads whole raw_events versions, so that is the batch that counted the event; if a
  batch reads part of a version, the figure is late by that one batch, never early.

Warm-up events (a day older, so in windows of their own) are sent before the measured ones, so
both tables exist and both queries have run a batch before the clock starts. With
--warmup-seconds the producer first sends that many seconds of unmeasured traffic at the same
rate (also a day older), then the measured events without a pause: the figures are then those
of a stream that has been running, not of a JVM's first batches.

    .venv/bin/python bench/latency.py [--rate 10000] [--seconds 60] [--trigger "1 second"]
                                      [--warmup-seconds 20] [--partitions 4] [--raw-only]
                                      [--timeline]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOPIC = "bench-latency"
MEASURED_PREFIX = "lat"
WARMUP_EVENTS = 2000
GOAL_P99_S = 2.0
COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


def produce_timed(bootstrap: str, topic: str, rate: int, count: int, start: datetime,
                  times_path: str, warmup: int = 0) -> None:
    """Producer process: send `warmup` unmeasured events, then the measured ones, at `rate`
    without a pause between them, recording each measured event's send time."""
    from itertools import chain

    from stream_assets.dev.generator import Record, generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    times = array("d")

    def stamped(records: Iterable[Record]) -> Iterator[Record]:
        # Stamped after the record is generated, right before produce() hands it to the client.
        for record in records:
            times.append(time.time())
            yield record

    spacing = timedelta(seconds=1 / rate)
    # Warm-up traffic is a day older, so it fills windows of its own in event_counts.
    warm = generate_events(warmup, seed=13, start=start - timedelta(days=1), spacing=spacing,
                           users=10_000, id_prefix="rate-warmup", topic=topic)
    # Event time follows wall time, as in a live stream, so windows fill and close as they
    # would in production (users spread the keys over all partitions).
    measured = generate_events(count, seed=11, start=start + warmup * spacing, spacing=spacing,
                               users=10_000, id_prefix=MEASURED_PREFIX, topic=topic)
    produce(stamped(chain(warm, measured)), KafkaConnection(bootstrap_servers=bootstrap),
            rate=rate, total=warmup + count)
    with open(times_path, "wb") as handle:
        times[warmup:].tofile(handle)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, queries: list) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for query in queries:
            if not query.isActive:
                raise RuntimeError(f"{query.name} stopped while waiting for {what}: "
                                   f"{query.exception()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:g} s")
        time.sleep(1)


def start_queries(ctx, connection, trigger: str | None, raw_only: bool = False) -> list:
    """Both queries running and past their first batch, before any measured event is sent.

    event_counts reads raw_events' Delta table, which exists once raw_events has written a
    batch; the Supervisor waits for it the same way.
    """
    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.sinks import is_delta_table
    from stream_assets.tables.catalog import event_counts, raw_events
    from stream_assets.tables.runner import start

    day_ago = datetime.now(UTC) - timedelta(days=1)
    produce(generate_events(WARMUP_EVENTS, seed=7, start=day_ago, spacing=timedelta(seconds=0.01),
                            id_prefix="warmup", topic=TOPIC), connection)
    queries = [start(raw_events, ctx, available_now=False, trigger_interval=trigger)]
    raw_path = ctx.lake.table_path("raw_events")
    wait_for(lambda: is_delta_table(ctx.spark, raw_path), 300, "raw_events' first batch", queries)
    if raw_only:
        return queries
    queries.append(start(event_counts, ctx, available_now=False, trigger_interval=trigger))
    counts_path = ctx.lake.table_path("event_counts")
    wait_for(lambda: is_delta_table(ctx.spark, counts_path), 300, "event_counts' first batch",
             queries)
    return queries


def commits(table_path: str) -> dict[int, tuple[float, list[str]]]:
    """Each version of a local Delta table: when it became visible, and the files it added."""
    found = {}
    for entry in (Path(table_path) / "_delta_log").iterdir():
        match = COMMIT_FILE.match(entry.name)
        if not match:
            continue  # checkpoints, checksums, compacted logs: no new versions
        actions = [json.loads(line) for line in entry.read_text().splitlines() if line]
        added = [unquote(a["add"]["path"]) for a in actions if "add" in a]
        found[int(match.group(1))] = (entry.stat().st_mtime, added)
    return found


def wait_until_counted(spark, raw_path: str, counts_path: str | None, count: int,
                       first_sent: float, queries: list, before: int = WARMUP_EVENTS) -> None:
    """Wait until every measured event is in both tables, or warn and let them be missing."""
    from pyspark.sql import functions as F

    # Measured windows start at most a window plus the generator's jitter before the first
    # send; the warm-up's are a day older.
    measured_windows = F.col("window_start") >= datetime.fromtimestamp(first_sent - 600, UTC)

    def counted() -> bool:
        total = (spark.read.format("delta").load(counts_path).where(measured_windows)
                 .agg(F.sum("event_count")).first()[0])
        return total == count

    try:
        wait_for(lambda: spark.read.format("delta").load(raw_path).count()
                 == before + count, 120, "every event in raw_events", queries)
        if counts_path is not None:
            wait_for(counted, 120, "every event counted in event_counts", queries)
    except TimeoutError as exc:
        print(f"warning: {exc}; events not visible by then are reported as missing")


def added_files(table_path: str, versions: dict[int, tuple[float, list[str]]]) -> list[str]:
    return [f"{table_path}/{p}" for _, files in versions.values() for p in files]


def rows_by_version(frame, versions: dict[int, tuple[float, list[str]]], columns: list):
    """The rows of `frame` (pandas), each with the version whose commit added its file."""
    from pyspark.sql import functions as F

    version_of = {Path(p).name: v for v, (_, files) in versions.items() for p in files}
    rows = frame.select(*columns, F.col("_metadata.file_name").alias("file")).toArrow()
    rows = rows.to_pandas()
    rows["version"] = rows.pop("file").map(version_of)
    return rows


def stop_between_batches(queries: list, timeout_s: float = 60) -> None:
    """Stop each query while no batch runs: a stop mid-MERGE cancels it and logs pages of errors."""
    deadline = time.monotonic() + timeout_s
    for query in queries:
        while (query.isActive and query.status.get("isTriggerActive")
               and time.monotonic() < deadline):
            time.sleep(0.2)
        query.stop()


def counts_visible_at(raw, counts, visible_at: dict[int, float]):
    """Per raw row, when event_counts first showed a count that includes it (NaN: never)."""
    keys = ["window", "event_type"]
    per_version = raw.groupby([*keys, "version"]).size().rename("n").reset_index()
    per_version = per_version.sort_values("version")
    per_version["needed"] = per_version.groupby(keys)["n"].cumsum()
    written: dict[tuple, list[tuple[int, int]]] = {}
    for row in counts.sort_values("version").itertuples():
        written.setdefault((row.window, row.event_type), []).append((row.version, row.event_count))
    first = []
    for row in per_version.itertuples():
        versions = [v for v, n in written.get((row.window, row.event_type), []) if n >= row.needed]
        first.append(visible_at[versions[0]] if versions else float("nan"))
    per_version["counts_at"] = first
    # A left merge keeps the order of `raw`, so the result lines up with its rows.
    merged = raw.merge(per_version[[*keys, "version", "counts_at"]], on=[*keys, "version"],
                       how="left")
    return merged["counts_at"].to_numpy()


def describe(name: str, latencies, total: int) -> tuple[float, float]:
    import numpy as np

    seen = latencies[~np.isnan(latencies)]
    p50, p99, top = np.percentile(seen, [50, 99, 100]) if len(seen) else (np.nan,) * 3
    print(f"{name:13s} p50 {p50:6.2f} s   p99 {p99:6.2f} s   max {top:6.2f} s   "
          f"({len(seen):,} of {total:,} events visible)")
    return p50, p99


def batch_line(query, since: float) -> str:
    """Median and slowest batch of a query while the measured events were flowing."""
    import statistics

    from stream_assets.tables.runner import progress_dict

    seconds, phases = [], {}
    for progress in map(progress_dict, query.recentProgress):
        stamp = datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00"))
        if stamp.timestamp() >= since and progress.get("numInputRows"):
            seconds.append(progress["durationMs"]["triggerExecution"] / 1000)
            for phase, ms in progress["durationMs"].items():
                phases.setdefault(phase, []).append(ms / 1000)
    if not seconds:
        return f"{query.name}: no batch with input reported"
    # Where a batch's time goes (Spark's own phase timings), to say what to cut next.
    split = ", ".join(f"{phase} {statistics.median(values):.2f}"
                      for phase, values in sorted(phases.items(), key=lambda kv: -max(kv[1]))
                      if phase != "triggerExecution")
    return (f"{query.name}: {len(seconds)} batches with input, median "
            f"{statistics.median(seconds):.2f} s, slowest {max(seconds):.2f} s "
            f"(from the last {len(query.recentProgress)} progress reports); "
            f"median s per phase: {split}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000, help="events per second")
    parser.add_argument("--seconds", type=int, default=60, help="how long to produce")
    parser.add_argument("--trigger", default=None,
                        help="processing-time trigger of both queries, e.g. '1 second'; "
                        "default: each declaration's trigger_interval, as the continuous job")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--raw-only", action="store_true",
                        help="run raw_events alone: its latency without event_counts competing "
                        "for the cores")
    parser.add_argument("--warmup-seconds", type=int, default=0,
                        help="produce at the same rate for this long before the measured "
                        "events: steady-state latency, without the first batches of a fresh "
                        "JVM (which compiles the hot code while they run)")
    parser.add_argument("--timeline", action="store_true",
                        help="also print each version committed while measuring")
    args = parser.parse_args()

    # Imported here, not at the top: the producer process imports this module too, and
    # should not load Dagster and a Spark resource before it starts sending.
    import numpy as np
    from pyspark.sql import functions as F

    from bench.common import broker, spark_resource
    from stream_assets.resources import DeltaLake, KafkaSource
    from stream_assets.resources.kafka import KafkaConnection
    from stream_assets.tables.catalog import raw_events
    from stream_assets.tables.runner import StreamContext
    from stream_assets.transforms.windows import TUMBLING_WINDOW

    count = args.rate * args.seconds
    warmup = args.rate * args.warmup_seconds
    trigger = args.trigger or f"{raw_events.trigger_interval} (declaration default)"
    work = Path(tempfile.mkdtemp(prefix="stream_assets_bench_latency_"))
    with broker() as kafka:
        kafka.create_topics([TOPIC], partitions=args.partitions)
        connection = KafkaConnection(bootstrap_servers=kafka.bootstrap)
        spark = spark_resource().spark_session
        lake = DeltaLake(tables_root=str(work / "tables"),
                         checkpoints_root=str(work / "checkpoints"))
        source = KafkaSource(bootstrap_servers=kafka.bootstrap, topic_names={"events": TOPIC})
        ctx = StreamContext(spark=spark, lake=lake, source=source)
        raw_path, counts_path = lake.table_path("raw_events"), lake.table_path("event_counts")
        queries = start_queries(ctx, connection, args.trigger, args.raw_only)
        try:
            print(f"queries running (trigger {trigger}); producing {count:,} events at "
                  f"{args.rate:,}/s after {warmup:,} unmeasured ones", flush=True)
            times_path = work / "produced_at.bin"
            # spawn, not fork: this process holds a JVM gateway and Spark's threads.
            producer = multiprocessing.get_context("spawn").Process(
                target=produce_timed,
                args=(kafka.bootstrap, TOPIC, args.rate, count, datetime.now(UTC),
                      str(times_path), warmup))
            producer.start()
            producer.join()
            if producer.exitcode != 0:
                raise RuntimeError(f"the producer process failed (exit code {producer.exitcode})")
            produced_at = np.fromfile(times_path, dtype=np.float64)
            first_sent, sent_for = produced_at[0], produced_at[-1] - produced_at[0]
            print(f"produced {count:,} events in {sent_for:.1f} s "
                  f"({(count - 1) / sent_for:,.0f} events/s)", flush=True)

            wait_until_counted(spark, raw_path, None if args.raw_only else counts_path, count,
                               first_sent, queries, WARMUP_EVENTS + warmup)
            lines = [batch_line(q, first_sent) for q in queries]
        finally:
            stop_between_batches(queries)

        raw_versions = commits(raw_path)
        count_versions = {} if args.raw_only else commits(counts_path)
        window_start = F.unix_seconds(F.window("timestamp", TUMBLING_WINDOW)["start"])
        # raw_events is append-only, so its latest snapshot holds every row it ever wrote.
        raw = rows_by_version(spark.read.format("delta").load(raw_path), raw_versions,
                              ["event_id", "event_type", window_start.alias("window")])
        raw = raw[raw["event_id"].str.startswith(f"{MEASURED_PREFIX}-")]
        index = raw["event_id"].str.slice(len(MEASURED_PREFIX) + 1).astype(int).to_numpy()
        # MERGE replaces files, so the counts each version wrote are in files it later removed:
        # read every file ever added, as Parquet (nothing vacuums them during the run).
        if not args.raw_only:
            counts = rows_by_version(
                spark.read.parquet(*added_files(counts_path, count_versions)), count_versions,
                ["event_type", F.unix_seconds("window_start").alias("window"), "event_count"])
        sent = produced_at[index]
        raw_at = raw["version"].map({v: at for v, (at, _) in raw_versions.items()}).to_numpy()
        counts_at = None if args.raw_only else counts_visible_at(
            raw, counts, {v: at for v, (at, _) in count_versions.items()})
        spark.stop()

    during = {name: sorted((v, at) for v, (at, _) in versions.items() if at >= first_sent)
              for name, versions in (("raw_events", raw_versions),
                                     ("event_counts", count_versions))}
    print(f"versions committed after the first send: raw_events {len(during['raw_events'])}, "
          f"event_counts {len(during['event_counts'])}")
    if args.timeline:
        measured_in = raw["version"].value_counts()
        print(f"  sends from 0.00 s to {sent_for:.2f} s")
        for name, versions in during.items():
            for version, at in versions:
                rows = f", {measured_in.get(version, 0):,} events" if name == "raw_events" else ""
                print(f"  {name} v{version} at {at - first_sent:.2f} s{rows}")
    for line in lines:
        print(f"  {line}")
    _, raw_p99 = describe("raw_events", raw_at - sent, count)
    counted = ""
    if counts_at is not None:
        _, counts_p99 = describe("event_counts", counts_at - sent, count)
        counted = f", event_counts p99 {counts_p99:.2f} s"
    verdict = "met" if raw_p99 < GOAL_P99_S else "missed"
    print(f"summary: {args.rate:,} events/s for {args.seconds} s"
          f"{f' after {args.warmup_seconds} s of warm-up' if warmup else ''}, trigger {trigger}"
          f"{' (raw_events alone)' if args.raw_only else ''}: raw_events p99 {raw_p99:.2f} s "
          f"(goal < {GOAL_P99_S:g} s: {verdict}){counted}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
