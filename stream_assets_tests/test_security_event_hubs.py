"""The Event Hubs path end to end, and its connection string kept out of every log and record.

The session broker's SASL_PLAINTEXT listener emulates the Event Hubs Kafka endpoint (TLS aside):
user `$ConnectionString`, password the connection string. After a real run, the string and its
key are searched for in everything a user or operator can read: Dagster's event log, run
config, job snapshot, materialization metadata and compute logs (all on disk in a DAGSTER_HOME
of the test's own), Spark's console log at INFO and Spark's event log (whose environment record
holds the SparkConf and JVM properties), and the checkpoint and tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, EnvVar, materialize
from dagster._serdes import serialize_value

from stream_assets.dev.generator import generate_events
from stream_assets.dev.producer import produce
from stream_assets.errors import KafkaUnavailable
from stream_assets.resources import DeltaLake, EventHubsSource
from stream_assets.resources.kafka import KafkaConnection
from stream_assets.tables.assets import build_asset
from stream_assets.tables.catalog import raw_events
from stream_assets_tests.fault_driver import (
    CONNECTION_STRING_ENV,
    Driver,
    actual_tables,
    broker_messages,
    expected_tables,
)

pytestmark = pytest.mark.integration


def fragments(connection_string: str) -> list[str]:
    """What must never be readable: the string, its key, and the key's core (escaping-proof)."""
    key = next(p.split("=", 1)[1] for p in connection_string.split(";")
               if p.startswith("SharedAccessKey="))
    core = max("".join(c if c.isalnum() else " " for c in key).split(), key=len)
    assert len(core) >= 12
    return [connection_string, key, core]


def leaks_in_files(roots: list[Path], secrets: list[str]) -> list[str]:
    found = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [f"{path} holds {secret[:8]}..." for secret in secrets
                      if secret.encode() in data]
    return found


def leaks_in_instance(instance: DagsterInstance, secrets: list[str]) -> list[str]:
    """Everything the UI shows about runs, read through Dagster's own API."""
    found = []
    runs = instance.get_runs()
    assert runs, "no run was recorded"
    for run in runs:
        texts = {
            "run config": json.dumps(run.run_config, default=str),
            "run tags": json.dumps(run.tags, default=str),
            "job snapshot": serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
        }
        if run.execution_plan_snapshot_id:
            texts["execution plan"] = serialize_value(
                instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))
        records = instance.all_logs(run.run_id)
        assert records
        texts["event log"] = "\n".join(serialize_value(r) for r in records)
        for name, text in texts.items():
            found += [f"{name} of run {run.run_id} holds {s[:8]}..." for s in secrets if s in text]
    return found


@pytest.mark.slow
def test_event_hubs_run_reads_with_the_right_string_and_reveals_it_nowhere(
    kafka_broker, topic_factory, event_hubs_connection_string, spark, workdir
):
    topic = topic_factory("hub")
    records = [r.__class__(topic, r.key, r.value, r.kind, r.event)
               for r in generate_events(120, bad_ratio=0.1, seed=61, id_prefix="hub")]
    produce(records, KafkaConnection(bootstrap_servers=kafka_broker.bootstrap))

    dagster_home = workdir / "dagster"
    dagster_home.mkdir()
    spark_events = workdir / "spark-events"
    spark_events.mkdir()
    with Driver(
        workdir, kafka_broker.sasl_bootstrap, topic, name="hub",
        env={CONNECTION_STRING_ENV: event_hubs_connection_string,
             "STREAM_ASSETS_HOME": str(workdir / "home")},
        extra_args=["--event-hubs", "--dagster-home", str(dagster_home), "--log-level", "INFO",
                    "--conf", "spark.eventLog.enabled=true",
                    "--conf", f"spark.eventLog.dir=file://{spark_events}",
                    # Plain text, so the search below reads what Spark recorded.
                    "--conf", "spark.eventLog.compress=false"],
    ) as driver:
        outcome = driver.run()
    assert outcome.ok, outcome.describe()

    # Reading through the SASL listener worked: every record landed once.
    expected = expected_tables(records, broker_messages(kafka_broker.bootstrap, topic))
    actual = actual_tables(workdir / "tables")
    assert actual.events == expected.events and actual.dead == expected.dead

    # The places searched are not empty, so finding nothing there means something.
    assert "INFO" in outcome.stderr, "Spark's console log was not captured at INFO"
    event_logs = [p.read_bytes() for p in spark_events.rglob("*") if p.is_file()]
    assert any(b"SparkListenerEnvironmentUpdate" in log for log in event_logs)
    assert (dagster_home / "storage").is_dir()

    secrets = fragments(event_hubs_connection_string)
    leaks = leaks_in_files(
        [dagster_home, spark_events, driver.signal_dir, workdir / "tables",
         workdir / "checkpoints"], secrets)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        leaks += leaks_in_instance(instance, secrets)
    assert not leaks, "\n".join(leaks)


def _wrong(connection_string: str) -> str:
    key = fragments(connection_string)[1]
    return connection_string.replace(key, "V3JvbmdLZXlGb3JUZXN0aW5nT25seQ==")


def _run_with(connection_string, kafka_broker, topic, spark_resource, workdir, monkeypatch):
    monkeypatch.setenv(CONNECTION_STRING_ENV, connection_string)
    (workdir / "dagster").mkdir(exist_ok=True)
    instance = DagsterInstance.local_temp(tempdir=str(workdir / "dagster"))
    source = EventHubsSource(connection_string=EnvVar(CONNECTION_STRING_ENV), event_hub=topic,
                             bootstrap_servers=kafka_broker.sasl_bootstrap,
                             security_protocol="SASL_PLAINTEXT", connect_timeout_s=4)
    lake = DeltaLake(tables_root=str(workdir / "tables"),
                     checkpoints_root=str(workdir / "checkpoints"))
    try:
        with pytest.raises(KafkaUnavailable) as raised:
            materialize([build_asset(raw_events)], instance=instance,
                        resources={"spark": spark_resource, "lake": lake,
                                   "stream_source": source})
        return instance, raised.value
    finally:
        instance.dispose()


def test_wrong_connection_string_is_refused_and_never_echoed(
    kafka_broker, topic_factory, event_hubs_connection_string, spark_resource, workdir,
    monkeypatch
):
    wrong = _wrong(event_hubs_connection_string)
    topic = topic_factory("hub-wrong")
    _, error = _run_with(wrong, kafka_broker, topic, spark_resource, workdir, monkeypatch)
    message = str(error)
    assert kafka_broker.sasl_bootstrap in message
    secrets = fragments(wrong) + fragments(event_hubs_connection_string)
    assert not [s for s in secrets if s in message]
    leaks = leaks_in_files([workdir / "dagster"], secrets)
    assert not leaks, "\n".join(leaks)
    assert not (workdir / "tables" / "raw_events").exists()


def test_wrong_connection_string_error_says_the_credentials_were_refused(
    kafka_broker, topic_factory, event_hubs_connection_string, spark_resource, workdir,
    monkeypatch
):
    topic = topic_factory("hub-auth")
    _, error = _run_with(_wrong(event_hubs_connection_string), kafka_broker, topic,
                         spark_resource, workdir, monkeypatch)
    assert "authentication failed" in str(error).lower()
    assert "no Kafka broker answered" not in str(error)
