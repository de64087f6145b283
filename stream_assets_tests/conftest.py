"""Session-wide real parts: one SparkSession and one Kafka broker for the whole test run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_assets_tests import interpreted

pytest_plugins = [
    "stream_assets_tests.fixtures_kafka",
    "stream_assets_tests.fixtures_s3",
    "stream_assets_tests.fixtures_spark_cluster",
    "stream_assets_tests.timing",
]

# Everything the tests write goes below a throw-away home, never into the demo's.
_TEST_HOME = Path(tempfile.mkdtemp(prefix="stream_assets_tests_"))
os.environ.setdefault("STREAM_ASSETS_JARS", str(Path(__file__).resolve().parent.parent
                                                 / ".stream_assets" / "jars"))
os.environ["STREAM_ASSETS_HOME"] = str(_TEST_HOME)
# The JVMs the tests start besides the worker's own SparkSession (run workers, fault drivers,
# the broker, the cluster, Connect) live for seconds to minutes on small data: the C1 compiler
# alone makes their code fast enough and spends a third less CPU than tiered compilation up to
# C2, on two cores shared by two workers (docs/testing.md). The worker's session lives for the
# whole run and keeps the full JIT (SESSION_JIT, in spark_resource). The product's own JVMs
# keep the default: a stream runs for months.
os.environ.setdefault("JDK_JAVA_OPTIONS", "-XX:TieredStopAtLevel=1")
SESSION_JIT = os.environ.get("STREAM_ASSETS_TEST_SESSION_JIT", "-XX:TieredStopAtLevel=4")
# Every JVM pyspark starts here or in a child evaluates expressions interpreted: a fifth less
# CPU on the tests' small batches; compiled code is tested too (interpreted.py says where).
# Setting PYSPARK_SUBMIT_ARGS yourself (to "pyspark-shell") runs everything compiled.
os.environ.setdefault("PYSPARK_SUBMIT_ARGS", interpreted.submit_args())

# Files whose tests share one `dagster dev` (dagster_dev.py): under pytest-xdist they run on one
# worker, so the suite starts one webserver, daemon and code server, not one per worker. Files
# that only use its `alert_receiver` (a small HTTP server, one per worker) are not in it.
DAGSTER_DEV_FILES = frozenset({"test_ops_browser.py", "test_ops_dagster_dev.py"})
# The longest groups, longest first (docs/testing.md has the figures): a worker that takes one
# of them last would leave the other idle at the end of the run. The rest follow in file order.
LONGEST_FIRST = ("test_crash_sweep.py", "dagster_dev", "test_ops_continuous.py",
                 "test_ops_health_e2e.py", "test_spark_connect.py", "test_streaming_tables.py",
                 "test_redrive.py", "test_faults_broker.py", "test_hostile_input.py",
                 "test_faults_driver_killed.py", "test_ops_pools.py", "test_cluster.py",
                 "test_transforms.py", "test_maintenance.py", "test_cli.py", "test_s3_lake.py")


def _no_logging_reset_without_handler_config() -> None:
    """Dagster 1.13 calls logging.config.dictConfig at the start of every execution, even
    when the instance configures no Python log handler: that takes logging's module lock and
    then each existing handler's. A continuous run in a thread of the same process emits
    through its handler (handler lock) and asks logging.getLogger (module lock) meanwhile: the
    two deadlock. Seen once in a full run (test_refresh: a refresh refused while a continuous
    run writes), which then hung with no CPU used. With no handler configured that dictConfig
    returns no handler, so it is skipped; a configured one still goes through Dagster's code.
    The product's runs are processes of their own (dagster dev, the demo) and never start two
    executions in one process; the tests do."""
    from dagster._core.instance.methods.event_methods import EventMethods

    configured = EventMethods.get_yaml_python_handlers

    def handlers(self):
        if not self._instance.get_python_log_dagster_handler_config():
            return []
        return configured(self)

    EventMethods.get_yaml_python_handlers = handlers


_no_logging_reset_without_handler_config()


def group_of(nodeid: str) -> str:
    """The part of the suite one worker takes at a time: a test's file, or `dagster_dev` for
    the files that share it."""
    name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return "dagster_dev" if name in DAGSTER_DEV_FILES else name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest groups first; xdist keeps the order with --no-loadscope-reorder."""
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile` (scripts/test.sh), with the `dagster dev` files as one file: a worker
    takes a whole group, so module fixtures (a Spark cluster, a Connect server, the crash
    sweep's lakes) and `dagster dev` start once. pytest-xdist's own `loadgroup` cannot do it
    under pytest 9.2, whose node ids no longer take the group suffix xdist appends."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByTestGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return ByTestGroup(config, log)


@pytest.fixture(scope="session")
def spark_resource():
    from stream_assets.resources import SparkResource

    # Shared by every test: stopping it in a resource teardown would kill it for the next test.
    # A lake on the test S3 server gives the session its S3A settings itself (DeltaLake.attach).
    config = {"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "2g"}
    if SESSION_JIT:
        # The worker's own JVM lives for the whole run and does most of the work: the full JIT
        # (a later flag wins over JDK_JAVA_OPTIONS' C1-only).
        java = SparkResource(spark_config=config).session_config().get(
            "spark.driver.extraJavaOptions", "")
        config["spark.driver.extraJavaOptions"] = f"{java} {SESSION_JIT}".strip()
    return SparkResource(stop_on_teardown=False, spark_config=config)


@pytest.fixture(scope="session")
def spark(spark_resource) -> Iterator:
    session = spark_resource.spark_session
    yield session
    session.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A per-test folder for table and checkpoint paths, so tests never share state."""
    return tmp_path
