"""Crash-safe at every instant: a kill whenever a file of a commit protocol appears.

The kill points are not chosen by hand. A materialization runs in a process of its own
(fault_driver) while this process watches its checkpoint and every `_delta_log` with
inotify; each new file (temporary or final: the marker, Spark's metadata, sources, offsets,
commits and state files, Delta's JSON commits, checksums and checkpoints) is one kill point.

Two ways to crash at a point (crash_images.py), both leaving exactly the files on disk at
that instant:

* a real SIGKILL of the driver's process group (Python and its JVM), then a restart;
* a crash image: the group is stopped (SIGSTOP) the moment the file appears, the lake is
  copied, the group continues (SIGCONT). The copy is what a SIGKILL there would have left
  (a kill discards nothing that a stopped process has already written), so one run yields an
  image at every point, and each image is restarted on its own. This is how the first batch
  of raw_events is swept at every point within the suite's time; every scenario also gets a
  real SIGKILL.

After each crash the next materialization must succeed and the tables must equal what the
generator's labels (raw_events, dead_letter_queue) or reference.py (event_counts,
user_sessions) predict: nothing lost, nothing twice. docs/guarantees.md lists the points.
"""

from __future__ import annotations

import fnmatch
import shutil
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import instance_for_test, materialize

from stream_assets.dev.generator import GOOD, Record, generate_events
from stream_assets.dev.producer import produce
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables import catalog
from stream_assets.tables.assets import build_asset
from stream_assets.tables.declaration import StreamingTable
from stream_assets_tests import reference
from stream_assets_tests.crash_images import crash_run, hadoop_checksum, plan
from stream_assets_tests.fault_driver import (
    Driver,
    Tables,
    actual_tables,
    broker_messages,
    checkpoint_batches,
    expected_tables,
)
from stream_assets_tests.reference import assert_rows_equal
from stream_assets_tests.test_ops_continuous import ContinuousRun, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
USERS = 6


class CrashSweepReport(UserWarning):
    """The kill points a test reached, shown in pytest's warnings summary."""


def report(scenario: str, reached: list[tuple[str, str]]) -> None:
    kinds = {how for how, _ in reached}
    lines = [f"{scenario}: {len(reached)} kill point(s) "
             f"({', '.join(f'{sum(h == k for h, _ in reached)} {k}' for k in sorted(kinds))})"]
    lines += [f"  {how:5} {point}" for how, point in reached]
    text = "\n".join(lines)
    print(text)
    warnings.warn(CrashSweepReport(text), stacklevel=2)


# -- the data, the lakes and the oracle ---------------------------------------------------------


class World:
    """One topic in two phases, and lakes where some queries have already run."""

    def __init__(self, broker, spark_resource, spark, root: Path) -> None:
        self.bootstrap = broker.bootstrap
        self.spark_resource = spark_resource
        self.spark = spark
        self.root = root
        self.topic = f"sweep-{uuid.uuid4().hex[:10]}"
        broker.create_topics([self.topic], partitions=3)
        self.records: list[Record] = []
        self._expected: tuple[int, Tables] | None = None

    def send(self, count: int, start: datetime, prefix: str, bad_ratio: float = 0.15) -> None:
        # In order (no jitter) and a few minutes long: no watermark drops anything and no
        # session state expires, so reference.py predicts the derived tables exactly.
        records = [Record(self.topic, r.key, r.value, r.kind, r.event) for r in generate_events(
            count, bad_ratio=bad_ratio, seed=len(self.records) + 7, start=start,
            spacing=timedelta(seconds=4), users=USERS, jitter=timedelta(0), id_prefix=prefix)]
        produce(records, KafkaConnection(bootstrap_servers=self.bootstrap))
        self.records += records

    def lake(self, root: Path) -> DeltaLake:
        return DeltaLake(tables_root=str(root / "tables"),
                         checkpoints_root=str(root / "checkpoints"))

    def materialize(self, root: Path, table: StreamingTable):
        source = KafkaSource(bootstrap_servers=self.bootstrap, topic_names={"events": self.topic})
        return materialize([build_asset(table)], resources={
            "spark": self.spark_resource, "lake": self.lake(root), "stream_source": source})

    def driver(self, root: Path, table: str, name: str, *extra: str) -> Driver:
        return Driver(root, self.bootstrap, self.topic, extra_args=["--table", table, *extra],
                      name=name)

    def expected(self) -> Tables:
        """raw_events and its dead letters as the generator predicts them; the broker is read
        once per phase sent, not once per restart."""
        if self._expected is None or self._expected[0] != len(self.records):
            messages = broker_messages(self.bootstrap, self.topic)
            self._expected = (len(self.records), expected_tables(self.records, messages))
        return self._expected[1]

    def assert_exact(self, root: Path, table: str, what: str) -> None:
        """The tables at `root` hold what the generator predicts, each record once."""
        if table == "raw_events":
            expected = self.expected()
            actual = actual_tables(root / "tables")
            assert actual.events == expected.events, (
                f"{what}: raw_events differs: missing "
                f"{list((expected.events - actual.events).items())[:2]}, extra "
                f"{list((actual.events - expected.events).items())[:2]}")
            assert actual.dead == expected.dead, f"{what}: dead_letter_queue differs"
            return
        good = [r.event for r in self.records if r.kind == GOOD]
        frame = self.spark.read.format("delta").load(str(root / "tables" / table))
        if table == "event_counts":
            rows = [r.asDict() for r in frame.drop("updated_at").collect()]
            expected_rows = reference.event_counts(good)
        else:
            rows = [r.asDict() for r in frame.collect()]
            expected_rows = reference.user_sessions(good)
        try:
            assert_rows_equal(rows, expected_rows)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {table} differs from reference.py: {exc}") from None

    def restart_and_check(self, lake_root: Path, table: StreamingTable, how: str,
                          point: str) -> dict:
        """The next run after a crash: it must finish, and the tables must be exact."""
        what = f"{table.name}, {how} at {point}"
        try:
            result = self.materialize(lake_root, table)
        except Exception as exc:
            raise AssertionError(f"{what}: the next run failed: {exc}") from exc
        self.assert_exact(lake_root, table.name, what)
        planned, committed = checkpoint_batches(lake_root / "checkpoints" / table.name)
        assert planned == committed, f"{what}: planned {planned}, committed {committed}"
        return result.asset_materializations_for_node(table.name)[0].metadata


