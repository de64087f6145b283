"""Pytest fixtures: one real Kafka broker for the whole test session.

Registered with `pytest_plugins = ["stream_assets_tests.fixtures_kafka"]`. The broker lives in a
temporary home on free ports (never 9092/9093), so a demo broker the user runs is untouched, and
it also opens the Event Hubs-style SASL listener (user `$ConnectionString`, password
`event_hubs_connection_string`) at `kafka_broker.sasl_bootstrap`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream_assets.dev.kafka_broker import LocalBroker
from stream_assets.dev.ports import free_ports

# Shaped like a real one (with the ';', '=' and '/' a real key has) but for the local emulation
# only. EntityPath names the hub, i.e. the topic the Event Hubs source reads.
EVENT_HUBS_TEST_CONNECTION_STRING = (
    "Endpoint=sb://stream-assets-test.servicebus.windows.net/;"
    "SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=c3RyZWFtLWFzc2V0cy10ZXN0+/k3y=;"
    "EntityPath=events"
)


@contextlib.contextmanager
def broker_of_its_own(home: Path) -> Iterator[LocalBroker]:
    """A started broker on free ports, stopped on leaving: for a test that stops its broker (an
    outage), which would cut off the other tests of the worker on the session broker."""
    port, controller_port = free_ports(2)
    broker = LocalBroker(home=home, port=port, controller_port=controller_port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def event_hubs_connection_string() -> str:
    """The password the test broker's SASL listener accepts for user `$ConnectionString`."""
    return EVENT_HUBS_TEST_CONNECTION_STRING


@pytest.fixture(scope="session")
def kafka_broker(
    tmp_path_factory: pytest.TempPathFactory, event_hubs_connection_string: str
) -> Iterator[LocalBroker]:
    """One broker for the session: `.bootstrap` (PLAINTEXT) and `.sasl_bootstrap` (SASL/PLAIN)."""
    port, controller_port, sasl_port = free_ports(3)
    broker = LocalBroker(
        home=tmp_path_factory.mktemp("kafka"),
        port=port,
        controller_port=controller_port,
        sasl_port=sasl_port,
        sasl_password=event_hubs_connection_string,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic_factory(kafka_broker: LocalBroker) -> Iterator[Callable[..., str]]:
    """`make(prefix, partitions=3) -> name`: a fresh, uniquely named topic on the session broker.

    Unique names keep tests independent of each other's data without restarting the broker;
    the topics are deleted after the test (best effort).
    """
    created: list[str] = []

    def make(prefix: str, partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kafka_broker.create_topics([name], partitions=partitions)
        created.append(name)
        return name

    yield make
    with contextlib.suppress(Exception):
        kafka_broker.delete_topics(created)
