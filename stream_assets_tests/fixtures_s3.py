"""Pytest fixtures: one S3-compatible server (moto behind a relay) for the whole test session.

Registered like fixtures_kafka (conftest's `pytest_plugins`). The server listens on a free
loopback port; `s3_server.outage()` makes it unreachable (connection refused) without losing
its objects. The session's SparkResource (conftest.py) carries its S3A settings, because Spark
reads `spark.hadoop.*` only when the SparkContext starts: a test cannot add them later.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from stream_assets.dev.s3_server import LocalS3Server
from stream_assets.resources import DeltaLake
from stream_assets_tests.fixtures_kafka import free_ports


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3Server]:
    """One server for the session, its bucket `s3_server.bucket` created; see LocalS3Server."""
    [port] = free_ports(1)
    server = LocalS3Server(home=tmp_path_factory.mktemp("s3"), port=port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_workdir(s3_server: LocalS3Server, request: pytest.FixtureRequest) -> Iterator[str]:
    """A per-test prefix in the bucket, as `s3a://<bucket>/<test>-<random>` (no trailing /).

    Like `workdir` for local paths: tests never share tables or checkpoints. The server is
    reachable again after the test even if it failed inside an outage.
    """
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:60]
    yield s3_server.uri(f"{name}-{uuid.uuid4().hex[:8]}")
    s3_server.resume()


# The lakes an `any_lake` test runs on. The S3 server by default: every other integration test
# already runs on a local folder, and running these long tests twice cost CI minutes over its
# 30-minute aim. STREAM_ASSETS_TEST_LAKES=local,s3 runs both, as before a change to the lake.
TEST_LAKES = os.environ.get("STREAM_ASSETS_TEST_LAKES", "s3").split(",")


@pytest.fixture(params=TEST_LAKES)
def any_lake(request: pytest.FixtureRequest, workdir) -> DeltaLake:
    """The lake on the test S3 server, and on a local folder when STREAM_ASSETS_TEST_LAKES
    asks: each run must give the same results against the same expectation (issue 14). Only
    the s3 run starts the server."""
    if request.param == "local":
        return DeltaLake(tables_root=str(workdir / "tables"),
                         checkpoints_root=str(workdir / "checkpoints"))
    server: LocalS3Server = request.getfixturevalue("s3_server")
    return server.lake(request.getfixturevalue("s3_workdir"))


def delta_rs(lake: DeltaLake, table: str):
    """delta-rs's view of one of the lake's tables, on a local disk or the S3 server."""
    from deltalake import DeltaTable

    path = lake.table_path(table)
    if not path.startswith("s3a://"):
        return DeltaTable(path)
    s3 = lake.s3
    return DeltaTable("s3://" + path.removeprefix("s3a://"), storage_options={
        "AWS_ENDPOINT_URL": s3.endpoint, "AWS_REGION": s3.region or "us-east-1",
        "AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
        "AWS_ALLOW_HTTP": "true", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    })