PHASE2 = START + timedelta(minutes=30)


@pytest.fixture(scope="module")
def world(kafka_broker, spark_resource, spark, tmp_path_factory):
    world = World(kafka_broker, spark_resource, spark, tmp_path_factory.mktemp("sweep"))
    world.send(45, START, "p1")
    world.bases = {}
    yield world
    kafka_broker.delete_topics([world.topic])


@pytest.fixture(scope="module")
def bases(world):
    """Lakes where queries already ran: "first" on phase 1, "later" with raw_events ahead.

    "first": raw_events, event_counts and user_sessions have read phase 1. Then phase 2 is
    produced. "later": a copy where raw_events has read phase 2 too, the derived queries not.
    """
    first = world.root / "base-first"
    for table in (catalog.raw_events, catalog.event_counts, catalog.user_sessions):
        world.materialize(first, table)
    for table in ("raw_events", "dead_letter_queue"):
        # A Delta checkpoint every second commit, so a later batch writes one (default: 10).
        world.spark.sql(f"ALTER TABLE delta.`{first / 'tables' / table}` "
                        "SET TBLPROPERTIES ('delta.checkpointInterval' = '2')")
    world.send(30, PHASE2, "p2")
    later = world.root / "base-later"
    shutil.copytree(first, later)
    world.materialize(later, catalog.raw_events)
    world.bases.update(first=first, later=later)
    return world.bases


def fresh(world: World, base: str | None, name: str, drop: tuple[str, ...] = ()) -> Path:
    root = world.root / name
    if base is None:
        (root / "tables").mkdir(parents=True)
        (root / "checkpoints").mkdir()
    else:
        shutil.copytree(world.bases[base], root)
    for table in drop:
        shutil.rmtree(root / "checkpoints" / table, ignore_errors=True)
        shutil.rmtree(root / "tables" / table, ignore_errors=True)
    return root


