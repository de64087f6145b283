"""The SparkSession as a Dagster resource, built on dagster-pyspark's lazy resource."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

from dagster import InitResourceContext
from dagster_pyspark import LazyPySparkResource
from pydantic import Field, PrivateAttr
from pyspark.sql import SparkSession

from stream_assets import jars
from stream_assets.errors import MissingJars

# Spark already redacts keys that look like passwords; these add the values and option names
# our sources carry (SASL JAAS configs, Event Hubs connection strings, webhook URLs).
REDACT_KEYS = r"(?i)secret|password|token|access[.]?key|jaas|connection.?string|webhook"
REDACT_VALUES = r"(?i)(SharedAccessKey=[^;\"']*|password=\"[^\"]*\"|hooks\.slack\.com/\S+)"


LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")


# A local driver serves only this machine; never listen on the network. A cluster's executors
# must reach the driver, so with any other master Spark's own choice (or spark_config) holds.
_LOOPBACK_DRIVER = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}


def _local_defaults() -> dict[str, str]:
    cores = os.cpu_count() or 2
    return {
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}",
        # 200 shuffle partitions means 200 state stores per stateful query: far too many on
        # one machine, and fixed forever in each checkpoint. Twice the cores keeps both busy.
        "spark.sql.shuffle.partitions": str(max(2, 2 * cores)),
        "spark.default.parallelism": str(max(2, 2 * cores)),
        # Delta rebuilds a table's state from its log in this many tasks (default 50) whenever
        # a write checks its transaction id, i.e. on every idempotent micro-batch write: 50
        # tiny tasks cost seconds per write on a small machine.
        "spark.databricks.delta.snapshotPartitions": str(max(2, 2 * cores)),
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
    }


def upload_functions(session: SparkSession) -> None:
    """The project's own functions (the `udf` jars: the JSON record parser of
    records/json_records.py) as artifacts of a Spark Connect session, so that a server started
    elsewhere needs only Spark's, Delta's and Kafka's jars (docs/cluster.md). A session the
    server clones for a query keeps them (jobs.QuerySessions). Without a local build the
    server may still have them in its spark.jars; if not, the parsers raise MissingJars."""
    try:
        found = jars.jars("udf")
    except MissingJars:
        return
    session.addArtifacts(*(str(p) for p in found))


class SparkResource(LazyPySparkResource):
    """A SparkSession with Delta Lake and the Kafka connector, local by default.

    `master` takes `local[*]`, `spark://host:7077`, `k8s://...` or `yarn`; `remote` takes a
    Spark Connect URL (`sc://host:15002`) and wins over `master`. The session starts on first
    use (`context.resources.spark.spark_session` in an asset of your own) and is stopped when
    Dagster tears the resource down.
    """

    master: str = Field(default="local[*]", description="Spark master URL.")
    remote: str | None = Field(
        default=None, description="Spark Connect URL, e.g. sc://127.0.0.1:15002; overrides master."
    )
    app_name: str = Field(default="stream_assets", description="Spark application name.")
    spark_config: dict[str, Any] = Field(
        default_factory=dict, description="Extra Spark configuration; wins over the defaults."
    )
    log_level: str = Field(default="WARN", description="Spark's log level once started.")
    stop_on_teardown: bool = Field(
        default=True,
        description="Stop the session when the run ends. Tests that share one session turn it off.",
    )

    def session_config(self) -> dict[str, str]:
        """Everything the builder gets, defaults first so `spark_config` can override them."""
        conf: dict[str, str] = {
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.sql.session.timeZone": "UTC",
            "spark.redaction.regex": REDACT_KEYS,
            "spark.redaction.string.regex": REDACT_VALUES,
            "spark.sql.redaction.options.regex": REDACT_KEYS + "|(?i)url",
            "spark.sql.streaming.stopGracefullyOnShutdown": "true",
            "spark.sql.streaming.stateStore.providerClass": (
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
            ),
        }
        if self.remote is None:
            conf.update(_local_defaults())
            if self.master.startswith("local"):
                conf.update(_LOOPBACK_DRIVER)
            # Local paths: the driver serves them to executors, wherever those run. `udf` holds
            # the project's own functions (the JSON record parser, records/json_records.py).
            conf["spark.jars"] = ",".join(str(p) for p in [*jars.jars("spark"), *jars.jars("udf")])
        conf.update({k: str(v) for k, v in self.spark_config.items()})
        return conf

    def build_session(self) -> SparkSession:
        if self.remote is None:
            # Python workers (UDFs, stateful processors, foreachBatch on executors) must run
            # the interpreter that has pyspark's dependencies, not whatever python3 is on PATH.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if self.remote is None and self.master.startswith("local"):
            # Read by Spark before any configuration: stops its 'hostname resolves to a
            # loopback address' warning and keeps the driver on 127.0.0.1.
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder.appName(self.app_name)
        builder = builder.remote(self.remote) if self.remote else builder.master(self.master)
        for key, value in self.session_config().items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        if self.remote is None:
            session.sparkContext.setLogLevel(self.log_level)
        else:
            upload_functions(session)
        return session

    # Steps of one run may ask for the session at the same time (parallel_executor.py): one
    # builds it, the others wait for it.
    _session_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _init_session(self) -> None:
        with self._session_lock:
            if self._spark_session is None:
                self._spark_session = self.build_session()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._spark_session is not None and self.stop_on_teardown:
            self._spark_session.stop()
            self._spark_session = None
