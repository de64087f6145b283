"""Run one raw_events materialization in a process of its own, so a test can SIGKILL it.

As a script (`python -m stream_assets_tests.fault_driver --tables ... --checkpoints ...`) it
builds the real resources, starts a fresh local SparkSession (its JVM is a child of this
process) and calls Dagster's `materialize` on the raw_events asset, exactly as a run would.
Its last stdout line is `FAULT_DRIVER_RESULT {json}`: `status` ok or error, the error's class
and message, the run id.

`--pause-at WHEN:TABLE:BATCH` (WHEN is `before` or `after`) stops the micro-batch at a chosen
point between the sink's Delta writes: the driver writes `<signal-dir>/reached` and sleeps
until the test kills it (or creates `<signal-dir>/release`). The pause wraps
`stream_assets.sinks.append_once` only; what the pipeline writes and commits is unchanged.

As a module, it gives the tests the other half: `Driver` launches and kills the process
group, `checkpoint_batches` reads where a query is, and `expected_tables`/`actual_tables`
compare the Delta tables with what the broker holds, independently of the code under test.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import re
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RESULT_PREFIX = "FAULT_DRIVER_RESULT "
# librdkafka prints connection noise on stderr unless it has a logger.
QUIET = logging.getLogger("stream_assets_tests.kafka_client")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Environment variable the Event Hubs connection string is read from (through dagster.EnvVar).
CONNECTION_STRING_ENV = "STREAM_ASSETS_TEST_EVENTHUB_CONNECTION_STRING"


# -- the script ---------------------------------------------------------------------------------


def _pause_hook(pause_at: str, signal_dir: Path) -> None:
    """Wrap sinks.append_once so the batch stops at `when:table:batch` until killed."""
    from stream_assets import sinks

    when, table, batch = pause_at.split(":")
    original = sinks.append_once

    def pause(point: str, batch_id: int, name: str) -> None:
        if point != when or name != table or batch_id != int(batch):
            return
        (signal_dir / "reached").write_text(pause_at)
        while not (signal_dir / "release").exists():
            time.sleep(0.05)

    def append_once(df, path, query, name, batch_id, *layout, **options):
        pause("before", batch_id, name)
        original(df, path, query, name, batch_id, *layout, **options)
        pause("after", batch_id, name)

    sinks.append_once = append_once


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stream_assets_tests.fault_driver")
    parser.add_argument("--tables", required=True, help="DeltaLake tables_root")
    parser.add_argument("--checkpoints", required=True, help="DeltaLake checkpoints_root")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True, help="broker-side topic read as `events`")
    parser.add_argument("--max-offsets", type=int, default=None)
    parser.add_argument("--event-hubs", action="store_true",
                        help=f"read through EventHubsSource (SASL_PLAINTEXT), the connection "
                        f"string from ${CONNECTION_STRING_ENV} via dagster.EnvVar")
    parser.add_argument("--pause-at", default=None, help="before|after:TABLE:BATCH")
    parser.add_argument("--signal-dir", default=None)
    parser.add_argument("--dagster-home", default=None,
                        help="persist the run in this DAGSTER_HOME (else an ephemeral instance)")
    parser.add_argument("--log-level", default="WARN", help="Spark's log level")
    parser.add_argument("--conf", action="append", default=[], help="extra Spark conf k=v")
    parser.add_argument("--source-option", action="append", default=[],
                        help="extra Spark Kafka source option k=v (extra_options)")
    parser.add_argument("--table", default="raw_events",
                        help="the catalog query to materialize (its upstream tables must exist)")
    parser.add_argument("--continuous", default=None, metavar="TRIGGER",
                        help="run the continuous job on --table with this processing-time "
                        "trigger until killed, instead of one materialization")
    return parser.parse_args(argv)


def _resources(args: argparse.Namespace) -> dict:
    from dagster import EnvVar

    from stream_assets.resources import DeltaLake, EventHubsSource, KafkaSource, SparkResource

    conf = {
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.driver.memory": "1g",
    }
    conf.update(dict(item.split("=", 1) for item in args.conf))
    limit: dict = {"max_offsets_per_trigger": args.max_offsets} if args.max_offsets else {}
    limit["extra_options"] = dict(item.split("=", 1) for item in args.source_option)
    if args.event_hubs:
        source = EventHubsSource(
            connection_string=EnvVar(CONNECTION_STRING_ENV),
            event_hub=args.topic,
            bootstrap_servers=args.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            **limit,
        )
    else:
        source = KafkaSource(
            bootstrap_servers=args.bootstrap, topic_names={"events": args.topic}, **limit
        )
    return {
        "spark": SparkResource(master="local[2]", spark_config=conf, log_level=args.log_level),
        "lake": DeltaLake(tables_root=args.tables, checkpoints_root=args.checkpoints),
        "stream_source": source,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.pause_at:
        _pause_hook(args.pause_at, Path(args.signal_dir))

    from dagster import DagsterInstance, materialize

    from stream_assets.errors import StreamAssetsError
    from stream_assets.tables.assets import build_asset
    from stream_assets.tables.catalog import TABLES

    table = next(t for t in TABLES if t.name == args.table)
    if args.dagster_home:
        os.environ["DAGSTER_HOME"] = args.dagster_home
        instance = DagsterInstance.get()
    else:
        instance = DagsterInstance.ephemeral()
    try:
        if args.continuous:
            result = _run_continuous(table, args, instance)
        else:
            result = materialize([build_asset(table)], resources=_resources(args),
                                 instance=instance)
        outcome = {"status": "ok" if result.success else "failed", "run_id": result.run_id}
        if not args.continuous:
            outcome["metadata"] = _materialized_metadata(result)
        code = 0 if result.success else 4
    except StreamAssetsError as exc:
        outcome = {"status": "error", "error": type(exc).__name__, "message": str(exc)}
        code = 3
    except Exception as exc:  # anything else is a bug the test should show in full
        outcome = {"status": "error", "error": type(exc).__name__, "message": str(exc),
                   "traceback": traceback.format_exc()}
        code = 4
    print(RESULT_PREFIX + json.dumps(outcome), flush=True)
    return code


def _run_continuous(table, args: argparse.Namespace, instance):
    """The continuous job on one query, as the UI launches it; it runs until killed."""
    from stream_assets.jobs import build_continuous_job

    job = build_continuous_job([table], name="continuous_fault_driver")
    config = {"trigger_interval": args.continuous, "event_interval_s": 1.0,
              "poll_interval_s": 0.2, "restart_on_failure": False}
    return job.execute_in_process(run_config={"ops": {"run_streams": {"config": config}}},
                                  instance=instance, resources=_resources(args),
                                  raise_on_error=False)


def _materialized_metadata(result) -> dict:
    """Each materialization's metadata as plain text, for the test to read."""
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        found[materialization.asset_key.to_user_string()] = {
            key: str(getattr(value, "value", value))
            for key, value in materialization.metadata.items()
        }
    return found


