"""Materialize declared tables in a process of its own, on a cluster master or a Connect server.

A test process already holds the local SparkSession, pyspark allows one SparkContext per
process, and a Spark Connect client switches the whole process to Connect mode
(SPARK_CONNECT_MODE_ENABLED), so the cluster and Connect runs happen here, in a child:

    python -m stream_assets_tests.cluster_runner --remote sc://127.0.0.1:15002 \\
        --bootstrap 127.0.0.1:9092 --topic events=events-1a2b \\
        --tables-root /tmp/t --checkpoints-root /tmp/c raw_events event_counts

It builds `SparkResource(master=... | remote=...)`, `DeltaLake` and `KafkaSource` exactly as a
user's Definitions would, calls Dagster's `materialize` on `build_asset(...)` of each named
table (`user_dimension`: the demo's dimension asset, seeded with the demo users) `--runs`
times, and prints one line `RESULT {json}`: per run its duration and, per asset, rows read,
rows written and the Delta version. It exits non-zero if a run fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

RESULT_PREFIX = "RESULT "
FAILED = "materialization failed:"
LAKE_ENV = "STREAM_ASSETS_TEST_LAKE"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class RunnerFailed(AssertionError):
    """The child process failed; the message carries the end of its output."""


def materialize_elsewhere(
    where: Sequence[str],
    *,
    bootstrap: str,
    topics: Mapping[str, str],
    tables_root: Path | str,
    checkpoints_root: Path | str,
    tables: Sequence[str],
    conf: Mapping[str, str] | None = None,
    runs: int = 1,
    keep_session: bool = False,
    timeout_s: float = 900,
    lake: Mapping[str, object] | None = None,
) -> dict:
    """Run this module in a child process and return its report.

    `where` is `["--master", URL]` or `["--remote", URL]`. The child inherits the environment
    (STREAM_ASSETS_HOME, STREAM_ASSETS_JARS) and finds this project on PYTHONPATH after
    whatever the caller's PYTHONPATH names. `lake`: more `DeltaLake` fields (the S3 settings),
    passed through the environment, not the command line, since they hold keys.
    """
    command = [sys.executable, "-m", "stream_assets_tests.cluster_runner", *where,
               "--bootstrap", bootstrap, "--tables-root", str(tables_root),
               "--checkpoints-root", str(checkpoints_root), "--runs", str(runs)]
    if keep_session:
        command.append("--keep-session")
    for key, value in (conf or {}).items():
        command += ["--conf", f"{key}={value}"]
    for logical, name in topics.items():
        command += ["--topic", f"{logical}={name}"]
    command += list(tables)
    env = dict(os.environ)
    if lake:
        env[LAKE_ENV] = json.dumps(dict(lake))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH", ""), str(PROJECT_ROOT)) if p
    )
    # A driver of the local test cluster: on 127.0.0.1 like everything else here.
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # A neutral working directory: `python -m` puts it first on sys.path, and the child must
    # import the same copy of the project as the caller (PYTHONPATH), not one found there.
    done = subprocess.run(command, env=env, cwd=tempfile.gettempdir(), capture_output=True,
                          text=True, timeout=timeout_s)
    lines = [x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        # The failure's first lines say which table and why; a JVM stack trace follows them,
        # and the output's end is whatever was logged last.
        _, said, failure = done.stderr.partition(FAILED)
        raise RunnerFailed(
            f"{' '.join(command[:4])} ... exited {done.returncode}:\n"
            f"{said}{failure[:1500]}\n...\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def _pairs(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stream_assets_tests.cluster_runner")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--master", help="Spark master URL, e.g. spark://127.0.0.1:7077")
    where.add_argument("--remote", help="Spark Connect URL, e.g. sc://127.0.0.1:15002")
    parser.add_argument("--conf", action="append", default=[], help="spark_config KEY=VALUE")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", action="append", default=[],
                        help="LOGICAL=BROKER_NAME topic mapping (KafkaSource.topic_names)")
    parser.add_argument("--tables-root", required=True)
    parser.add_argument("--checkpoints-root", required=True)
    parser.add_argument("--runs", type=int, default=1, help="materializations in this process")
    parser.add_argument("--keep-session", action="store_true",
                        help="keep the SparkSession between runs (stop_on_teardown=False)")
    parser.add_argument("tables", nargs="+",
                        help="declared tables (and user_dimension), in dependency order")
    return parser.parse_args(argv)


def summary(result, nodes) -> dict[str, dict]:
    """Per asset: what the run's metadata says it read and wrote."""
    out = {}
    for node in nodes:
        for materialization in result.asset_materializations_for_node(node):
            meta = materialization.metadata
            out[materialization.asset_key.to_user_string()] = {
                key: meta[key].value for key in ("rows_read", "rows_written", "delta_version")
                if key in meta
            }
    return out


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    from dagster import DagsterInstance, materialize

    from stream_assets.dev.users import demo_users
    from stream_assets.resources import DeltaLake, KafkaSource, SparkResource
    from stream_assets.tables import catalog
    from stream_assets.tables.assets import build_asset
    from stream_assets.tables.dimensions import build_user_dimension

    declared = {t.name: t for t in catalog.TABLES}
    # The demo's one batch table, which enriched_events joins to, seeded with the demo users.
    batch = {"user_dimension": lambda: build_user_dimension(demo_users)}
    nodes = {name: batch[name]() if name in batch else build_asset(declared[name])
             for name in args.tables}
    resources = {
        "spark": SparkResource(master=args.master or "local[*]", remote=args.remote,
                               spark_config=_pairs(args.conf),
                               stop_on_teardown=not args.keep_session),
        "lake": DeltaLake(tables_root=args.tables_root, checkpoints_root=args.checkpoints_root,
                          **json.loads(os.environ.get(LAKE_ENV) or "{}")),
        "stream_source": KafkaSource(bootstrap_servers=args.bootstrap,
                                     topic_names=_pairs(args.topic)),
    }
    assets = list(nodes.values())
    imported = time.perf_counter()
    runs = []
    instance = DagsterInstance.ephemeral()
    for _ in range(args.runs):
        begin = time.perf_counter()
        result = materialize(assets, resources=resources, raise_on_error=False,
                             instance=instance)
        seconds = time.perf_counter() - begin
        if not result.success:
            failure = next((e for e in result.all_events if e.is_step_failure), None)
            error = failure.step_failure_data.error if failure else None
            message = error.to_string() if error else "no step failure recorded"
            print(f"{FAILED}\n{message}", file=sys.stderr)
            return 1
        # What the run warned about (a retried query, ...), as its log shows it.
        warnings = [entry.user_message for entry in instance.all_logs(result.run_id)
                    if entry.dagster_event is None and entry.level >= logging.WARNING]
        runs.append({"seconds": seconds, "assets": summary(result, nodes),
                     "warnings": warnings})
    report = {"import_seconds": imported - started, "runs": runs}
    print(RESULT_PREFIX + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
