"""The demo's "Materialize all", as a UI run pays it, against a plain PySpark script (issue 15).

Every figure is the wall time of a fresh Python process, from its start to its exit, because
Dagster starts a process per run (the run launcher) and so pays imports, loading the code
location and the SparkSession every time:

* `bare`: a SparkSession with the project's jars and configuration (SparkResource), started
  and stopped; baseline 1, what anything that needs Spark pays;
* `dagster`: `dagster asset materialize -m stream_assets.definitions --select '*'`: every asset
  of the demo's definitions with all their checks, as the UI's "Materialize all" selects them,
  recorded in a DagsterInstance on disk (a temporary DAGSTER_HOME and STREAM_ASSETS_HOME);
* `plain`: one process that runs the same declared queries (each table's `build_stream` and
  `writer`) with trigger(availableNow=True), table after table in dependency order, to a lake
  of its own; baseline 2, what the seed did, with none of Dagster's or the runner's work.

Three cases, run in this order on a broker of their own: `first` over the demo's data
(--events events with 2 % bad records and the demo's ad traffic, as `stream-assets produce`
makes them), `idle` with nothing new, `new1pct` after 1 % more of the same traffic. After each
case both lakes are counted with delta-rs (no Spark) against the records produced. --connect
runs every process through a local Spark Connect server instead of a local SparkSession.

    .venv/bin/python bench/materialize_all.py [--events 20000] [--connect] [--repeat 1]
        [--cases first,idle,new1pct] [--max-concurrent N] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = ("first", "idle", "new1pct")
DAGSTER_YAML = ROOT / "deploy" / "local" / "dagster.yaml"  # the demo's instance (scripts/demo.sh)


# -- the child processes -------------------------------------------------------------------------

def bare_side(remote: str | None) -> None:
    """Start and stop the session a run would start; print how long the start took."""
    started = time.perf_counter()
    from stream_assets.resources import SparkResource

    spark = SparkResource(remote=remote).build_session()
    print(json.dumps({"session_s": time.perf_counter() - started}))
    spark.stop()


def plain_side(remote: str | None) -> None:
    """The demo's queries written to STREAM_ASSETS_HOME's lake, with nothing around them."""
    started = time.perf_counter()
    from stream_assets.dev.users import demo_users
    from stream_assets.resources import DeltaLake, KafkaSource, SparkResource
    from stream_assets.sinks import is_delta_table
    from stream_assets.tables.catalog import TABLES
    from stream_assets.tables.sources import DEFAULT_KAFKA_RESOURCE, ReadContext

    spark = SparkResource(remote=remote).build_session()
    timings = {"session_s": time.perf_counter() - started}
    lake = DeltaLake()
    users = lake.table_path("user_dimension")
    if not is_delta_table(spark, users):  # as the demo's user_dimension asset seeds it
        demo_users(spark, 50).write.format("delta").save(users)
    reading = ReadContext(spark, lake, {DEFAULT_KAFKA_RESOURCE: KafkaSource()}, "plain")
    for table in TABLES:  # declared in dependency order
        began = time.perf_counter()
        inputs = {name: source.read(reading) for name, source in table.sources.items()}
        query = (table.writer(table.build_stream(inputs),
                              {t: lake.table_path(t) for t in table.tables})
                 .option("checkpointLocation", lake.checkpoint_path(table.name))
                 .trigger(availableNow=True).start())
        query.awaitTermination()
        timings[table.name] = time.perf_counter() - began
    print(json.dumps(timings))
    spark.stop()


# -- the parent: data, processes, figures --------------------------------------------------------

@dataclass
class Run:
    seconds: float
    inner: dict = field(default_factory=dict)  # what the child printed, or the Dagster steps


def run_process(command: list[str], home: Path, bootstrap: str) -> tuple[float, str]:
    """Wall seconds of a fresh process with its own STREAM_ASSETS_HOME and DAGSTER_HOME."""
    env = dict(os.environ)
    env.update(
        STREAM_ASSETS_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        STREAM_ASSETS_KAFKA_BOOTSTRAP=bootstrap,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
    )
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    if not (home / "dagster" / "dagster.yaml").exists():
        shutil.copy(DAGSTER_YAML, home / "dagster" / "dagster.yaml")
    started = time.perf_counter()
    # In the home: Spark drops spark-warehouse/ and derby.log into the working directory.
    done = subprocess.run(command, env=env, cwd=home, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:6])} ... failed ({done.returncode}):\n"
                 f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return seconds, done.stdout


def child(side: str, home: Path, bootstrap: str, remote: str | None) -> Run:
    command = [sys.executable, __file__, "--side", side] + (["--remote", remote] if remote else [])
    seconds, out = run_process(command, home, bootstrap)
    return Run(seconds, json.loads(out.strip().splitlines()[-1]))


def dagster_side(home: Path, bootstrap: str, remote: str | None,
                 max_concurrent: int | None, profile: Path | None = None) -> Run:
    # --profile: the run's process under cProfile, one file per case, to see where a fresh
    # process spends its time (imports, Dagster's steps, the end); it slows the run down.
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    command = [sys.executable, *profiler, "-m", "dagster", "asset", "materialize",
               "-m", "stream_assets.definitions", "--select", "*"]
    config: dict = {}
    if remote:
        config["resources"] = {"spark": {"config": {"remote": remote}}}
    if max_concurrent is not None:  # the run's executor (stream_assets/parallel_executor.py)
        config["execution"] = {"config": {"max_concurrent": max_concurrent}}
    if config:
        command += ["--config-json", json.dumps(config)]
    spawned = time.time()
    seconds, _ = run_process(command, home, bootstrap)
    return Run(seconds, run_steps(home / "dagster", spawned, spawned + seconds))


def run_steps(dagster_home: Path, spawned: float, exited: float) -> dict:
    """Where the run's time went, from its own event log: start-up, each step, the end."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_runs(limit=1)
        logs = [e for e in instance.all_logs(run.run_id) if e.dagster_event is not None]
    first = {}
    steps: dict[str, float] = {}
    queries = []
    order: list[str] = []
    query_s: dict[str, float] = {}
    for entry in logs:
        kind, key = entry.dagster_event.event_type, entry.step_key
        if kind == DagsterEventType.RUN_START:
            first["run_start"] = entry.timestamp
        elif kind == DagsterEventType.RUN_SUCCESS:
            first["run_end"] = entry.timestamp
        elif kind == DagsterEventType.STEP_START:
            first[key] = entry.timestamp
            order.append(key)
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            steps[key] = entry.timestamp - first[key]
        elif kind == DagsterEventType.ASSET_MATERIALIZATION:
            metadata = entry.dagster_event.event_specific_data.materialization.metadata
            if "query_started" in metadata:  # a table's catch-up (tables/pending.py)
                queries.append(metadata["query_started"].value)
            if "query_seconds" in metadata:  # the query alone, as tables/assets.py times it
                query_s[key] = metadata["query_seconds"].value
    return {
        "startup_s": first["run_start"] - spawned,  # imports, code location, instance
        "steps": steps,
        "query_s": query_s,
        "end_s": exited - first["run_end"],  # Spark's stop, the process's exit
        "queries_started": f"{sum(queries)} of {len(queries)}",
        "order": order,
    }