# -- the test side ------------------------------------------------------------------------------


@dataclass
class Outcome:
    returncode: int
    result: dict | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.result) and self.result["status"] == "ok"

    def describe(self) -> str:
        return (f"exit {self.returncode}, result {self.result}\n--- stderr (tail) ---\n"
                f"{self.stderr[-4000:]}")


@dataclass
class Driver:
    """One fault_driver process (and its JVM, in the same process group)."""

    workdir: Path
    bootstrap: str
    topic: str
    max_offsets: int | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    name: str = "run"
    proc: subprocess.Popen | None = None

    @property
    def signal_dir(self) -> Path:
        return self.workdir / f"signals-{self.name}"

    def start(self, pause_at: str | None = None) -> Driver:
        self.signal_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("reached", "release"):
            (self.signal_dir / stale).unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "stream_assets_tests.fault_driver",
            "--tables", str(self.workdir / "tables"),
            "--checkpoints", str(self.workdir / "checkpoints"),
            "--bootstrap", self.bootstrap,
            "--topic", self.topic,
            "--signal-dir", str(self.signal_dir),
            *self.extra_args,
        ]
        if self.max_offsets:
            command += ["--max-offsets", str(self.max_offsets)]
        if pause_at:
            command += ["--pause-at", pause_at]
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                          env.get("PYTHONPATH")]))
        self._out = open(self.signal_dir / "stdout", "w")  # noqa: SIM115 - closed in wait/kill
        self._err = open(self.signal_dir / "stderr", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=self._out, stderr=self._err, start_new_session=True,
        )
        return self

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc_info) -> None:
        """Never leave a driver (and its JVM) behind, whatever the test did."""
        if self.alive():
            self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, condition, timeout_s: float, what: str) -> None:
        """Poll `condition()` until true; fail with the driver's output if it ends first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return
            if not self.alive():
                raise AssertionError(f"driver ended before {what}: {self.finish().describe()}")
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")

    def wait_paused(self, timeout_s: float = 300) -> None:
        self.wait_for(lambda: (self.signal_dir / "reached").exists(), timeout_s,
                      "the pause point")

    def release(self) -> None:
        (self.signal_dir / "release").write_text("go")

    def kill(self) -> None:
        """SIGKILL the whole process group: the Python driver and its JVM, no shutdown hooks."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        _wait_group_gone(self.proc.pid)
        self._close()

    def finish(self, timeout_s: float = 600) -> Outcome:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        # The JVM may outlive the Python driver by a moment; never leave it running.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        _wait_group_gone(self.proc.pid)
        self._close()
        stdout = (self.signal_dir / "stdout").read_text(errors="replace")
        stderr = (self.signal_dir / "stderr").read_text(errors="replace")
        result = None
        for line in stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
        return Outcome(self.proc.returncode, result, stdout, stderr)

    def run(self, timeout_s: float = 600) -> Outcome:
        return self.start().finish(timeout_s)

    def _close(self) -> None:
        for handle in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if handle is not None and not handle.closed:
                handle.close()