# -- the sweeps ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_batch(world) -> list[tuple[str, str, Path]]:
    """One run of raw_events' first batch from an empty lake, with an image at every point.

    The restarts are shared by the two tests below (by where the crash is in the batch), so
    that neither takes over two minutes on a busy machine; together they restart every image.
    """
    root = fresh(world, None, "raw-first")
    # The query's checkpoint folder exists before the run (a state a crash right after its
    # creation leaves too): the watcher lists a folder only once it watches it, and the
    # marker's temporary file, created and renamed within microseconds of the folder, would
    # be gone by then on a busy machine (seen once in CI, 2026-12-07).
    (root / "checkpoints" / "raw_events").mkdir()
    images = world.root / "raw-first-images"
    crashes, killed = crash_run(world.driver(root, "raw_events", "raw-first"), root, images,
                                lambda point: None if hadoop_checksum(point) else "image")
    assert not killed
    points = [p for _, p, _ in crashes]
    # The run's whole protocol, in order: marker, query id, Kafka start offsets, offsets/0,
    # both tables' Delta commits, commits/0 (each temporary file, its checksum, the final file).
    for pattern in ("checkpoints/raw_events/.stream_assets.json.*.tmp",
                    "checkpoints/raw_events/offsets/.0.*.tmp",
                    "checkpoints/raw_events/offsets/0",
                    "tables/raw_events/_delta_log/00000000000000000000.json",
                    "tables/dead_letter_queue/_delta_log/.00000000000000000000.json.*.tmp",
                    "checkpoints/raw_events/commits/0"):
        assert any(fnmatch.fnmatchcase(p, pattern) for p in points), (pattern, points)
    report("raw_events, first batch (every point)", [(h, p) for h, p, _ in crashes])
    return crashes


def _split_at_plan(crashes: list[tuple[str, str, Path]]
                   ) -> tuple[list[tuple[str, str, Path]], list[tuple[str, str, Path]]]:
    """The crashes before batch 0's plan (offsets/0) is on disk, and the others (in order)."""
    points = [p for _, p, _ in crashes]
    plan_at = points.index("checkpoints/raw_events/offsets/0")
    return crashes[:plan_at], crashes[plan_at:]


def restart_each(world: World, crashes: list[tuple[str, str, Path]]) -> dict[str, str]:
    """Restart every image; the `checkpoint_cleaned` metadata of the restarts that had one."""
    cleaned = {}
    for how, point, lake in crashes:
        meta = world.restart_and_check(lake, catalog.raw_events, how, point)
        if "checkpoint_cleaned" in meta:
            cleaned[point] = meta["checkpoint_cleaned"].value
    return cleaned


def test_raw_events_first_batch_crashes_before_its_plan_restart_exactly(world, first_batch):
    """Every point before offsets/0 exists: the marker, the query id, the start offsets."""
    before, _ = _split_at_plan(first_batch)
    cleaned = restart_each(world, before)
    # The issue's crash: the first offsets file's temporary file is removed, and said so.
    issue = next(p for _, p, _ in before if fnmatch.fnmatchcase(p, "*/offsets/.0.*.tmp"))
    assert "offsets/.0." in cleaned[issue] and "starts as new" in cleaned[issue], cleaned


def test_raw_events_first_batch_crashes_after_its_plan_restart_exactly(world, first_batch):
    """Every point from offsets/0 on: both tables' Delta commits and commits/0."""
    _, after = _split_at_plan(first_batch)
    cleaned = restart_each(world, after)
    # A planned batch is replayed, never started anew; once committed, nothing is removed.
    assert not any("starts as new" in text for text in cleaned.values()), cleaned
    points = [p for _, p, _ in after]
    committed = points[points.index("checkpoints/raw_events/commits/0"):]
    assert not set(committed) & set(cleaned), cleaned


def test_raw_events_first_batch_killed_at_its_first_offsets_file_restarts_exactly(world):
    """The same point as the issue's crash image, with a real SIGKILL."""
    root = fresh(world, None, "raw-first-kill")
    kills, killed = crash_run(world.driver(root, "raw_events", "raw-first-kill"), root,
                              world.root / "raw-first-kill-images",
                              plan(kill="*/offsets/.0.*.tmp"))
    assert killed, kills
    world.restart_and_check(root, catalog.raw_events, "kill", kills[0][1])
    report("raw_events, first batch (SIGKILL)", [(h, p) for h, p, _ in kills])


def sweep(world: World, root: Path, table: StreamingTable, name: str, kill: str,
          images: tuple[str, ...]) -> list[tuple[str, str]]:
    """One run with a crash image at the first point matching each of `images` and a real
    SIGKILL at the first matching `kill`; then a restart from each. Every pattern must be
    reached: a sample that silently shrank would prove nothing."""
    crashes, killed = crash_run(world.driver(root, table.name, name), root,
                                world.root / f"{name}-images", plan(kill, images))
    reached = [(how, point) for how, point, _ in crashes]
    assert killed, f"{name}: the run ended before a point matching {kill}: {reached}"
    for pattern in images:
        assert any(fnmatch.fnmatchcase(p, pattern) for h, p in reached if h == "image"), (
            f"{name}: no point matching {pattern} before the kill: {reached}")
    for how, point, lake in crashes:
        world.restart_and_check(lake, table, how, point)
    return reached


