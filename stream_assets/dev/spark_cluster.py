"""A Spark standalone cluster and a Spark Connect server on 127.0.0.1, from the installed PySpark.

The pyspark wheel carries a whole Spark distribution (`bin/spark-class`, `bin/spark-submit`,
`jars/` with the standalone master and worker and the Spark Connect server), so no download and
no Docker is needed to try the cluster paths of `SparkResource` on one machine:

    with StandaloneCluster(home / "cluster") as cluster:      # a master and one worker
        SparkResource(master=cluster.master_url, spark_config=cluster.client_config())
    with ConnectServer(home / "connect") as server:           # a long-running Spark driver
        SparkResource(remote=server.url)

Both return from `start()` only once they answer (the master lists an alive worker; the Connect
server accepts connections), on free ports bound to 127.0.0.1, with their logs in `home/logs`.
Used by the tests and `bench/connect_overhead.py`.

The Connect server is started with the configuration a local `SparkResource` would use (Delta's
SQL extension and catalog, the RocksDB state store, redaction, the `spark` jars through
`spark.jars`), so tables written through it are the ones a local run writes. The project's own
functions (the `udf` jars) are not on it: each SparkResource session uploads them, as it does to
a user's server. Delta's own Spark
Connect plugins (`io.delta:delta-connect-server`, for the `DeltaTable` Python API) are added only
when their jars are passed in `extra_jars`; see docs/cluster.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from stream_assets import jars
from stream_assets.dev.ports import accepts, free_ports
from stream_assets.dev.processes import log_tail, popen
from stream_assets.errors import StreamAssetsError

CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# Delta Connect's server plugins: what `delta.tables.DeltaTable` needs over Spark Connect.
DELTA_CONNECT_PLUGINS = {
    "spark.connect.extensions.relation.classes":
        "org.apache.spark.sql.connect.delta.DeltaRelationPlugin",
    "spark.connect.extensions.command.classes":
        "org.apache.spark.sql.connect.delta.DeltaCommandPlugin",
}
HOST = "127.0.0.1"


class SparkProcessFailed(StreamAssetsError):
    """A local Spark daemon (master, worker or Connect server) did not come up."""


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark wheel."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


class _Daemon:
    """One JVM started in its own process group, with its output in a log file."""

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], home: Path,
                 log: Path):
        self.name, self.command, self.env, self.home, self.log = name, command, dict(env), home, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            # In its own folder: Spark drops spark-warehouse/ and derby.log into the working
            # directory, and Python workers would import a checkout found there first.
            self.process = popen(
                self.command, env=self.env, cwd=self.home, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise SparkProcessFailed(
                f"the Spark {self.name} exited with code {self.process.returncode} while "
                f"starting; its log {self.log} ends with:\n{log_tail(self.log) or '(no log)'}"
            )

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM to the daemon's process group (its executors and Python workers too)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _wait(what: str, ready, daemons: Iterable[_Daemon], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for daemon in daemons:
            daemon.check_alive()
        if ready():
            return
        if time.monotonic() > deadline:
            raise SparkProcessFailed(
                f"{what} did not answer within {timeout_s:g} s; {log} ends with:\n"
                f"{log_tail(log) or '(no log)'}"
            )
        time.sleep(0.5)


def _base_env(home: Path) -> dict[str, str]:
    conf_dir = home / "conf"  # empty: no spark-defaults.conf or spark-env.sh of the user leaks in
    conf_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        SPARK_HOME=str(spark_home()),
        SPARK_CONF_DIR=str(conf_dir),
        SPARK_LOCAL_IP=HOST,
        SPARK_LOG_DIR=str(home / "logs"),
        # Python workers (UDFs, stateful processors, foreachBatch) run this interpreter, which
        # has pyspark, its dependencies and stream_assets.
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    # A variable meant for a client process must not turn the daemons' Python workers remote.
    env.pop("SPARK_REMOTE", None)
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    return env


class StandaloneCluster:
    """A standalone master and one worker, as `spark://127.0.0.1:PORT`.

    Executors are separate JVMs started by the worker, so a session on this cluster exercises
    what a real one does: jars shipped from the driver (`spark.jars`), Python workers started
    on executors, shuffles between JVMs.
    """

    def __init__(self, home: Path, *, cores: int = 2, memory: str = "1g",
                 daemon_memory: str = "256m"):
        self.home = Path(home)
        self.cores, self.memory, self.daemon_memory = cores, memory, daemon_memory
        self.port, self.ui_port, self.worker_ui_port = free_ports(3)
        self._daemons: list[_Daemon] = []

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.ui_port}"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def client_config(self) -> dict[str, str]:
        """What a driver on this machine sets to use the whole (small) cluster."""
        return {
            "spark.driver.host": HOST,
            "spark.driver.bindAddress": HOST,
            "spark.executor.memory": self.memory,
            "spark.executor.cores": str(self.cores),
            "spark.cores.max": str(self.cores),
        }

    def status(self) -> dict:
        """The master's own JSON view: workers, cores, applications."""
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as response:
            return json.load(response)

    def _alive_workers(self) -> int:
        try:
            return int(self.status().get("aliveworkers", 0))
        except (OSError, ValueError, urllib.error.URLError):
            return 0

    def start(self, timeout_s: float = 180) -> StandaloneCluster:
        env = _base_env(self.home)
        env["SPARK_DAEMON_MEMORY"] = self.daemon_memory
        env["SPARK_WORKER_DIR"] = str(self.home / "work")
        spark_class = str(spark_home() / "bin" / "spark-class")
        master = _Daemon(
            "master",
            [spark_class, MASTER_CLASS, "--host", HOST, "--port", str(self.port),
             "--webui-port", str(self.ui_port)],
            env, self.home, self.logs / "master.log",
        )
        worker = _Daemon(
            "worker",
            [spark_class, WORKER_CLASS, self.master_url, "--host", HOST,
             "--cores", str(self.cores), "--memory", self.memory,
             "--webui-port", str(self.worker_ui_port), "--work-dir", str(self.home / "work")],
            env, self.home, self.logs / "worker.log",
        )
        try:
            master.start()
            self._daemons.append(master)
            _wait(f"the Spark master at {self.master_url}", lambda: accepts(HOST, self.port, 1),
                  self._daemons, timeout_s, master.log)
            worker.start()
            self._daemons.append(worker)
            _wait(f"a Spark worker registered at {self.master_url}",
                  lambda: self._alive_workers() >= 1, self._daemons, timeout_s, worker.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        while self._daemons:
            self._daemons.pop().stop()  # the worker (and its executors) before the master

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ConnectServer:
    """A Spark Connect server (`sc://127.0.0.1:PORT`): one long-running Spark driver.

    `master` is where its queries run (`local[2]`, or a `StandaloneCluster.master_url`).
    `conf` is added to (and wins over) the project's session configuration.
    """

    def __init__(self, home: Path, *, master: str = "local[2]", driver_memory: str = "1g",
                 conf: Mapping[str, str] | None = None, extra_jars: Iterable[Path] = (),
                 python: Path | None = None):
        self.home = Path(home)
        # The interpreter of its Python workers (foreachBatch, UDFs): Spark Connect takes it
        # from PYSPARK_PYTHON, not from spark.pyspark.python. Default: this one.
        self.python = python
        self.master, self.driver_memory = master, driver_memory
        self.conf = dict(conf or {})
        self.extra_jars = [Path(j) for j in extra_jars]
        (self.port,) = free_ports(1)
        self._daemon: _Daemon | None = None

    @property
    def url(self) -> str:
        return f"sc://{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "logs" / "connect-server.log"

    def server_config(self) -> dict[str, str]:
        """The server's Spark configuration: what a local SparkResource sets, plus Connect's."""
        from stream_assets.resources.spark import SparkResource

        conf = SparkResource(master=self.master).session_config()
        # Not the `udf` jars: each client session uploads them (resources/spark.py
        # upload_functions), and a server without them is what a user's own server is.
        jar_list = [*(str(j) for j in jars.jars("spark")), *(str(j) for j in self.extra_jars)]
        conf["spark.jars"] = ",".join(j for j in jar_list if j)
        if any("delta-connect-server" in j.name for j in self.extra_jars):
            conf.update(DELTA_CONNECT_PLUGINS)
        conf.update(
            {
                "spark.connect.grpc.binding.address": HOST,
                "spark.connect.grpc.binding.port": str(self.port),
                # Python workers of this server (foreachBatch, UDFs) import stream_assets.
                "spark.pyspark.python": sys.executable,
                "spark.pyspark.driver.python": sys.executable,
            }
        )
        conf.update({k: str(v) for k, v in self.conf.items()})
        return conf

    def start(self, timeout_s: float = 180) -> ConnectServer:
        env = _base_env(self.home)
        if self.python is not None:
            env["PYSPARK_PYTHON"] = str(self.python)
        command = [
            str(spark_home() / "bin" / "spark-submit"),
            "--class", CONNECT_SERVER_CLASS,
            "--name", "stream_assets Spark Connect server",
            "--master", self.master,
            "--driver-memory", self.driver_memory,
        ]
        for key, value in self.server_config().items():
            command += ["--conf", f"{key}={value}"]
        self._daemon = _Daemon("Connect server", command, env, self.home, self.log)
        try:
            self._daemon.start()
            _wait(f"the Spark Connect server at {self.url}", lambda: accepts(HOST, self.port, 1),
                  [self._daemon], timeout_s, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None

    def __enter__(self) -> ConnectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
