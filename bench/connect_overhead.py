"""Fixed cost of a materialization with no new data: local SparkSession vs Spark Connect.

Dagster runs each run in a process of its own (the default run launcher, and every step with
the multiprocess executor). With a local SparkSession that process starts a JVM and a
SparkContext before the query can look for new input; with Spark Connect it opens a gRPC
session on a server that keeps running. This benchmark produces events to a private broker,
materializes the tables once per mode to consume them (not timed), then --runs more times with
nothing new, each in a fresh process (stream_assets_tests.cluster_runner), and prints per mode
the median wall time of the process and of Dagster's `materialize` call inside it. A third row
runs the local mode --runs times in one process that keeps its SparkSession: what the query
itself costs once no JVM has to start (not how Dagster runs, shown for the breakdown).

    .venv/bin/python bench/connect_overhead.py [--runs 5] [--events 1000] [--tables raw_events]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Timer, broker
from stream_assets.dev.generator import Record, generate_events
from stream_assets.dev.producer import produce
from stream_assets.dev.spark_cluster import ConnectServer
from stream_assets.resources.kafka import KafkaConnection
from stream_assets_tests.cluster_runner import materialize_elsewhere


def no_new_data_runs(where: list[str], runs: int, root: Path, bootstrap: str, topic: str,
                     tables: list[str]) -> list[tuple[float, float]]:
    """(process seconds, materialize seconds) of each run after a first, untimed one."""
    common = dict(bootstrap=bootstrap, topics={"events": topic}, tables=tables,
                  tables_root=root / "tables", checkpoints_root=root / "checkpoints")
    materialize_elsewhere(where, **common)  # consumes the input: later runs find nothing new
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        report = materialize_elsewhere(where, **common)
        process = time.perf_counter() - started
        (run,) = report["runs"]
        assert all(m.get("rows_read", 0) == 0 for m in run["assets"].values()), run
        timings.append((process, run["seconds"]))
    return timings


def describe(name: str, timings: list[tuple[float, float]]) -> tuple[float, float]:
    process = [p for p, _ in timings]
    inner = [m for _, m in timings]
    print(f"{name:<30}{statistics.median(process):>10.2f}{statistics.median(inner):>14.2f}"
          f"{min(process):>8.2f}{max(process):>8.2f}")
    return statistics.median(process), statistics.median(inner)


def measure(args: argparse.Namespace, home: Path):
    """Produce the events, then time each mode; the Connect server runs only for its own."""
    with broker() as kafka:
        topic = "bench-connect-events"
        kafka.create_topics([topic], partitions=2)
        records = [Record(topic, r.key, r.value, r.kind, r.event)
                   for r in generate_events(args.events, bad_ratio=0.01, seed=3)]
        produce(records, KafkaConnection(bootstrap_servers=kafka.bootstrap))
        run = dict(runs=args.runs, bootstrap=kafka.bootstrap, topic=topic, tables=args.tables)

        local = no_new_data_runs(["--master", "local[*]"], root=home / "local", **run)
        # Same lake, nothing new; the first run of the process starts the session.
        warm = materialize_elsewhere(
            ["--master", "local[*]"], bootstrap=kafka.bootstrap, topics={"events": topic},
            tables=args.tables, tables_root=home / "local" / "tables",
            checkpoints_root=home / "local" / "checkpoints", runs=args.runs + 1,
            keep_session=True,
        )["runs"][1:]
        with Timer() as started:
            server = ConnectServer(home / "connect").start()
        try:
            remote = no_new_data_runs(["--remote", server.url], root=home / "connect", **run)
        finally:
            server.stop()
    return local, [r["seconds"] for r in warm], remote, started.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per mode")
    parser.add_argument("--events", type=int, default=1000, help="events produced first")
    parser.add_argument("--tables", nargs="+", default=["raw_events"],
                        help="declared tables to materialize, in dependency order")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="stream_assets_bench_connect_"))
    try:
        local, kept, remote, server_start = measure(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    print(f"\nno-new-data materialization of {', '.join(args.tables)}: {args.runs} runs per "
          "mode, each in a fresh process like a Dagster run")
    print(f"{'mode':<30}{'process s':>10}{'materialize s':>14}{'min':>8}{'max':>8}")
    local_process, local_inner = describe("local SparkSession", local)
    remote_process, remote_inner = describe("Spark Connect (sc://)", remote)
    print(f"{'local, session kept (1 proc)':<30}{'-':>10}{statistics.median(kept):>14.2f}"
          f"{min(kept):>8.2f}{max(kept):>8.2f}  (min/max of materialize)")
    print(f"Connect server start, paid once: {server_start:.2f} s")
    print(f"fixed cost saved per materialization: {local_process - remote_process:.2f} s per "
          f"process ({local_process / remote_process:.1f}x), "
          f"{local_inner - remote_inner:.2f} s in materialize ({local_inner / remote_inner:.1f}x)")


if __name__ == "__main__":
    main()
