"""Shared set-up for benchmarks: a private broker, a Spark resource, produced data."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stream_assets.dev.kafka_broker import LocalBroker
from stream_assets.dev.ports import free_ports
from stream_assets.dev.s3_server import LocalS3Server
from stream_assets.resources import SparkResource


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
        # A benchmark's topics can hold gigabytes: never leave them behind in /tmp.
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def s3_server(home: Path, wanted: bool = True) -> Iterator[LocalS3Server | None]:
    """The test S3 server on a free loopback port while inside, or None when not `wanted`."""
    if not wanted:
        yield None
        return
    server = LocalS3Server(home=home)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def s3_server_pid(server: LocalS3Server) -> int:
    """The pid of the server's moto process, whose CPU time the benchmark reports apart."""
    # LocalS3Server does not expose it: only a benchmark has a use for it.
    return server._moto.pid


class S3Requests:
    """Requests the test S3 server answered inside the block, by HTTP method.

    Counted from the access log moto's server writes, one line per request (LocalS3Server's
    log_path).
    """

    _REQUEST = re.compile(r'"([A-Z]+) /')

    def __init__(self, server: LocalS3Server) -> None:
        self.log = server.log_path

    def __enter__(self) -> S3Requests:
        self.start = self.log.stat().st_size
        return self

    def __exit__(self, *exc) -> None:
        with open(self.log, "rb") as log:
            log.seek(self.start)
            text = log.read().decode(errors="replace")
        self.by_method = Counter(m.group(1) for m in map(self._REQUEST.search,
                                                         text.splitlines()) if m)
        self.total = sum(self.by_method.values())

    def __str__(self) -> str:
        return f"{self.total} ({', '.join(f'{k} {v}' for k, v in sorted(self.by_method.items()))})"


def spark_resource() -> SparkResource:
    return SparkResource(stop_on_teardown=False)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


class ProcessCpu:
    """CPU seconds one process spends inside the block (its threads, not its children)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _now(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        # utime and stime, fields 14 and 15 of proc(5), counted from the state (field 3).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> ProcessCpu:
        self.start = self._now()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = self._now() - self.start


class JvmCpu(ProcessCpu):
    """CPU seconds the Spark JVM (driver and local executors) spends inside the block.

    On a machine shared with other work, wall time measures the neighbours as much as the
    code; the JVM's own CPU time is what the code costs, whoever else runs. It includes the
    JIT compiler and the garbage collector, which the code also causes.
    """

    def __init__(self, spark) -> None:
        super().__init__(int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()))