def test_raw_events_later_batch_crashes_including_delta_checkpoints(world, bases):
    """Batch 1 over a committed batch 0; the tables write a Delta checkpoint (version 2)."""
    root = fresh(world, "first", "raw-later", drop=("event_counts", "user_sessions"))
    reached = sweep(world, root, catalog.raw_events, "raw-later",
                    kill="tables/dead_letter_queue/_delta_log/*checkpoint*",
                    images=("checkpoints/raw_events/offsets/.1.*.tmp",
                            "tables/raw_events/_delta_log/00000000000000000002.json",
                            "tables/raw_events/_delta_log/*checkpoint*"))
    report("raw_events, a later batch (sampled)", reached)


def test_merge_table_later_batch_crashes(world, bases):
    """event_counts (a MERGE over aggregation state) reading raw_events' next version."""
    root = fresh(world, "later", "counts-later", drop=("user_sessions",))
    reached = sweep(world, root, catalog.event_counts, "counts-later",
                    kill="checkpoints/event_counts/state/0/*/.*.zip.*.tmp",
                    images=("checkpoints/event_counts/offsets/.*.tmp",
                            "checkpoints/event_counts/state/0/*/SSTs/*.sst"))
    report("event_counts (MERGE), a later batch (sampled)", reached)


def test_state_table_first_and_later_batch_crashes(world, bases):
    """user_sessions (transformWithState in RocksDB, MERGE): its first batch, and a later one."""
    root = fresh(world, "later", "sessions-first", drop=("user_sessions", "event_counts"))
    reached = sweep(world, root, catalog.user_sessions, "sessions-first",
                    kill="checkpoints/user_sessions/state/0/*/1.zip",
                    images=("checkpoints/user_sessions/state/0/_stateSchema/*",))
    report("user_sessions, first batch (sampled)", reached)
    root = fresh(world, "later", "sessions-later", drop=("event_counts",))
    reached = sweep(world, root, catalog.user_sessions, "sessions-later",
                    kill="tables/user_sessions/_delta_log/0*.json",
                    images=("checkpoints/user_sessions/state/0/*/SSTs/*.sst",))
    report("user_sessions, a later batch (sampled)", reached)


# -- the continuous job -------------------------------------------------------------------------


def test_continuous_job_killed_in_its_first_and_a_later_batch_resumes_exactly_once(
    kafka_broker, spark_resource, spark, tmp_path
):
    world = World(kafka_broker, spark_resource, spark, tmp_path)
    root = fresh(world, None, "lake")
    images = tmp_path / "unused"
    source = KafkaSource(bootstrap_servers=world.bootstrap, topic_names={"events": world.topic})
    resources = {"spark": spark_resource, "lake": world.lake(root), "stream_source": source}
    checkpoint = root / "checkpoints" / "raw_events"
    reached = []
    try:
        for phase, (start, kill) in enumerate((
            # First batch: raw_events committed, dead_letter_queue and commits/0 not yet.
            (START, "tables/raw_events/_delta_log/00000000000000000000.json"),
            # A later batch (the first of the second launch): the dead letters' commit.
            (PHASE2, "tables/dead_letter_queue/_delta_log/0*.json"),
        )):
            world.send(30, start, f"c{phase}")
            driver = world.driver(root, "raw_events", f"continuous-{phase}",
                                  "--continuous", "1 second")
            crashes, killed = crash_run(driver, root, images, plan(kill))
            assert killed, f"the continuous run ended before {kill}: {crashes}"
            planned, committed = checkpoint_batches(checkpoint)
            assert planned - committed, (kill, planned, committed)  # killed inside a batch
            reached.append(("kill", crashes[-1][1]))

            # The next launch (in this process, as a run from the UI) must land the rest.
            with instance_for_test() as instance, ContinuousRun(instance, resources) as run:
                wait_until(lambda: _landed(spark, root) == len(world.records), 240,
                           "every record to land")
                run.terminate()
            world.assert_exact(root, "raw_events", f"continuous, kill at {kill}")
    finally:
        kafka_broker.delete_topics([world.topic])
    report("continuous job (raw_events)", reached)


def _landed(spark, root: Path) -> int:
    total = 0
    for table in ("raw_events", "dead_letter_queue"):
        path = root / "tables" / table / "_delta_log"
        # The log folder appears before its first commit: a table exists once a commit does.
        if path.is_dir() and any(path.glob("*.json")):
            total += spark.read.format("delta").load(str(path.parent)).count()
    return total
