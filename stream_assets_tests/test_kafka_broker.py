"""The local Kafka broker against a real JVM: lifecycle, messages, the Event Hubs SASL emulation.

The session broker (fixture `kafka_broker`) serves the message and SASL tests; lifecycle tests
run their own broker in their own home on other free ports, so stopping or killing it cannot
disturb the shared one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from stream_assets.dev import broker_config
from stream_assets.dev import kafka_broker as kb
from stream_assets.dev.kafka_broker import EVENT_HUBS_USER, LocalBroker
from stream_assets.errors import KafkaUnavailable, StreamAssetsError
from stream_assets_tests.fixtures_kafka import free_ports

pytest_plugins = ["stream_assets_tests.fixtures_kafka"]


def _produce(bootstrap_config: dict[str, object], topic: str, value: dict[str, str]) -> None:
    producer = Producer({**bootstrap_config, "acks": "all"})
    producer.produce(topic, json.dumps(value).encode(), key=value["event_id"].encode())
    assert producer.flush(15) == 0, "message not delivered within 15 s"


def _consume_one(config: dict[str, object], topic: str, timeout_s: float = 30) -> bytes:
    consumer = Consumer(
        {
            **config,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            return message.value()
        raise AssertionError(f"no message on {topic} within {timeout_s} s")
    finally:
        consumer.close()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker separate from the session one, for tests that stop or kill it."""
    port, controller_port = free_ports(2)
    broker = LocalBroker(home=tmp_path / "kafka", port=port, controller_port=controller_port)
    try:
        yield broker
    finally:
        broker.stop(timeout_s=30)


# -- no JVM -------------------------------------------------------------------------------------


def test_default_port_follows_local_bootstrap_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kb.BOOTSTRAP_ENV, "localhost:19092")
    assert LocalBroker(home=Path("/tmp/unused")).bootstrap == "127.0.0.1:19092"
    monkeypatch.setenv(kb.BOOTSTRAP_ENV, "kafka.example.com:9094")
    broker = LocalBroker(home=Path("/tmp/unused"))
    assert broker.bootstrap == "127.0.0.1:9092"
    # Not 9093: that is the Event Hubs Kafka port.
    assert broker.controller_port == 10092
    monkeypatch.delenv(kb.BOOTSTRAP_ENV)
    assert LocalBroker(home=Path("/tmp/unused")).port == 9092


def test_config_binds_loopback_only_and_escapes_the_secret() -> None:
    secret = 'Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=a"b\\c=;EntityPath=é'
    broker = LocalBroker(home=Path("/tmp/unused"), port=1, controller_port=2, sasl_port=3,
                         sasl_password=secret)
    text = broker._config_text()
    listeners = next(line for line in text.splitlines() if line.startswith("listeners="))
    assert listeners.count("127.0.0.1") == 3 and "0.0.0.0" not in text
    # Properties then JAAS escaping: backslash doubled twice, quote escaped, non-ASCII as \\u.
    assert 'user_$ConnectionString="Endpoint=sb://ns' in text
    assert 'a\\\\"b\\\\\\\\c=;EntityPath=\\u00e9";' in text
    assert secret not in repr(broker)


def test_rejects_half_configured_sasl_and_non_local_hosts() -> None:
    with pytest.raises(StreamAssetsError, match="both sasl_port and sasl_password"):
        LocalBroker(home=Path("/tmp/unused"), sasl_port=19094)
    with pytest.raises(StreamAssetsError, match=r"127\.0\.0\.1"):
        LocalBroker(home=Path("/tmp/unused"), host="0.0.0.0")


# -- the session broker -------------------------------------------------------------------------


@pytest.mark.integration
def test_cluster_ids_never_look_like_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xf8.. encodes to a leading "-" in URL-safe base64; the storage tool would read it as
    # an option and fail to format (seen once in 64 broker starts).
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(broker_config.uuid, "uuid4", lambda: next(drawn))
    assert broker_config.random_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"


