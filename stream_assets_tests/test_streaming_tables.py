"""The seed's derived tables, streamed for real and compared with the plain-Python reference.

Events are produced in two phases with a materialization in between, so the second phase's
deliberately late events are older than every watermark and must be dropped by the stateful
tables (and only by them). A final event a day later closes every window. The lake is the test S3
server, and a local folder too with STREAM_ASSETS_TEST_LAKES=local,s3 (fixtures_s3.py, issue
14): each must match the same reference.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetKey, Definitions, instance_for_test
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run

from stream_assets.dev.generator import Record, generate_ad_traffic, generate_events, iso
from stream_assets.dev.producer import produce
from stream_assets.dev.users import demo_users, generate_users
from stream_assets.parallel_executor import parallel_in_process_executor
from stream_assets.resources import DeltaLake, KafkaSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables import catalog
from stream_assets.tables.assets import build_asset
from stream_assets.tables.dimensions import build_user_dimension
from stream_assets_tests import reference
from stream_assets_tests.fixtures_s3 import TEST_LAKES, delta_rs
from stream_assets_tests.interpreted import compiled
from stream_assets_tests.reference import assert_rows_equal
from stream_assets_tests.table_schemas import delta_schemas, local_schemas

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2026, 3, 1, tzinfo=UTC)
USERS = 8
DERIVED = ("event_counts", "event_duration_stats", "activity_sessions", "enriched_events",
           "user_sessions")


class Lake:
    """One isolated lake and set of topics, materialized through Dagster.

    Runs go through the project's executor (stream_assets/parallel_executor.py), two steps at
    once, into an instance on disk, as a UI run does: independent tables and checks run at the
    same time and must still give the reference's rows.
    """

    def __init__(self, broker, topics: dict[str, str], spark_resource, lake: DeltaLake,
                 instance):
        self.topics = topics
        self.lake = lake
        self.resources = {
            "spark": spark_resource,
            "lake": self.lake,
            "stream_source": KafkaSource(bootstrap_servers=broker.bootstrap,
                                         topic_names=self.topics),
        }
        self.connection = KafkaConnection(bootstrap_servers=broker.bootstrap)
        self.assets = [build_user_dimension(demo_users),
                       *(build_asset(t) for t in catalog.TABLES)]
        self.instance = instance

    def send(self, records):
        produce([Record(self.topics[r.topic], r.key, r.value, r.kind, r.event) for r in records],
                self.connection)

    def materialize(self):
        job = Definitions(assets=self.assets, resources=self.resources,
                          executor=parallel_in_process_executor
                          ).resolve_implicit_global_asset_job_def()
        run = self.instance.create_run_for_job(
            job_def=job, run_config={"execution": {"config": {"max_concurrent": 2}}})
        result = execute_run(InMemoryJob(job), run, self.instance)
        assert result.success
        return result

    def rows(self, spark, table, drop=()):
        self.lake.attach(spark)
        frame = spark.read.format("delta").load(self.lake.table_path(table))
        return [r.asDict() for r in frame.drop(*drop).collect()]


def events(count, *, start, prefix, spacing=timedelta(seconds=6), jitter=timedelta(seconds=40)):
    return list(generate_events(count, seed=hash(prefix) % 1000, start=start, spacing=spacing,
                                users=USERS, jitter=jitter, id_prefix=prefix))


def closer(ts: datetime) -> Record:
    """One event far in the future: advances every watermark past all real events."""
    event = {"event_id": "closer", "event_type": "closer", "user_id": "closer",
             "timestamp": iso(ts), "properties": {}}
    import json

    return Record("events", b"closer", json.dumps(event).encode(), "good", event)


def ad_closer(ts: datetime) -> list[Record]:
    import json

    imp = {"impression_id": "imp-closer", "ad_id": "ad-x", "user_id": "closer",
           "timestamp": iso(ts)}
    click = {"click_id": "clk-closer", "impression_id": "imp-closer", "timestamp": iso(ts)}
    return [Record("impressions", b"c", json.dumps(imp).encode(), "good", imp),
            Record("clicks", b"c", json.dumps(click).encode(), "good", click)]


@pytest.fixture(scope="module", params=TEST_LAKES)
def streamed(request, kafka_broker, spark_resource, tmp_path_factory):
    """Both phases streamed into one lake, on the test S3 server (and on a local folder when
    STREAM_ASSETS_TEST_LAKES asks): a run, late and hostile records, a run, a run with
    nothing new. The tests below look at it from three sides, each under two minutes."""
    root = tmp_path_factory.mktemp(f"streamed-{request.param}")
    if request.param == "local":
        any_lake = DeltaLake(tables_root=str(root / "tables"),
                             checkpoints_root=str(root / "checkpoints"))
    else:
        server = request.getfixturevalue("s3_server")
        any_lake = server.lake(server.uri(f"streamed-{uuid.uuid4().hex[:8]}"))
    topics = {name: f"{name}-{uuid.uuid4().hex[:10]}"
              for name in ("events", "impressions", "clicks")}
    kafka_broker.create_topics(list(topics.values()), partitions=3)
    (root / "instance").mkdir()
    # The oracle scene runs compiled, as users do; the rest of the suite interpreted.
    with instance_for_test(temp_dir=str(root / "instance")) as instance, \
            compiled(spark_resource.spark_session):
        lake = Lake(kafka_broker, topics, spark_resource, any_lake, instance)
        phase1 = events(600, start=START, prefix="p1")  # an hour of events, out of order by 40 s
        ads = list(generate_ad_traffic(150, seed=5, start=START, spacing=timedelta(seconds=20),
                                       click_ratio=0.5, late_click_ratio=0.2, users=USERS))
        lake.send(phase1 + ads)
        lake.materialize()

        newest = max(datetime.fromisoformat(r.event["timestamp"]) for r in phase1)
        # Older than every watermark (the longest is 30 minutes) after the first run.
        late = events(15, start=START + timedelta(minutes=2), prefix="late",
                      spacing=timedelta(seconds=10), jitter=timedelta(0))
        # Out of order, but within every watermark: these must still count.
        within = events(20, start=newest - timedelta(minutes=3), prefix="within",
                        spacing=timedelta(seconds=5), jitter=timedelta(0))
        phase2 = events(300, start=newest + timedelta(seconds=5), prefix="p2")
        final = closer(newest + timedelta(days=1))
        lake.send(late + within + phase2 + [final] + ad_closer(START + timedelta(days=1)))
        lake.send(HOSTILE)
        lake.second = lake.materialize()
        lake.materialize()  # nothing new: must change nothing
        lake.good = [r.event for r in phase1 + late + within + phase2 + [final]]
        lake.late_ids = {r.event["event_id"] for r in late}
        lake.late = late
        lake.ad_records = ads + ad_closer(START + timedelta(days=1))
        yield lake
    kafka_broker.delete_topics(list(topics.values()))


def test_derived_tables_equal_the_reference_with_late_events_dropped(streamed, spark):
    lake, good, late_ids = streamed, streamed.good, streamed.late_ids
    users = generate_users(50)

    assert_rows_equal(lake.rows(spark, "event_counts", drop=("updated_at",)),
                      reference.event_counts(good, late=late_ids))
    assert_rows_equal(lake.rows(spark, "event_duration_stats", drop=("updated_at",)),
                      reference.event_duration_stats(good, late=late_ids))
    # Append-mode sessions are written once closed; the closer's own session stays open.
    assert_rows_equal(lake.rows(spark, "activity_sessions"),
                      [r for r in reference.activity_sessions(good, late=late_ids)
                       if r["user_id"] != "closer"])
    assert_rows_equal(lake.rows(spark, "user_sessions"),
                      reference.user_sessions(good, late=late_ids))
    # A stateless join drops nothing: late events are enriched like any other.
    enriched = lake.rows(spark, "enriched_events",
                         drop=("topic", "partition", "offset", "ingested_at"))
    assert_rows_equal(enriched, [
        {k: v for k, v in row.items() if k not in ("topic", "partition", "offset")}
        for row in reference.enriched_events(good, users)
    ])
    impressions = [reference.parse_impression(r.value)[0] for r in lake.ad_records
                   if r.topic == "impressions"]
    clicks = [reference.parse_click(r.value)[0] for r in lake.ad_records if r.topic == "clicks"]
    assert_rows_equal(lake.rows(spark, "impression_clicks"),
                      reference.impression_clicks(impressions, clicks))


def test_each_watermark_counts_the_late_rows_it_dropped(streamed):
    dropped = {
        m.asset_key: m.metadata.get("rows_dropped_by_watermark")
        for node in DERIVED
        for m in streamed.second.asset_materializations_for_node(node)
    }
    # Spark counts what reaches the state store: for aggregations that is rows already
    # pre-aggregated per group within a partition, so at most one per late event.
    assert 1 <= dropped[AssetKey("event_counts")].value <= len(streamed.late)
    assert dropped[AssetKey("user_sessions")].value == len(streamed.late)
    assert dropped[AssetKey("enriched_events")] is None  # no state, nothing dropped


def test_every_table_opens_in_delta_rs_with_described_columns_and_hostile_bytes_kept(
    streamed, spark
):
    lake = streamed
    # Every table of the run opens in an independent reader too, dead letters of bytes that
    # are not UTF-8 included.
    tables = [t for declared in catalog.TABLES for t in declared.tables]
    for table in tables:
        assert_same_in_delta_rs(spark, lake.lake, table)
    # The schemas test_spark_connect.py holds a Connect run to (table_schemas.py).
    written = delta_schemas(lake.lake, ["user_dimension", *tables])
    assert written == local_schemas(written)
    # Each column of every declared table has a description for the UI's column table.
    for declared in catalog.TABLES:
        for table in declared.tables:
            columns = {f.name for f in delta_rs(lake.lake, table).schema().fields}
            assert columns == set(declared.descriptions_of(table)), table
    dead = lake.rows(spark, "dead_letter_queue") + lake.rows(spark,
                                                            "impression_clicks_dead_letters")
    assert {bytes(r["raw_bytes"]) for r in dead if r["raw_bytes"] is not None} >= {
        r.value for r in HOSTILE}


# Bytes that are not UTF-8, in every topic: their dead letters must stay readable.
HOSTILE = [Record(topic, None, b"\xff\xfe{\"id\": \"\xc3\x28\"}", "not_utf8", None)
           for topic in ("events", "impressions", "clicks")]


def assert_same_in_delta_rs(spark, lake: DeltaLake, table: str) -> None:
    """Row count and a column of values read by delta-rs (Arrow) equal Spark's."""
    path = lake.table_path(table)
    arrow = delta_rs(lake, table).to_pyarrow_table()
    frame = spark.read.format("delta").load(path)
    assert arrow.num_rows == frame.count(), path
    text = next((f.name for f in frame.schema.fields if f.dataType.simpleString() == "string"),
                None)
    if text is not None:
        theirs = sorted(v for v in arrow.column(text).to_pylist() if v is not None)
        ours = sorted(r[0] for r in frame.select(text).collect() if r[0] is not None)
        assert theirs == ours, (path, text)