def produce_case(bootstrap: str, events: int, seed: int, start: datetime) -> int:
    """The demo's traffic as `stream-assets produce` makes it; how many Kafka records."""
    from stream_assets.dev.generator import generate_ad_traffic, generate_events
    from stream_assets.dev.producer import produce
    from stream_assets.resources.kafka import KafkaConnection

    connection = KafkaConnection(bootstrap_servers=bootstrap)
    sent = produce(generate_events(events, bad_ratio=0.02, seed=seed, start=start,
                                   id_prefix=f"evt-{seed}"), connection)
    return sent + produce(generate_ad_traffic(max(1, events // 10), seed=seed, start=start),
                          connection)


def landed(home: Path) -> int:
    """Rows of raw_events and dead_letter_queue, read with delta-rs: every event lands once."""
    from deltalake import DeltaTable

    return sum(DeltaTable(str(home / "tables" / t)).to_pyarrow_dataset().count_rows()
               for t in ("raw_events", "dead_letter_queue"))


def one_round(args: argparse.Namespace, work: Path, remote: str | None, flip: bool
              ) -> dict[str, dict[str, Run]]:
    """Every case once, on a broker of its own, each side on its own lake."""
    from bench.common import broker
    from stream_assets import schemas

    figures: dict[str, dict[str, Run]] = {}
    homes = {"dagster": work / "dagster", "plain": work / "plain"}
    with broker() as kafka:
        kafka.create_topics(schemas.TOPICS, partitions=3)  # as `stream-assets kafka start`
        now = datetime.now(UTC)
        events = 0
        figures["bare"] = {"bare": child("bare", work / "bare", kafka.bootstrap, remote)}
        for case in args.cases:
            if case == "first":
                records = produce_case(kafka.bootstrap, args.events, 42, now - timedelta(
                    seconds=args.events))
                events += args.events
            elif case == "new1pct":
                new = max(1, args.events // 100)
                records = produce_case(kafka.bootstrap, new, 43, now)
                events += new
            else:
                records = 0
            figures[case] = {"records": Run(records)}
            sides = ("plain", "dagster") if flip else ("dagster", "plain")
            for side in sides:
                if side == "dagster":
                    profile = args.profile and args.profile / f"{work.name}-{case}.prof"
                    figures[case][side] = dagster_side(homes[side], kafka.bootstrap, remote,
                                                         args.max_concurrent, profile)
                else:
                    figures[case][side] = child("plain", homes[side], kafka.bootstrap, remote)
                rows = landed(homes[side])
                # Bad records: about 2 %; every event must be in one of the two tables.
                if rows != events:
                    sys.exit(f"{side} after {case}: {rows} rows in raw_events and "
                             f"dead_letter_queue, {events} events produced")
            print(f"  {case}: dagster {figures[case]['dagster'].seconds:.1f} s, "
                  f"plain {figures[case]['plain'].seconds:.1f} s", flush=True)
    return figures


def median(rounds: list[dict], case: str, side: str) -> float:
    return statistics.median(r[case][side].seconds for r in rounds)


def report(rounds: list[dict], args: argparse.Namespace, server_s: float | None) -> None:
    mode = "Spark Connect (local server)" if args.connect else "local SparkSession"
    from stream_assets.parallel_executor import DEFAULT_MAX_CONCURRENT

    mode += f", Dagster steps at once: {args.max_concurrent or DEFAULT_MAX_CONCURRENT}"
    print(f"\nMaterialize all, {args.events:,} events, {mode}, {len(rounds)} round(s), "
          f"median wall seconds of a fresh process; load average {load()}")
    if server_s is not None:
        print(f"Connect server start, paid once: {server_s:.1f} s")
    bare = median(rounds, "bare", "bare")
    session = statistics.median(r["bare"]["bare"].inner["session_s"] for r in rounds)
    print(f"{'bare SparkSession (process)':<34}{bare:>8.1f} s   (session start {session:.1f} s)")
    print(f"{'case':<10}{'records':>9}{'dagster s':>11}{'plain s':>9}"
          f"{'dagster rec/s':>15}{'plain rec/s':>13}{'ratio':>7}")
    for case in args.cases:
        records = rounds[0][case]["records"].seconds
        dagster, plain = median(rounds, case, "dagster"), median(rounds, case, "plain")
        rates = (f"{records / dagster:>15,.0f}{records / plain:>13,.0f}{plain / dagster:>7.2f}"
                 if records else f"{'-':>15}{'-':>13}{'-':>7}")
        print(f"{case:<10}{records:>9,.0f}{dagster:>11.1f}{plain:>9.1f}{rates}")
    print("ratio: Dagster throughput / plain throughput (goal >= 1.0 for first and new1pct)")
    if "idle" in args.cases:
        idle = median(rounds, "idle", "dagster")
        goal = "goal < 3 s" if args.connect else "goal < 2x"
        print(f"nothing new: {idle:.1f} s = {idle / bare:.2f}x the bare SparkSession "
              f"process ({goal}); the plain script: {median(rounds, 'idle', 'plain'):.1f} s")
    for case in args.cases:
        steps(case, rounds[-1][case]["dagster"].inner, rounds[-1][case]["plain"].inner)


def steps(case: str, last: dict, plain: dict) -> None:
    """Where the last round's runs spent their time: Dagster's event log, the plain timings."""
    checks = sum(s for k, s in last["steps"].items() if "check" in k)
    assets = sum(s for k, s in last["steps"].items() if "check" not in k)
    slowest = sorted(last["steps"].items(), key=lambda kv: -kv[1])[:5]
    print(f"\n{case}: start-up {last['startup_s']:.1f} s (imports, code location), asset steps "
          f"{assets:.1f} s, check steps {checks:.1f} s, end {last['end_s']:.1f} s; "
          f"tables whose query ran {last['queries_started']}")
    print("  slowest steps: " + ", ".join(
        f"{k} {s:.1f} s" + (f" (query {last['query_s'][k]:.1f} s)" if k in last["query_s"] else "")
        for k, s in slowest))
    # The first step to touch Spark starts the run's SparkSession (SparkResource is lazy) on a
    # cold JVM: its time is not comparable with the same table's plain query.
    print(f"  first steps: {', '.join(last['order'][:3])}")
    queries = sorted(((k, s) for k, s in plain.items() if k != "session_s"), key=lambda kv: -kv[1])
    print(f"  plain: session {plain['session_s']:.1f} s, queries "
          + ", ".join(f"{k} {s:.1f} s" for k, s in queries))


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="the demo's data set")
    parser.add_argument("--connect", action="store_true",
                        help="run every process through a local Spark Connect server")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are printed")
    parser.add_argument("--cases", type=lambda s: s.split(","), default=list(CASES),
                        help="comma-separated, from first,idle,new1pct (in that order)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="steps the Dagster run runs at once (default: its executor's; "
                        "1: one after the other)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="a folder: run each Dagster process under cProfile and keep its "
                        "profile there (<round>-<case>.prof); its times are not comparable")
    parser.add_argument("--side", choices=("bare", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # a child process of this benchmark
        (bare_side if args.side == "bare" else plain_side)(args.remote)
        return
    unknown = set(args.cases) - set(CASES)
    if unknown or not args.cases:
        parser.error(f"--cases: unknown {', '.join(sorted(unknown))}; use first,idle,new1pct")
    if "first" not in args.cases:
        parser.error("--cases: 'first' fills the lakes the other cases run on; keep it")
    args.cases = [c for c in CASES if c in args.cases]
    if args.profile:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)

    from stream_assets.paths import jars_dir

    os.environ.setdefault("STREAM_ASSETS_JARS", str(jars_dir()))  # the children's homes move
    work = Path(tempfile.mkdtemp(prefix="stream_assets_bench_materialize_"))
    server, server_s, rounds = None, None, []
    print(f"load average before: {load()}", flush=True)
    try:
        if args.connect:
            from stream_assets.dev.spark_cluster import ConnectServer

            began = time.perf_counter()
            server = ConnectServer(work / "connect").start()
            server_s = time.perf_counter() - began
        for n in range(args.repeat):
            print(f"round {n + 1} of {args.repeat}", flush=True)
            rounds.append(one_round(args, work / f"round{n}", server and server.url,
                                    flip=n % 2 == 1))
        report(rounds, args, server_s)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
