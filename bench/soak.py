"""Soak (issue 30): the continuous job on the demo's tables for a long time, and what grows.

Runs the product's own `continuous_streams` job (build_definitions over the demo's tables,
`execute_in_process` on a DagsterInstance on disk, with the demo's dagster.yaml: SQLite
storage, pools) for --minutes while producer processes send the demo's traffic at --rate
events/s (2 % bad records, and a tenth as many ad impressions with their clicks) to a private
broker. The job stops itself after --minutes (its `max_runtime_s`). Beside it, in the same
process and SparkSession, a thread:

- collects every query's progress reports (StreamingQueryProgress) as they come;
- every --sample-minutes writes, per query and table: batch duration p50 / p99 over the
  batches with input since the last sample, live files and bytes (DESCRIBE DETAIL, as the
  maintenance job measures them), the `_delta_log`'s files and bytes and its last Delta
  checkpoint's bytes, the streaming checkpoint folder's files and bytes, state rows and
  bytes (the last progress); and once per sample the driver JVM's used heap, the process's
  RSS (Python and JVM), and the Dagster event log's rows and bytes (SQLite files under
  DAGSTER_HOME, rows by event type);
- every --maintain-minutes runs the `maintain_tables` job in the same instance, as its
  schedule would (0: no maintenance: the growth of an unmaintained table shows).

--prefill-files N first fills raw_events (and dead_letter_queue, a tenth as many) with N
small files in commits of --prefill-files-per-commit, through the project's idempotent
append (sinks.append_once, under an app id of its own): a table that already holds a long
history, without waiting for it. The prefilled rows carry topic 'prefill', so the exactly-once
count at the end still compares the topic with what the queries wrote.

At the end it prints the goals' ratios (bench/soak_figures.py) and writes --out.json (every
sample and the summary), --out.csv (the table samples), --out.txt (the report) and --out.png
(the chart; the bench extra's matplotlib). docs/benchmarks.md, "Soak", has the figures.

    .venv/bin/python bench/soak.py [--minutes 60] [--rate 200] [--sample-minutes 5]
        [--maintain-minutes 15] [--tables raw_events,event_counts] [--prefill-files 0]
        [--young previous.json] [--out soak]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.soak_figures import (  # noqa: E402  (after the path: runnable as a script)
    event_log_growth,
    first_maintenance_ratio,
    live_file_bounds,
    percentile,
    steady_ratios,
)
from bench.soak_oracle import Traffic, closers, compare  # noqa: E402
from stream_assets.monitoring.listener import PROGRESS, QueryEventListener  # noqa: E402

DAGSTER_YAML = ROOT / "deploy" / "local" / "dagster.yaml"  # the demo's instance
PREFILL_TOPIC = "prefill"


# -- traffic -------------------------------------------------------------------------------------

def produce_events(bootstrap: str, traffic: Traffic) -> None:
    """Producer process: the demo's events, 2 % bad, stamped as they are sent."""
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    produce(traffic.events(), KafkaConnection(bootstrap_servers=bootstrap), rate=traffic.rate,
            total=int(traffic.rate * traffic.seconds))


def produce_ads(bootstrap: str, traffic: Traffic) -> None:
    """Producer process: impressions (and their clicks) at a tenth of the events' rate."""
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    produce(traffic.ads(), KafkaConnection(bootstrap_servers=bootstrap),
            rate=traffic.rate / 10 * 1.3)


# -- a long history, quickly ---------------------------------------------------------------------