def test_produce_and_consume(kafka_broker: LocalBroker, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("events")
    event = {"event_id": "e-1", "event_type": "click", "user_id": "u-1",
             "timestamp": "2024-01-01T00:00:00Z", "properties": {"page": "/home"}}
    _produce(kafka_broker.client_config(), topic, event)
    assert json.loads(_consume_one(kafka_broker.client_config(), topic)) == event


@pytest.mark.integration
def test_create_topics_is_idempotent(
    kafka_broker: LocalBroker, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("idem", partitions=2)
    kafka_broker.create_topics([topic], partitions=5)  # exists: left as it is
    metadata = AdminClient(kafka_broker.client_config()).list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 2
    kafka_broker.delete_topics([topic])
    kafka_broker.delete_topics([topic])  # gone already: fine
    assert topic not in AdminClient(kafka_broker.client_config()).list_topics(timeout=10).topics


@pytest.mark.integration
def test_sasl_listener_accepts_the_connection_string(
    kafka_broker: LocalBroker, event_hubs_connection_string: str,
    topic_factory: Callable[..., str],
) -> None:
    topic = topic_factory("hub")
    _produce(kafka_broker.client_config(), topic, {"event_id": "e-2"})
    sasl = kafka_broker.sasl_client_config()
    assert sasl["sasl.username"] == EVENT_HUBS_USER == "$ConnectionString"
    assert sasl["sasl.password"] == event_hubs_connection_string
    assert topic in AdminClient(sasl).list_topics(timeout=15).topics
    assert json.loads(_consume_one(sasl, topic)) == {"event_id": "e-2"}


@pytest.mark.integration
def test_sasl_listener_rejects_a_wrong_password(
    kafka_broker: LocalBroker, event_hubs_connection_string: str
) -> None:
    errors: list[KafkaError] = []
    wrong = event_hubs_connection_string.replace("SharedAccessKey=", "SharedAccessKey=x")
    admin = AdminClient({**kafka_broker.sasl_client_config(), "sasl.password": wrong,
                         "error_cb": errors.append})
    # librdkafka connects to the bootstrap broker at once and reports the refusal via error_cb.
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        admin.poll(0.2)
    assert [e.code() for e in errors][:1] == [KafkaError._AUTHENTICATION], errors
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=1)


@pytest.mark.integration
def test_the_secret_stays_in_the_private_config(
    kafka_broker: LocalBroker, event_hubs_connection_string: str
) -> None:
    mode = stat.S_IMODE(kafka_broker.config_path.stat().st_mode)
    assert mode == 0o600
    pid = kafka_broker.status().pid
    assert pid is not None
    assert event_hubs_connection_string.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    # Everything the broker writes besides its data (topics may hold anything other tests sent).
    written = [*kafka_broker.home.glob("*"), *kafka_broker.logs_dir.glob("*")]
    for path in written:
        if path.is_file() and path != kafka_broker.config_path:
            assert event_hubs_connection_string.encode() not in path.read_bytes(), path
    assert event_hubs_connection_string not in repr(kafka_broker)


# -- brokers of their own -----------------------------------------------------------------------


def _ignored_signals(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {sig for sig in range(1, 65) if mask & (1 << (sig - 1))}
    return set()


@pytest.mark.integration
def test_stops_cleanly_even_if_started_by_a_process_that_ignores_sigterm(
    own_broker: LocalBroker,
) -> None:
    # A suite run in the background of a non-interactive shell ignores SIGINT, and Dagster maps
    # SIGTERM onto that: a broker inheriting the ignored SIGTERM could only be killed.
    saved = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        pid = own_broker.start().pid
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert pid is not None and signal.SIGTERM not in _ignored_signals(pid)
    started = time.monotonic()
    own_broker.stop(timeout_s=30)
    assert time.monotonic() - started < 30 and not kb._alive(pid)


@pytest.mark.integration
def test_start_reuses_and_stop_is_clean(own_broker: LocalBroker) -> None:
    first = own_broker.start()
    assert first.running and first.pid is not None
    assert own_broker.pid_path.read_text().strip() == str(first.pid)
    own_broker.create_topics(["kept"], partitions=1)

    started = time.monotonic()
    again = LocalBroker(home=own_broker.home, port=own_broker.port,
                        controller_port=own_broker.controller_port).start()
    assert again.pid == first.pid and again.running
    assert time.monotonic() - started < 5, "a running broker must be reused, not restarted"
    assert own_broker.status().pid == first.pid

    other_port = LocalBroker(home=own_broker.home, port=free_ports(1)[0])
    with pytest.raises(KafkaUnavailable, match="other settings"):
        other_port.start()

    stopped = own_broker.stop()
    assert not stopped.running and not own_broker.pid_path.exists()
    assert not kb._alive(first.pid)
    if _broker_logs(own_broker):
        assert "[BrokerServer id=1] shut down completed" in own_broker.log_path.read_text()
    assert own_broker.stop().running is False  # idempotent
    assert own_broker.status().running is False

    # Data survive a restart.
    own_broker.start()
    metadata = AdminClient(own_broker.client_config()).list_topics(timeout=10)
    assert "kept" in metadata.topics


def _broker_logs(broker: LocalBroker) -> bool:
    """Whether the jar set lets the broker log at all (see broker_config.logging_problem)."""
    return broker_config.logging_problem(kb.jars.jars("kafka")) is None


@pytest.mark.integration
def test_recovers_from_a_stale_pid_file_after_sigkill(own_broker: LocalBroker) -> None:
    pid = own_broker.start().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert kb._wait_dead(pid, 10)
    assert own_broker.pid_path.exists()

    status = own_broker.status()
    assert not status.running and status.pid is None and "stale" in status.detail

    restarted = own_broker.start()
    assert restarted.running and restarted.pid not in (None, pid)
    assert own_broker.pid_path.read_text().strip() == str(restarted.pid)


@pytest.mark.integration
def test_port_taken_by_another_program_is_a_clear_error(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    with socket.socket() as squatter:  # listens, accepts, never speaks Kafka
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        broker = LocalBroker(home=tmp_path, port=port, controller_port=controller_port)
        with pytest.raises(KafkaUnavailable, match=rf"127\.0\.0\.1:{port} .*in use"):
            broker.start(timeout_s=30)
    assert not broker.pid_path.exists()


@pytest.mark.integration
def test_failed_start_reports_the_log_and_leaves_no_process(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    broker = LocalBroker(home=tmp_path, port=port, controller_port=controller_port)
    # Storage formatted for another node: Kafka refuses to start with it.
    broker.data_dir.mkdir(parents=True)
    (broker.data_dir / "meta.properties").write_text(
        "version=1\nnode.id=7\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAQ\n"
    )
    with pytest.raises(KafkaUnavailable, match="exited during startup") as failure:
        broker.start(timeout_s=60)
    assert str(broker.log_path) in str(failure.value)
    assert not broker.pid_path.exists()
    assert broker.status().running is False
