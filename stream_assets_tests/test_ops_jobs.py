"""The continuous job's definition and its pure parts (no Spark)."""

from __future__ import annotations

import pytest
from dagster import Failure

from stream_assets.jobs import (
    CONTINUOUS,
    MODE_TAG,
    ContinuousConfig,
    continuous_streams,
    select_tables,
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


def test_errors_keep_the_first_line_and_the_root_cause_not_the_stack():
    text = (
        "py4j.Py4JException: An exception was raised by the Python Proxy.\n"
        "\tat org.apache.spark.Foo.bar(Foo.scala:1)\n"
        "Caused by: org.apache.spark.SparkException: Task failed\n"
        "\tat org.apache.spark.Baz.qux(Baz.scala:2)\n"
        "Caused by: java.io.IOException: Destination exists and is not a directory: /t/x\n"
    )
    assert short_error(text) == (
        "py4j.Py4JException: An exception was raised by the Python Proxy. | "
        "Caused by: java.io.IOException: Destination exists and is not a directory: /t/x"
    )
    assert short_error(None) == "the query stopped with an error"


def test_job_is_tagged_continuous_and_runs_in_process_with_defaults():
    assert continuous_streams.tags[MODE_TAG] == CONTINUOUS
    assert continuous_streams.executor_def.name == "in_process"
    config = ContinuousConfig()
    assert config.tables == [] and config.max_runtime_s is None
    assert config.event_interval_s > 0 and config.restart_on_failure