def filler_rows(spark, schema, first: int, count: int, partitions: int):
    """`count` rows of `schema` in `partitions` tasks, with values of the right types: ids
    from `first`, topic 'prefill', times a month ago."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        IntegerType,
        LongType,
        MapType,
        StringType,
        TimestampType,
    )

    month_ago = F.lit(datetime.now(UTC) - timedelta(days=30)).cast("timestamp")
    types = ("click", "view", "purchase", "signup", "logout")
    columns = []
    for field in schema.fields:
        kind, name = field.dataType, field.name
        if name == "topic":
            value = F.lit(PREFILL_TOPIC)
        elif name == "event_type":
            value = F.element_at(F.array(*map(F.lit, types)), (F.col("id") % 5 + 1).cast("int"))
        elif isinstance(kind, StringType):
            value = F.concat(F.lit(f"prefill-{name}-"), F.col("id").cast("string"))
        elif isinstance(kind, LongType):
            value = F.col("id")
        elif isinstance(kind, IntegerType):
            value = F.lit(0)
        elif isinstance(kind, TimestampType):
            value = month_ago + F.make_interval(secs=F.col("id").cast("decimal(18,6)"))
        elif isinstance(kind, MapType):
            value = F.create_map(F.lit("duration"), F.lit("1.0"))
        else:
            value = F.lit(None).cast(kind)
        columns.append(value.cast(kind).alias(name))
    return spark.range(first, first + count, 1, partitions).select(*columns)


def prefill(spark, lake, table, files: int, per_commit: int) -> dict[str, int]:
    """Fill `table`'s tables with about `files` small files (a tenth in its dead letters) in
    commits of `per_commit`, through the product's idempotent append; the number of files each
    got."""
    from stream_assets.schemas import DEAD_LETTER_QUEUE, RAW_EVENTS
    from stream_assets.sinks import append_once

    made = {}
    # One file per row, however few tasks write them: a long history's many small files
    # without a task each (Spark's per-task cost would make the prefill as slow as the month).
    spark.conf.set("spark.sql.files.maxRecordsPerFile", "1")
    for name, schema, wanted, partition_by in (
            (table.name, RAW_EVENTS, files, table.partition_by),
            (table.dead_letter_table, DEAD_LETTER_QUEUE, files // 10, ())):
        commits = max(1, -(-wanted // per_commit))
        for n in range(commits):
            count = min(per_commit, wanted - n * per_commit)
            rows = filler_rows(spark, schema, n * per_commit, count, 2)
            append_once(rows, lake.table_path(name), "soak", name, n, partition_by,
                        table.property_pairs, app="stream_assets/soak-prefill")
        made[name] = wanted
        print(f"prefilled {name}: {made[name]:,} files in {commits} commits", flush=True)
    spark.conf.unset("spark.sql.files.maxRecordsPerFile")
    return made


def first_batch(spark, lake, source, table, bootstrap: str) -> None:
    """The table's query run once over a few events, so that its table and checkpoint exist
    (the checkpoint guard refuses a table without its query's checkpoint) before the prefill
    ages the table."""
    from stream_assets.dev.generator import generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection
    from stream_assets.tables.runner import StreamContext, start

    produce(generate_events(100, seed=29, start=datetime.now(UTC), id_prefix="soak-first"),
            KafkaConnection(bootstrap_servers=bootstrap))
    start(table, StreamContext(spark=spark, lake=lake, source=source),
          available_now=True).awaitTermination()


# -- what is measured ----------------------------------------------------------------------------

def folder_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                size += os.path.getsize(os.path.join(root, name))
                files += 1
            except FileNotFoundError:  # removed while walking (Spark's cleanup)
                pass
    return files, size


def delta_checkpoint_bytes(table_path: str) -> int:
    """Bytes of the table's latest Delta checkpoint (0 before its first)."""
    log = Path(table_path) / "_delta_log"
    try:
        version = json.loads((log / "_last_checkpoint").read_text())["version"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0
    return sum(p.stat().st_size for p in log.glob(f"{version:020d}.checkpoint*"))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def event_log(dagster_home: Path) -> dict:
    """The instance's event log: rows (the run shards' event_logs, every run), rows by event
    type, and bytes (every SQLite file of its storage, index and write-ahead logs included)."""
    history = dagster_home / "history"
    rows, by_type = 0, {}
    for db in sorted(history.rglob("*.db")):
        if db.name in ("runs.db", "index.db"):
            continue  # runs.db: the runs; index.db: the asset events again, indexed
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
                found = con.execute("SELECT dagster_event_type, COUNT(*), SUM(LENGTH(event)) "
                                    "FROM event_logs GROUP BY 1").fetchall()
        except sqlite3.Error:
            continue
        for kind, count, size in found:
            key = kind or "log message"
            held = by_type.setdefault(key, [0, 0])
            held[0] += count
            held[1] += size or 0
            rows += count
    _, size = folder_size(history)
    _, logs = folder_size(dagster_home / "storage")
    return {"event_log_rows": rows, "event_log_bytes": size, "compute_log_bytes": logs,
            "event_log_by_type": {k: {"rows": v[0], "bytes": v[1]} for k, v in by_type.items()},
            "materialization_metadata_bytes": metadata_sizes(history)}


def metadata_sizes(history: Path) -> dict[str, int]:
    """Bytes of each metadata entry in the newest materialization: what makes an event big."""
    try:
        with sqlite3.connect(f"file:{history / 'runs' / 'index.db'}?mode=ro", uri=True,
                             timeout=5) as con:
            row = con.execute("SELECT event FROM event_logs WHERE dagster_event_type = "
                              "'ASSET_MATERIALIZATION' ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return {}
    if not row:
        return {}

    def find(node):
        """The metadata, as a dict of entries: Dagster stores it as `metadata_entries` (a
        list of labelled entries) or `metadata` (a dict), depending on the version."""
        if isinstance(node, dict):
            if isinstance(node.get("metadata"), dict):
                return node["metadata"]
            if isinstance(node.get("metadata_entries"), list):
                return {e.get("label", "?"): e for e in node["metadata_entries"]
                        if isinstance(e, dict)}
            for value in node.values():
                found = find(value)
                if found is not None:
                    return found
        elif isinstance(node, list):
            for value in node:
                found = find(value)
                if found is not None:
                    return found
        return None

    metadata = find(json.loads(row[0])) or {}
    return dict(sorted(((k, len(json.dumps(v))) for k, v in metadata.items()),
                       key=lambda kv: -kv[1]))


class Sampler(threading.Thread):
    """Beside the job: progress collected, samples written, maintenance run when due."""

    def __init__(self, args, spark, lake, tables, instance, dagster_home: Path,
                 maintain_job) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.args, self.spark, self.lake, self.tables = args, spark, lake, tables
        self.instance, self.dagster_home, self.maintain_job = instance, dagster_home, maintain_job
        self.began = time.monotonic()
        self.progress: dict[str, dict[tuple[str, int], dict]] = {}
        # The product's own listener (what the continuous job reads its progress from).
        self.listener = QueryEventListener()
        spark.streams.addListener(self.listener)
        self.sampled: dict[str, set] = {}
        self.samples: list[dict] = []
        self.done = threading.Event()
        self.maintaining: threading.Thread | None = None
        self.jvm_pid = int(spark._jvm.java.lang.ProcessHandle.current().pid())

    def minute(self) -> float:
        return round((time.monotonic() - self.began) / 60, 3)

    def collect(self) -> None:
        for event in self.listener.drain():
            if event.kind != PROGRESS or not event.progress:
                continue
            p, operators = event.progress, event.progress.get("stateOperators") or []
            self.progress.setdefault(p.get("name"), {})[(event.run_id, p["batchId"])] = {
                "rows": int(p.get("numInputRows") or 0),
                "ms": int((p.get("durationMs") or {}).get("triggerExecution") or 0),
                "state_rows": sum(int(op.get("numRowsTotal") or 0) for op in operators),
                "state_bytes": sum(int(op.get("memoryUsedBytes") or 0) for op in operators)}

    def sample(self) -> None:
        from stream_assets.tables.maintenance_run import table_figures

        self.collect()
        minute, at = self.minute(), time.time()
        for table in self.tables:
            held = self.progress.get(table.name, {})
            seen = self.sampled.setdefault(table.name, set())
            new = [v for k, v in held.items() if k not in seen]
            seen.update(held)
            durations = [b["ms"] for b in new if b["rows"]]
            last = list(held.values())[-1] if held else {}
            files, size = folder_size(Path(self.lake.checkpoint_path(table.name)))
            query = {"query": table.name, "batches": len(new), "batches_with_rows": len(durations),
                     "rows": sum(b["rows"] for b in new),
                     "batch_ms_p50": percentile(durations, 0.5),
                     "batch_ms_p99": percentile(durations, 0.99),
                     "checkpoint_files": files, "checkpoint_bytes": size,
                     "state_rows": last.get("state_rows"), "state_bytes": last.get("state_bytes")}
            for name in table.tables:
                path = self.lake.table_path(name)
                row = {"kind": "table", "minute": minute, "at": at, **query, "table": name}
                if (Path(path) / "_delta_log").exists():
                    try:
                        row.update(table_figures(self.spark, path, self.lake.files))
                    except Exception as exc:
                        row["error"] = str(exc)[:200]
                    row["delta_checkpoint_bytes"] = delta_checkpoint_bytes(path)
                self.samples.append(row)
                print(json.dumps(row), flush=True)
        runtime = self.spark._jvm.java.lang.Runtime.getRuntime()
        log = event_log(self.dagster_home)
        row = {"kind": "instance", "minute": minute, "at": at,
               "driver_heap_used_bytes": runtime.totalMemory() - runtime.freeMemory(),
               "jvm_rss_bytes": rss_bytes(self.jvm_pid),
               "python_rss_bytes": rss_bytes(os.getpid()),
               "load_1m": os.getloadavg()[0], **log}
        self.samples.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "event_log_by_type"}), flush=True)

    def maintain(self) -> None:
        """The maintain_tables job, as its schedule launches it, in the run's instance."""
        minute = self.minute()
        began = time.monotonic()
        result = self.maintain_job.execute_in_process(instance=self.instance,
                                                      raise_on_error=False)
        seconds = round(time.monotonic() - began, 1)
        for table in self.tables:
            self.samples.append({"kind": "maintenance", "minute": minute, "query": table.name,
                                 "ended_minute": self.minute(), "seconds": seconds,
                                 "success": result.success})
        print(f"maintain_tables at minute {minute}: {'ok' if result.success else 'FAILED'} "
              f"in {seconds} s", flush=True)

    def run(self) -> None:
        args = self.args
        next_sample = args.sample_minutes * 60
        next_maintain = args.maintain_minutes * 60 if args.maintain_minutes else None
        while not self.done.wait(5):
            elapsed = time.monotonic() - self.began
            try:
                if next_maintain is not None and elapsed >= next_maintain:
                    next_maintain += args.maintain_minutes * 60
                    # A run of its own beside the sampling, as the schedule launches it; a run
                    # still going when the next is due makes that one wait (skipped).
                    if self.maintaining is None or not self.maintaining.is_alive():
                        self.maintaining = threading.Thread(target=self.maintain, daemon=True)
                        self.maintaining.start()
                if elapsed >= next_sample:
                    next_sample += args.sample_minutes * 60
                    self.sample()
            except Exception as exc:  # a sample missed is no reason to stop sampling
                print(f"sampler: {type(exc).__name__}: {exc}", flush=True)


