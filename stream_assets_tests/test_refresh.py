"""Full refresh of a table and of every query streaming from it (tables/refresh.py).

Unit: which queries a refresh resets (project.refresh_closure) and what the Launchpad says.
Integration, with a real broker, Spark, Delta and Dagster instance: why the cascade is needed
(Spark's own error on a downstream checkpoint after its upstream was rebuilt), the refresh
from run config with the rebuilt tables equal to the plain-Python reference, its refusal
while a continuous run writes the table, and the CLI's reset of the same closure.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import AssetKey, DagsterEventType, instance_for_test

from stream_assets import StreamingTable, build_definitions, kafka_topic, upstream
from stream_assets.cli import main
from stream_assets.continuous_runs import CONTINUOUS, MODE_TAG
from stream_assets.dev.generator import GOOD, Record, generate_events
from stream_assets.dev.producer import produce
from stream_assets.errors import CheckpointMismatch, StreamAssetsError, TableBusy
from stream_assets.monitoring.check_config import ChecksConfig
from stream_assets.project import refresh_closure
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables import catalog, refresh, runner
from stream_assets.tables.catalog import event_counts, raw_events, user_sessions
from stream_assets_tests import reference
from stream_assets_tests.fault_driver import session_conf_kept
from stream_assets_tests.reference import assert_rows_equal

# The CLI test loads these with --tables stream_assets_tests.test_refresh:TABLES.
TABLES = [raw_events, event_counts, user_sessions]
START = datetime(2026, 3, 1, tzinfo=UTC)


def _names(tables: list[StreamingTable]) -> list[str]:
    return [t.name for t in tables]


# -- which queries a refresh resets (pure) ------------------------------------------------------

def test_the_demo_refresh_of_raw_events_resets_every_query_streaming_from_it_upstream_first():
    closure = _names(refresh_closure(catalog.TABLES, ["raw_events"]))
    readers = {t.name for t in catalog.TABLES if "raw_events" in t.upstream_tables}
    assert closure[0] == "raw_events" and set(closure[1:]) == readers
    # A dead-letter table names its query; a query nothing streams from resets alone; the
    # impression join reads only Kafka, so it is never part of raw_events' cascade.
    assert _names(refresh_closure(catalog.TABLES, ["dead_letter_queue"])) == closure
    assert _names(refresh_closure(catalog.TABLES, ["event_counts"])) == ["event_counts"]
    assert _names(refresh_closure(catalog.TABLES, ["impression_clicks_dead_letters"])) == [
        "impression_clicks"]


def _ids(rows):
    return rows


CHAIN = [
    # Declared downstream first: the order comes from the sources, not the list.
    StreamingTable(name="d", sources={"rows": upstream("c")}, transform=_ids),
    StreamingTable(name="c", sources={"rows": upstream("b")}, transform=_ids),
    StreamingTable(name="b", sources={"rows": upstream("a")}, transform=_ids),
    StreamingTable(name="a", sources={"rows": kafka_topic("t", parser=_ids)},
                   dead_letters="a_dead"),
    StreamingTable(name="from_dead", sources={"rows": upstream("a_dead")}, transform=_ids),
    StreamingTable(name="other", sources={"rows": kafka_topic("u")}),
]


def test_the_closure_is_transitive_ordered_upstream_first_and_follows_dead_letters():
    closure = _names(refresh_closure(CHAIN, ["a"]))
    assert set(closure) == {"a", "b", "c", "d", "from_dead"}
    for reader, read in (("b", "a"), ("c", "b"), ("d", "c"), ("from_dead", "a")):
        assert closure.index(read) < closure.index(reader)
    assert _names(refresh_closure(CHAIN, ["c"])) == ["c", "d"]
    assert _names(refresh_closure(CHAIN, ["other", "d"])) == ["d", "other"]
    with pytest.raises(StreamAssetsError, match=r"unknown table\(s\) nope; tables: a, a_dead"):
        refresh_closure(CHAIN, ["nope"])


def test_the_launchpad_field_of_each_asset_names_what_its_refresh_resets():
    from stream_assets.definitions import defs

    def described(name: str) -> str:
        config = defs.resolve_assets_def(AssetKey(name)).op.config_schema.as_field()
        return config.config_type.fields["full_refresh"].description

    text = described("raw_events")
    for name in _names(refresh_closure(catalog.TABLES, ["raw_events"])[1:]):
        assert name in text
    assert "next materialization or the catch-up sensor" in text
    assert "resets" not in described("event_counts")


# -- with the real parts ------------------------------------------------------------------------

class Project:
    """TABLES on their own topic and lake, through build_definitions, on a real instance."""

    def __init__(self, broker, spark_resource, lake: DeltaLake, instance) -> None:
        self.topic = f"events-{uuid.uuid4().hex[:10]}"
        broker.create_topics([self.topic], partitions=3)
        self.lake = lake
        self.source = KafkaSource(bootstrap_servers=broker.bootstrap,
                                  topic_names={"events": self.topic})
        self.resources = {"spark": spark_resource, "lake": self.lake,
                          "stream_source": self.source}
        # The derived checks are not under test here: off, they cost no Spark jobs per run.
        off = {"enabled": False}
        checks = ChecksConfig(freshness=off, dead_letter_ratio=off, schema_matches=off,
                              keys_not_null=off, keys_unique=off)
        self.defs = build_definitions(TABLES, resources=self.resources, checks=checks)
        self.instance = instance
        records = list(generate_events(200, bad_ratio=0.1, seed=13, start=START, users=6,
                                       spacing=timedelta(seconds=5), jitter=timedelta(0),
                                       id_prefix="r"))
        self.records = [Record(self.topic, r.key, r.value, r.kind, r.event) for r in records]
        produce(self.records, KafkaConnection(bootstrap_servers=broker.bootstrap))
        self.good = [r.event for r in self.records if r.kind == GOOD]

    def materialize(self, names: list[str], refresh: tuple[str, ...] = (), **kwargs):
        job = self.defs.resolve_implicit_global_asset_job_def()
        run_config = {"ops": {n: {"config": {"full_refresh": True}} for n in refresh}}
        return job.execute_in_process(
            instance=self.instance, run_config=run_config,
            asset_selection=[AssetKey(n) for n in names], **kwargs)

    def rows(self, spark, table: str, drop=()):
        self.lake.attach(spark)
        frame = spark.read.format("delta").load(self.lake.table_path(table))
        return [r.asDict() for r in frame.drop(*drop).collect()]

    def assert_equal_to_reference(self, spark, tables=("event_counts", "user_sessions")):
        ids = [r["event_id"] for r in self.rows(spark, "raw_events")]
        assert sorted(ids) == sorted(e["event_id"] for e in self.good)
        if "event_counts" in tables:
            assert_rows_equal(self.rows(spark, "event_counts", drop=("updated_at",)),
                              reference.event_counts(self.good))
        if "user_sessions" in tables:
            assert_rows_equal(self.rows(spark, "user_sessions"),
                              reference.user_sessions(self.good))


@pytest.fixture(scope="module")
def project(kafka_broker, spark_resource, tmp_path_factory):
    """Every table materialized once. Shared by the tests below, in file order: the refused
    refresh and the CLI (on a copy) leave it as it is; the last test refreshes it."""
    with instance_for_test() as instance:
        root = tmp_path_factory.mktemp("lake")
        lake = DeltaLake(tables_root=str(root / "tables"),
                         checkpoints_root=str(root / "checkpoints"))
        project = Project(kafka_broker, spark_resource, lake, instance)
        assert project.materialize(["raw_events", "dead_letter_queue", "event_counts",
                                    "user_sessions"]).success
        yield project
        kafka_broker.delete_topics([project.topic])


def _metadata(instance, run_id: str, kind: DagsterEventType, table: str) -> dict:
    """The metadata of the one materialization (or observation) of `table` by the run."""
    fetch = (instance.fetch_observations if kind == DagsterEventType.ASSET_OBSERVATION
             else instance.fetch_materializations)
    found = [r for r in fetch(AssetKey(table), limit=50).records if r.run_id == run_id]
    assert len(found) == 1, (table, kind, len(found))
    return {k: v.value for k, v in found[0].asset_event.metadata.items()}


@pytest.mark.integration
def test_refresh_is_refused_while_a_continuous_run_writes_the_table(project, spark):
    from stream_assets_tests.test_ops_continuous import ContinuousRun, wait_until

    before = project.rows(spark, "event_counts")
    run = ContinuousRun(project.instance, project.resources)
    with run:
        assert project.instance.get_run_by_id(run.run_id).tags[MODE_TAG] == CONTINUOUS
        wait_until(lambda: project.instance.get_run_by_id(run.run_id).status.value
                   == "STARTED", 60, "the continuous run to start")
        result = project.materialize(["raw_events", "dead_letter_queue"],
                                     refresh=("raw_events",), raise_on_error=False)
    assert not result.success
    error = result.failure_data_for_node("raw_events").error.cause
    assert error.cls_name == TableBusy.__name__
    assert f"continuous run {run.run_id} writes raw_events" in error.message
    assert "nothing was deleted" in error.message
    # Nothing was deleted, downstream included.
    assert Path(project.lake.checkpoint_path("event_counts")).exists()
    assert_rows_equal(project.rows(spark, "event_counts"), before)


@pytest.mark.integration
def test_cli_reset_lists_the_cascade_before_and_resets_it_all(project, spark, monkeypatch,
                                                               workdir):
    import shutil

    home = workdir / "home"
    shutil.copytree(Path(project.lake.tables_root).parent, home)
    monkeypatch.setenv("STREAM_ASSETS_HOME", str(home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    spec = ["--tables", "stream_assets_tests.test_refresh:TABLES"]

    declined = CliRunner().invoke(main, ["reset", "raw_events", *spec], input="n\n")
    assert declined.exit_code != 0
    assert "streams from raw_events" in declined.output or "stream from raw_events" in \
        declined.output
    assert "event_counts" in declined.output and "user_sessions" in declined.output
    assert (home / "checkpoints" / "event_counts").exists()

    with session_conf_kept(spark):
        result = CliRunner().invoke(main, ["reset", "raw_events", "--yes", *spec])
    assert result.exit_code == 0, result.output
    for query in ("raw_events", "event_counts", "user_sessions"):
        assert not (home / "checkpoints" / query).exists()
        assert f"{query}: deleted" in result.output
    for table in ("raw_events", "dead_letter_queue", "event_counts", "user_sessions"):
        assert not (home / "tables" / table).exists()


@pytest.mark.integration
def test_refresh_of_raw_events_resets_and_rebuilds_the_queries_streaming_from_it(
    project, spark
):
    project.assert_equal_to_reference(spark)
    lake = project.lake
    ctx = runner.StreamContext(spark=spark, lake=lake, source=project.source)

    # Why the cascade: raw_events alone rebuilt, event_counts' checkpoint still holds the old
    # table's id, and Spark will not resume it.
    runner.catch_up(raw_events, ctx, refresh=True)
    with pytest.raises(CheckpointMismatch) as raised:
        runner.catch_up(event_counts, ctx)
    message = str(raised.value)
    print(message)
    assert "DIFFERENT_DELTA_TABLE_READ_BY_STREAMING_SOURCE" in message, message
    assert "'stream-assets reset event_counts'" in message, message

    # The refresh from run config: raw_events and event_counts in the run, user_sessions not.
    result = project.materialize(["raw_events", "dead_letter_queue", "event_counts"],
                                 refresh=("raw_events",))
    assert result.success
    run_id = result.run_id
    project.assert_equal_to_reference(spark, tables=("event_counts",))

    refreshed = _metadata(project.instance, run_id, DagsterEventType.ASSET_MATERIALIZATION,
                          "raw_events")
    deleted = refreshed[refresh.DELETED]
    assert set(deleted) == {"raw_events", "event_counts", "user_sessions"}
    assert lake.checkpoint_path("event_counts") in deleted["event_counts"]
    assert lake.table_path("user_sessions") in deleted["user_sessions"]
    assert {lake.checkpoint_path("raw_events"), lake.table_path("dead_letter_queue")} <= set(
        deleted["raw_events"])
    assert "rebuilt by this run: event_counts" in refreshed[refresh.CASCADE]
    assert "catch-up sensor: user_sessions" in refreshed[refresh.CASCADE]
    counts = _metadata(project.instance, run_id, DagsterEventType.ASSET_MATERIALIZATION,
                       "event_counts")
    assert counts[refresh.CASCADE_OF] == "raw_events"
    assert counts[refresh.DELETED] == {"event_counts": deleted["event_counts"]}
    later = _metadata(project.instance, run_id, DagsterEventType.ASSET_OBSERVATION,
                      "user_sessions")
    assert later[refresh.CASCADE_OF] == "raw_events" and later[refresh.REBUILT_BY] == \
        refresh.LATER
    assert not Path(lake.checkpoint_path("user_sessions")).exists()

    # Said before anything was deleted: the announcement precedes the first observation.
    logs = project.instance.all_logs(run_id)
    said = next(i for i, e in enumerate(logs)
                if "full refresh of raw_events: deleting" in (e.user_message or ""))
    observed = next(i for i, e in enumerate(logs) if e.dagster_event is not None
                    and e.dagster_event.event_type == DagsterEventType.ASSET_OBSERVATION)
    assert said < observed
    assert "user_sessions" in logs[said].user_message

    # The next materialization rebuilds what the run left out, from the rebuilt raw_events.
    assert project.materialize(["user_sessions"]).success
    project.assert_equal_to_reference(spark)
