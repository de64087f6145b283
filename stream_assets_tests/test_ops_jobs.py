"""The continuous job's definition and its pure parts (no Spark)."""

from __future__ import annotations

import pytest
from dagster import Failure

from stream_assets.continuous_runs import CONTINUOUS, MODE_TAG, OP_NAME, select_tables
from stream_assets.errors import CheckpointMismatch, KafkaDataLoss
from stream_assets.jobs import (
    JOB_NAME,
    ContinuousConfig,
    QuerySessions,
    Supervisor,
    build_continuous_job,
    check_trigger_names,
    short_error,
)
from stream_assets.tables.catalog import TABLES


def test_selection_runs_upstream_queries_first_and_extra_tables_select_their_query():
    names = [t.name for t in select_tables(TABLES, ["event_counts", "dead_letter_queue"])]
    assert names == ["raw_events", "event_counts"]
    everything = [t.name for t in select_tables(TABLES, [])]
    assert sorted(everything) == sorted(t.name for t in TABLES)
    for table in select_tables(TABLES, []):
        for upstream in table.upstream_tables:
            assert everything.index(upstream) < everything.index(table.name)


def test_unknown_tables_are_refused_with_the_valid_names():
    with pytest.raises(Failure, match=r"unknown table\(s\) nope; .*raw_events"):
        select_tables(TABLES, ["nope"])


def test_per_query_triggers_win_over_the_job_wide_one_and_the_declaration():
    raw, counts = (next(t for t in TABLES if t.name == n) for n in ("raw_events", "event_counts"))
    config = ContinuousConfig(trigger_intervals={"raw_events": "0 seconds"})
    assert config.trigger_for(raw) == "0 seconds"
    assert config.trigger_for(counts) == counts.trigger_interval
    config = ContinuousConfig(trigger_interval="30 seconds",
                              trigger_intervals={"raw_events": "1 second"})
    assert (config.trigger_for(raw), config.trigger_for(counts)) == ("1 second", "30 seconds")
    with pytest.raises(Failure, match=r"unknown query\(ies\) raw_event; .*raw_events"):
        check_trigger_names(TABLES, {"raw_event": "1 second"})


class _Log:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda text: self.lines.append((level, text))


@pytest.mark.parametrize(
    ("error", "kind", "fatal"),
    [
        ("org.apache.spark.SparkException: Partition events-0's offset was changed from 78 "
         "to 0, some data may have been lost because they are not available in Kafka any "
         "more", KafkaDataLoss, True),
        ("java.lang.IllegalStateException: Incomplete log file in the offset commit log",
         CheckpointMismatch, True),
        ("org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node",
         None, False),
    ],
)
def test_a_query_that_cannot_succeed_on_restart_ends_the_run_with_what_to_do(
    tmp_path, error, kind, fatal
):
    from stream_assets.resources import DeltaLake
    from stream_assets.tables.runner import StreamContext

    lake = DeltaLake(tables_root=str(tmp_path / "t"), checkpoints_root=str(tmp_path / "c"))
    ctx = StreamContext(spark=None, lake=lake, source=None)
    raw = next(t for t in TABLES if t.name == "raw_events")
    supervisor = Supervisor([raw], ctx, ContinuousConfig(), _Log(), clock=lambda: 100.0)
    supervisor._terminated(supervisor.streams[0], error)
    if fatal:
        assert isinstance(supervisor.fatal, kind)
        assert "stream-assets reset raw_events" in str(supervisor.fatal)
    else:
        assert supervisor.fatal is None and supervisor.streams[0].retry_at > 100.0


def test_errors_keep_the_root_cause_first_then_the_first_line_not_the_stack():
    text = (
        "py4j.Py4JException: An exception was raised by the Python Proxy.\n"
        "\tat org.apache.spark.Foo.bar(Foo.scala:1)\n"
        "Caused by: org.apache.spark.SparkException: Task failed\n"
        "\tat org.apache.spark.Baz.qux(Baz.scala:2)\n"
        "Caused by: java.io.IOException: Destination exists and is not a directory: /t/x\n"
    )
    assert short_error(text) == (
        "java.io.IOException: Destination exists and is not a directory: /t/x "
        "(raised as: py4j.Py4JException: An exception was raised by the Python Proxy.)"
    )
    assert short_error("ValueError: no cause\n\tat x(y.scala:1)") == "ValueError: no cause"
    assert short_error(None) == "the query stopped with an error"


def test_job_is_tagged_continuous_and_runs_in_process_with_defaults():
    job = build_continuous_job(TABLES)
    assert job.name == JOB_NAME == "continuous_streams"
    assert [node.name for node in job.nodes] == [OP_NAME]
    assert job.tags[MODE_TAG] == CONTINUOUS
    assert job.executor_def.name == "in_process"
    config = ContinuousConfig()
    assert config.tables == [] and config.max_runtime_s is None
    assert config.event_interval_s > 0 and config.restart_on_failure


class FakeStreams:
    def __init__(self) -> None:
        self.listeners: list[object] = []

    def addListener(self, listener: object) -> None:
        self.listeners.append(listener)

    def removeListener(self, listener: object) -> None:
        self.listeners.remove(listener)


class FakeClient:
    released = closed = False

    def release_session(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


class FakeClassicSession:
    def __init__(self) -> None:
        self.streams = FakeStreams()
        self.client = FakeClient()


class FakeConnectSession(FakeClassicSession):
    """Stands in for a Spark Connect client session: sinks.is_connect reads the module."""

    __module__ = "pyspark.sql.connect.session"
    cloneable = True

    def cloneSession(self) -> FakeConnectSession:
        if not self.cloneable:
            raise RuntimeError("UNIMPLEMENTED: CloneSession")
        return FakeConnectSession()


class FakeLog:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def test_through_spark_connect_each_query_starts_in_a_session_of_its_own_released_at_the_end():
    run_session, listener = FakeConnectSession(), object()
    sessions = QuerySessions(run_session, listener, FakeLog())
    counts, again, user_sessions = (sessions.for_query(n)
                                    for n in ("event_counts", "event_counts", "user_sessions"))
    assert counts is again  # a restarted query keeps its session
    assert len({id(run_session), id(counts), id(user_sessions)}) == 3
    assert counts.streams.listeners == user_sessions.streams.listeners == [listener]
    assert run_session.streams.listeners == []  # no query of the run starts there

    sessions.close()
    for own in (counts, user_sessions):
        assert own.streams.listeners == [] and own.client.released and own.client.closed
    assert not run_session.client.released and not run_session.client.closed


def test_a_classic_session_is_shared_because_spark_clones_it_per_query_itself():
    run_session, listener = FakeClassicSession(), object()
    sessions = QuerySessions(run_session, listener, FakeLog())
    assert sessions.for_query("event_counts") is sessions.for_query("user_sessions") is run_session
    assert run_session.streams.listeners == [listener]
    sessions.close()
    assert run_session.streams.listeners == [] and not run_session.client.released


def test_a_connect_server_that_cannot_clone_sessions_shares_the_run_session_with_a_warning():
    run_session, listener, log = FakeConnectSession(), object(), FakeLog()
    run_session.cloneable = False
    sessions = QuerySessions(run_session, listener, log)
    assert sessions.for_query("event_counts") is sessions.for_query("user_sessions") is run_session
    assert run_session.streams.listeners == [listener]  # listened to once
    assert len(log.warnings) == 2 and "transaction ids" in log.warnings[0]
    sessions.close()
    assert run_session.streams.listeners == [] and not run_session.client.released