# -- the run -------------------------------------------------------------------------------------

def landed_once(lake, bootstrap: str, tables) -> str:
    """Exactly once: the events topic's records against raw_events + its dead letters (the
    prefill excluded), read with delta-rs."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    from stream_assets import schemas
    from stream_assets.dev.producer import topic_record_count
    from stream_assets.resources.kafka import KafkaConnection

    if "raw_events" not in [t.name for t in tables]:
        return "not checked (raw_events not run)"
    sent = topic_record_count(KafkaConnection(bootstrap_servers=bootstrap), schemas.EVENT_TOPIC)
    landed = sum(DeltaTable(lake.table_path(name)).to_pyarrow_dataset().count_rows(
        filter=ds.field("topic") == schemas.EVENT_TOPIC)
        for name in ("raw_events", "dead_letter_queue"))
    verdict = "every record once" if landed == sent else "MISMATCH"
    return f"{sent:,} records in the topic, {landed:,} in raw_events + dead_letter_queue: {verdict}"


def close_and_compare(defs, instance, lake, bootstrap: str, traffic: Traffic, tables
                      ) -> dict[str, str]:
    """The derived tables against the reference (bench/soak_oracle.py), after a record per
    topic a day ahead closed every window and a catch-up run of the tables wrote them."""
    from dagster import AssetKey

    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    derived = [t.name for t in tables if t.name not in ("raw_events", "dead_letter_queue")]
    if not derived:
        return {}
    closed_at = traffic.start + timedelta(seconds=traffic.seconds) + timedelta(days=1)
    produce(closers(closed_at), KafkaConnection(bootstrap_servers=bootstrap))
    job = defs.resolve_implicit_global_asset_job_def()
    try:
        # Every table a query writes: a query's asset cannot be run without its dead letters.
        caught_up = job.execute_in_process(
            instance=instance, asset_selection=[AssetKey(n) for t in tables for n in t.tables],
            raise_on_error=False)
        if not caught_up.success:
            return {name: "not compared: the catch-up run after the closers failed"
                    for name in derived}
        return compare(lake, bootstrap, traffic, derived, closed_at)
    except Exception as exc:  # the soak's own figures are still worth writing
        return {name: f"not compared: {type(exc).__name__}: {str(exc)[:300]}"
                for name in derived}


def write_outputs(out: Path, samples: list[dict], summary: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "samples": samples},
                                                   indent=1))
    rows = [s for s in samples if s["kind"] == "table"]
    if rows:
        fields = sorted({k for r in rows for k in r})
        with open(out.with_suffix(".csv"), "w", newline="") as handle:
            writer = csv.DictWriter(handle, fields)
            writer.writeheader()
            writer.writerows(rows)
    try:
        from bench.soak_chart import draw
    except ImportError as exc:  # matplotlib: the bench extra
        print(f"no chart ({exc}); pip install 'stream_assets[bench]'")
        return
    draw(samples, summary, out.with_suffix(".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200, help="events per second")
    parser.add_argument("--sample-minutes", type=float, default=5)
    parser.add_argument("--warmup-minutes", type=float, default=None,
                        help="the steady ratio's start; default: the first sample")
    parser.add_argument("--maintain-minutes", type=float, default=15,
                        help="run maintain_tables this often (0: never)")
    parser.add_argument("--tables", type=lambda s: s.split(","), default=None,
                        help="comma-separated queries; default: every demo table")
    parser.add_argument("--trigger", default=None, help="every query's trigger; default: "
                        "each declaration's")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--prefill-files", type=int, default=0)
    parser.add_argument("--prefill-files-per-commit", type=int, default=200)
    parser.add_argument("--young", type=Path, default=None,
                        help="a previous soak's .json: its raw_events p50 at the end is the "
                        "young table's batch cost the prefilled one is compared with")
    parser.add_argument("--out", type=Path, default=Path("soak"))
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # Spark's and Dagster's lines interleave

    from dagster import AssetKey, DagsterInstance, materialize

    from bench.common import broker
    from stream_assets import schemas
    from stream_assets.demo_assets import user_dimension
    from stream_assets.project import build_definitions
    from stream_assets.resources import DeltaLake, KafkaSource, SparkResource
    from stream_assets.tables.catalog import TABLES

    tables = [t for t in TABLES if args.tables is None or t.name in args.tables]
    work = Path(tempfile.mkdtemp(prefix="stream_assets_bench_soak_"))
    dagster_home = work / "dagster"
    dagster_home.mkdir()
    shutil.copy(DAGSTER_YAML, dagster_home / "dagster.yaml")
    seconds = args.minutes * 60
    print(f"soak: {', '.join(t.name for t in tables)} for {args.minutes:g} min at "
          f"{args.rate:g} events/s; load {os.getloadavg()}; work {work}", flush=True)
    with broker() as kafka, DagsterInstance.from_config(str(dagster_home)) as instance:
        kafka.create_topics(schemas.TOPICS, partitions=args.partitions)
        spark_resource = SparkResource(stop_on_teardown=False)
        spark = spark_resource.spark_session
        lake = DeltaLake(tables_root=str(work / "tables"),
                         checkpoints_root=str(work / "checkpoints"))
        resources = {"spark": spark_resource, "lake": lake,
                     "stream_source": KafkaSource(bootstrap_servers=kafka.bootstrap)}
        needs_users = any("user_dimension" in t.static for t in tables)
        # The schedule is the soak's to run (--maintain-minutes), in this process.
        defs = build_definitions(tables, resources=resources,
                                 assets=[user_dimension] if needs_users else [],
                                 maintenance_schedule=None)
        if needs_users:
            assert materialize([user_dimension], resources=resources, instance=instance,
                               selection=[AssetKey("user_dimension")]).success
        made = {}
        if args.prefill_files:
            raw = next(t for t in tables if t.name == "raw_events")
            began = time.monotonic()
            first_batch(spark, lake, resources["stream_source"], raw, kafka.bootstrap)
            made = prefill(spark, lake, raw, args.prefill_files, args.prefill_files_per_commit)
            print(f"prefill took {time.monotonic() - began:.0f} s", flush=True)
        spawn = multiprocessing.get_context("spawn")  # this process holds a JVM gateway
        traffic = Traffic(datetime.now(UTC), args.rate, seconds)
        producers = [spawn.Process(target=produce_events, args=(kafka.bootstrap, traffic)),
                     spawn.Process(target=produce_ads, args=(kafka.bootstrap, traffic))]
        for producer in producers:
            producer.start()
        sampler = Sampler(args, spark, lake, tables, instance, dagster_home,
                          defs.resolve_job_def("maintain_tables"))
        sampler.start()
        config = {"max_runtime_s": seconds}
        if args.trigger:
            config["trigger_interval"] = args.trigger
        try:
            result = defs.resolve_job_def("continuous_streams").execute_in_process(
                run_config={"ops": {"run_streams": {"config": config}}}, instance=instance,
                raise_on_error=False)
        finally:
            sampler.done.set()
            sampler.join()
            if sampler.maintaining is not None:  # a maintenance run in flight finishes
                sampler.maintaining.join()
            for producer in producers:
                producer.terminate()
        sampler.sample()  # the queries have stopped: the tables and the instance as left
        once = landed_once(lake, kafka.bootstrap, tables)
        derived = close_and_compare(defs, instance, lake, kafka.bootstrap, traffic, tables)

    samples = sampler.samples
    warmup = args.warmup_minutes if args.warmup_minutes is not None else args.sample_minutes
    young = None
    if args.young:
        previous = json.loads(args.young.read_text())["summary"]["steady"]
        # The young table at the end of its soak: past its cold first batches, still young.
        young = previous.get("raw_events", {}).get("end_p50_ms")
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "command": " ".join(sys.argv),
        "minutes": args.minutes, "rate": args.rate, "tables": [t.name for t in tables],
        "maintain_minutes": args.maintain_minutes, "prefilled": made,
        "job_success": result.success, "load_after": os.getloadavg(),
        "steady": steady_ratios(samples, warmup, args.sample_minutes),
        "live_files": live_file_bounds(samples),
        "event_log": event_log_growth(samples),
        "exactly_once": once,
        "derived_tables": derived,
    }
    if made:
        summary["first_maintenance"] = first_maintenance_ratio(samples, "raw_events", young)
    write_outputs(args.out, samples, summary)
    text = report(summary, [s for s in samples if s["kind"] == "instance"][-1])
    args.out.with_suffix(".txt").write_text(text)
    print(text, flush=True)
    shutil.rmtree(work, ignore_errors=True)


def report(summary: dict, last_instance: dict) -> str:
    lines: list[str] = []
    say = lines.append  # the report is text, printed and kept beside the samples
    say(f"\nsoak of {summary['minutes']:g} min at {summary['rate']:g} events/s, "
          f"maintenance every {summary['maintain_minutes']:g} min; job "
          f"{'succeeded' if summary['job_success'] else 'FAILED'}")
    say("batch p50 at the end / after warm-up (goal <= 1.2):")
    for query, s in summary["steady"].items():
        say(f"  {query:22s} {s['warm_p50_ms']} ms (min {s['warm_minute']:.1f}) -> "
              f"{s['end_p50_ms']} ms (min {s['end_minute']:.1f}): {s['ratio']}")
    say("live files, most and at the end:")
    for table, f in summary["live_files"].items():
        say(f"  {table:22s} {f['max']:>7,} {f['end']:>7,}")
    first = summary.get("first_maintenance")
    if first:
        say(f"prefilled raw_events: batch p50 {first['aged_p50_ms']} ms before the first "
              f"maintenance (minute {first['first_maintenance_minute']:.1f}), "
              f"{first['maintained_p50_ms']} ms after it (ended minute "
              f"{first['ended_minute']:.1f}): {first['maintained_over_aged']} of the "
              f"aged cost; a young table's {first['young_p50_ms']} ms: "
              f"{first['maintained_over_young']} (goal <= 1.2)")
    growth = summary["event_log"]
    if growth["rows_per_hour"] is not None:
        say(f"Dagster event log: {last_instance['event_log_rows']:,} rows, "
              f"{last_instance['event_log_bytes'] / 1e6:.1f} MB at the end; "
              f"{growth['rows_per_hour']:,.0f} rows/h, {growth['bytes_per_hour'] / 1e6:.1f} MB/h "
              f"-> {growth['rows_per_day']:,.0f} rows/day, "
              f"{growth['bytes_per_day'] / 1e6:.0f} MB/day")
    for kind, v in sorted(last_instance["event_log_by_type"].items(),
                          key=lambda kv: -kv[1]["rows"]):
        say(f"  {kind:32s} {v['rows']:>8,} rows {v['bytes'] / 1e3:>9,.0f} kB")
    say(f"exactly once: {summary['exactly_once']}")
    for table, verdict in summary.get("derived_tables", {}).items():
        say(f"  {table:22s} against plain Python: {verdict}")
    say(f"compute logs (captured stdout/stderr) at the end: "
          f"{last_instance['compute_log_bytes'] / 1e6:.1f} MB")
    say("newest materialization's metadata, bytes per entry: " + ", ".join(
        f"{k} {v}" for k, v in last_instance["materialization_metadata_bytes"].items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