def _wait_group_gone(pgid: int, timeout_s: float = 30) -> None:
    """Wait until no process of the group is left (the JVM's exit releases file locks)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@contextlib.contextmanager
def session_conf_kept(spark):
    """Put back the shared session's runtime settings after code that builds its own session.

    In the test process, `SparkSession.builder.getOrCreate()` (the CLI's SparkResource) returns
    the shared session and applies its own settings to it; other tests rely on the originals.
    """
    saved = dict(spark.conf.getAll)
    try:
        yield
    finally:
        for key, value in dict(spark.conf.getAll).items():
            if saved.get(key) != value and spark.conf.isModifiable(key):
                if key in saved:
                    spark.conf.set(key, saved[key])
                else:
                    spark.conf.unset(key)


# -- watching Spark's and Delta's files appear ------------------------------------------------

_IN_MOVED_TO, _IN_CREATE, _IN_Q_OVERFLOW, _IN_ISDIR = 0x80, 0x100, 0x4000, 0x40000000
_EVENT = struct.Struct("iIII")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The checkpoint marker's temporary file (lake_files.LakeFiles.write_text): mkstemp's random part.
_MARKER_TEMP = re.compile(r"(\.stream_assets\.json\.)[a-z0-9_]+(\.tmp)$")


class NewFiles:
    """Files as they appear below a folder (created, or renamed into place), from inotify.

    inotify rather than polling: a temporary file of Spark's lives for well under a
    millisecond before its rename, which a poll of the folder would almost always miss.
    New folders are watched as they appear, and listed once watched, so a file created
    between the folder's creation and its watch is reported too.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._dirs: dict[int, Path] = {}
        self._reported: set[Path] = set()
        self._pending: list[Path] = []
        self._watch_tree(root)
        self._pending.clear()  # what exists before the run is not new

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> NewFiles:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _watch_tree(self, folder: Path) -> None:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder),
                                          _IN_CREATE | _IN_MOVED_TO)
        if wd < 0:
            return  # deleted again before we got to it
        self._dirs[wd] = folder
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    self._watch_tree(path)
                else:
                    self._report(path)

    def _report(self, path: Path) -> None:
        if path not in self._reported:
            self._reported.add(path)
            self._pending.append(path)

    def poll(self, timeout_s: float) -> list[Path]:
        """The files that appeared since the last call, in order; waits up to `timeout_s`."""
        if not self._pending:
            select.select([self._fd], [], [], timeout_s)
        try:
            data = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            data = b""
        offset = 0
        while offset < len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & _IN_Q_OVERFLOW:
                raise AssertionError("inotify queue overflow: file events were lost")
            folder = self._dirs.get(wd)
            if folder is None or not name:
                continue
            path = folder / os.fsdecode(name)
            if mask & _IN_ISDIR:
                self._watch_tree(path)
            else:
                self._report(path)
        found, self._pending = self._pending, []
        return found


def protocol_file(root: Path, path: Path) -> str | None:
    """The kill point a new file stands for, or None if it is no file of the commit protocols.

    Kill points are the files of a query's checkpoint (our marker included) and of a Delta
    table's `_delta_log`, named relative to `root` with random ids as `*`, so the same step
    has the same name in every run. Parquet data files are left out: Delta ignores those of
    an uncommitted write, so a kill beside them is a kill before the log's commit.
    """
    relative = path.relative_to(root).as_posix()
    if relative.startswith("checkpoints/") or "/_delta_log/" in relative:
        return _MARKER_TEMP.sub(r"\1*\2", _UUID.sub("*", relative))
    return None


