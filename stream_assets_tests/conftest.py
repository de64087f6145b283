"""Session-wide real parts: one SparkSession and one Kafka broker for the whole test run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "stream_assets_tests.fixtures_kafka",
    "stream_assets_tests.fixtures_s3",
    "stream_assets_tests.fixtures_spark_cluster",
]

# Everything the tests write goes below a throw-away home, never into the demo's.
_TEST_HOME = Path(tempfile.mkdtemp(prefix="stream_assets_tests_"))
os.environ.setdefault("STREAM_ASSETS_JARS", str(Path(__file__).resolve().parent.parent
                                                 / ".stream_assets" / "jars"))
os.environ["STREAM_ASSETS_HOME"] = str(_TEST_HOME)


@pytest.fixture(scope="session")
def spark_resource():
    from stream_assets.resources import SparkResource

    # Shared by every test: stopping it in a resource teardown would kill it for the next test.
    # A lake on the test S3 server gives the session its S3A settings itself (DeltaLake.attach).
    return SparkResource(
        stop_on_teardown=False,
        spark_config={"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "2g"},
    )


@pytest.fixture(scope="session")
def spark(spark_resource) -> Iterator:
    session = spark_resource.spark_session
    yield session
    session.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A per-test folder for table and checkpoint paths, so tests never share state."""
    return tmp_path
