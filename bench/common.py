"""Shared set-up for benchmarks: a private broker, a Spark resource, produced data."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stream_assets.dev.kafka_broker import LocalBroker
from stream_assets.resources import SparkResource
from stream_assets_tests.fixtures_kafka import free_ports


@contextmanager
def broker() -> Iterator[LocalBroker]:
    """A broker of its own on free ports, so a running demo is never touched."""
    home = Path(tempfile.mkdtemp(prefix="stream_assets_bench_kafka_"))
    port, controller = free_ports(2)
    local = LocalBroker(home=home, port=port, controller_port=controller)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def spark_resource() -> SparkResource:
    return SparkResource(stop_on_teardown=False)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