def checkpoint_batches(checkpoint: Path) -> tuple[set[int], set[int]]:
    """(planned, committed) batch ids of a streaming checkpoint."""

    def ids(folder: str) -> set[int]:
        path = checkpoint / folder
        if not path.is_dir():
            return set()
        return {int(p.name) for p in path.iterdir() if p.name.isdigit()}

    return ids("offsets"), ids("commits")


def delta_versions(table: Path) -> set[int]:
    log = table / "_delta_log"
    if not log.is_dir():
        return set()
    return {int(p.name.split(".")[0]) for p in log.glob("*.json") if p.name[:20].isdigit()}


# -- what the tables must hold, from the broker and the generator ------------------------------


def broker_messages(bootstrap: str, topic: str, timeout_s: float = 60
                    ) -> dict[tuple[int, int], bytes | None]:
    """Every message of a topic by (partition, offset), read with confluent-kafka."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"fault-check-{time.monotonic_ns()}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "broker.address.family": "v4", "fetch.message.max.bytes": 2 * 1024 * 1024,
        "logger": QUIET,
    })
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
                for p in partitions}
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
        wanted = sum(high - low for low, high in ends.values())
        messages: dict[tuple[int, int], bytes | None] = {}
        deadline = time.monotonic() + timeout_s
        while len(messages) < wanted and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            messages[(msg.partition(), msg.offset())] = msg.value()
        assert len(messages) == wanted, f"read {len(messages)} of {wanted} messages of {topic}"
        return messages
    finally:
        consumer.close()


def epoch_micros(text: str) -> int:
    """An ISO-8601 timestamp as microseconds since the epoch (the unit Spark stores)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times are read as UTC (the session zone)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass
class Tables:
    """raw_events and dead_letter_queue reduced to what a replay must reproduce exactly."""

    events: Counter  # (partition, offset, event_id, event_type, user_id, timestamp, properties)
    dead: Counter  # (partition, offset, raw_bytes)

    def positions(self) -> Counter:
        return Counter([e[:2] for e in self.events.elements()]
                       + [d[:2] for d in self.dead.elements()])


def expected_tables(records: Iterable, messages: dict[tuple[int, int], bytes | None]) -> Tables:
    """From the generator's labels (kind, event) and the broker's positions: no pipeline code."""
    kinds: dict[bytes | None, str] = {}
    events_by_value: dict[bytes | None, dict] = {}
    for record in records:
        assert kinds.setdefault(record.value, record.kind) == record.kind, record
        if record.kind == "good":
            events_by_value[record.value] = record.event
    events, dead = Counter(), Counter()
    for (partition, offset), value in messages.items():
        if kinds[value] == "good":
            e = events_by_value[value]
            props = tuple(sorted(e["properties"].items()))
            events[(partition, offset, e["event_id"], e["event_type"], e["user_id"],
                    epoch_micros(e["timestamp"]), props)] += 1
        else:
            dead[(partition, offset, value)] += 1
    return Tables(events, dead)


def actual_tables(tables_root: Path, events_table: str = "raw_events",
                  dead_letter_table: str = "dead_letter_queue") -> Tables:
    """The two tables of a local lake as delta-rs reads them (`tables_from`)."""
    from deltalake import DeltaTable

    return tables_from(DeltaTable(str(tables_root / events_table)),
                       DeltaTable(str(tables_root / dead_letter_table)))


def tables_from(events_table, dead_letter_table) -> Tables:
    """raw_events and its dead letters, each a deltalake.DeltaTable: a reader that shares no
    code with the Spark writer, and that opens a small table in milliseconds where Spark plans
    two jobs."""
    import pyarrow as pa

    raw = events_table.to_pyarrow_table(
        columns=["partition", "offset", "event_id", "event_type", "user_id", "timestamp",
                 "properties"])
    micros = raw.column("timestamp").cast(pa.timestamp("us", "UTC")).cast(pa.int64())
    raw = raw.set_column(raw.schema.get_field_index("timestamp"), "timestamp", micros)
    events = Counter(
        (r["partition"], r["offset"], r["event_id"], r["event_type"], r["user_id"],
         r["timestamp"], tuple(sorted(r["properties"] or ())))
        for r in raw.to_pylist()
    )
    dlq = dead_letter_table.to_pyarrow_table(columns=["partition", "offset", "raw_bytes"])
    dead = Counter((r["partition"], r["offset"], r["raw_bytes"]) for r in dlq.to_pylist())
    return Tables(events, dead)


if __name__ == "__main__":
    sys.exit(main())
