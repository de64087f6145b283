"""The local Apache Kafka broker (KRaft, one node) that the project starts and stops itself.

No Docker and no download: the broker is the Kafka jars that `stream-assets setup` resolved
(`jars.jars("kafka")`), run as a detached `java` process, so `stream-assets kafka start` works on
a laptop or CI box that only has Java 17.

Layout below `home` (default `$STREAM_ASSETS_HOME/kafka`):

    server.properties   the broker config, rewritten at every start, mode 0600 (it may hold the
                        SASL test password)
    log4j2.xml          copied from this package (broker-log4j2.xml)
    broker.pid          pid of the running broker; removed by stop()
    broker.lock         serializes start/stop between processes (CLI, Dagster, pytest)
    data/               log.dirs and the KRaft metadata log; deleting it resets the topics
    logs/server.log     the broker's log; logs/broker.out is the JVM's own stdout/stderr

Ports (all bound to 127.0.0.1 only):

    port             client listener PLAINTEXT; default the port of $STREAM_ASSETS_KAFKA_BOOTSTRAP
                     when that names 127.0.0.1/localhost, else 9092
    controller_port  the KRaft controller listener; default port + 1000 (10092 for 9092). Not
                     port + 1: 9093 is the Event Hubs Kafka port that SASL tests may use.
    sasl_port        optional SASL_PLAINTEXT/PLAIN listener emulating Event Hubs' Kafka endpoint:
                     its only user is `$ConnectionString`, its password the connection string.

Broker choices, made for a dev box (2 cores, shared with Spark) rather than production:

* `auto.create.topics.enable=false`: a misspelt topic fails loudly instead of silently
  appearing with default settings; topics are created explicitly (`create_topics`, which the
  CLI's `kafka start` calls for the demo topics).
* Replication factor 1 and min ISR 1 everywhere (offsets, transactions, share-group state);
  internal topics get 5 partitions instead of 50 so the first consumer group starts quickly.
* `group.initial.rebalance.delay.ms=0`: a lone test consumer does not wait 3 s for peers.
* Heap -Xms256m -Xmx768m, fewer network/IO threads, a 32 MiB log-cleaner buffer (Kafka
  allocates 128 MiB up front by default).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from stream_assets import jars, paths
from stream_assets.dev import processes
from stream_assets.dev.broker_config import (
    EVENT_HUBS_USER,
    escape_property,
    jaas_quote,
    logging_problem,
    random_cluster_id,
    server_properties,
    write_private,
)
from stream_assets.dev.ports import accepts, bindable
from stream_assets.dev.processes import cmdline, log_tail, popen, send_signal
from stream_assets.errors import KafkaUnavailable, StreamAssetsError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

BOOTSTRAP_ENV = "STREAM_ASSETS_KAFKA_BOOTSTRAP"
DEFAULT_PORT = 9092
CONTROLLER_PORT_OFFSET = 1000
DEFAULT_TOPICS: tuple[str, ...] = ("events", "impressions", "clicks")
LOCAL_HOSTS = ("127.0.0.1", "localhost")

JVM_OPTIONS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# The storage formatter is a short-lived JVM: a small heap starts faster.
TOOL_JVM_OPTIONS: tuple[str, ...] = ("-Xms64m", "-Xmx256m", "-Djava.awt.headless=true")

_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_LOG_TAIL_LINES = 40

# librdkafka writes connection failures straight to stderr unless given a logger; the CLI's
# `kafka status` against a stopped broker must not print "Connection refused" noise.
_client_log = logging.getLogger("stream_assets.dev.kafka_broker.client")
_client_log.addHandler(logging.NullHandler())
_client_log.propagate = False
log = logging.getLogger(__name__)

# Brokers this Python process started: kept so they can be reaped. Without waitpid a stopped
# child stays a zombie and still "exists" for os.kill(pid, 0).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class BrokerStatus:
    """What `status()` found. `pid` is None when no broker of ours runs (or a foreign one does)."""

    running: bool
    pid: int | None
    bootstrap: str
    detail: str


def default_port() -> int:
    """The port of $STREAM_ASSETS_KAFKA_BOOTSTRAP when it names this machine, else 9092.

    A remote bootstrap is not ours to start, so the local broker then keeps the default port.
    """
    first = (os.environ.get(BOOTSTRAP_ENV) or "").split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if sep and host.strip("[]") in LOCAL_HOSTS and port.isdigit():
        return int(port)
    return DEFAULT_PORT


class LocalBroker:
    """One single-node KRaft broker (combined broker + controller) living below `home`."""

    def __init__(
        self,
        home: Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        host: str = "127.0.0.1",
        sasl_port: int | None = None,
        sasl_password: str | None = None,
    ) -> None:
        if host not in LOCAL_HOSTS:
            raise StreamAssetsError(
                f"the local broker binds to this machine only; host must be 127.0.0.1, not {host!r}"
            )
        if (sasl_port is None) != (sasl_password is None):
            raise StreamAssetsError(
                "the SASL listener needs both sasl_port and sasl_password (or neither)"
            )
        if sasl_password is not None and (
            not sasl_password or "\n" in sasl_password or "\r" in sasl_password
        ):
            raise StreamAssetsError("sasl_password must be a non-empty single line")
        # Absolute: the path is matched against the java command line to recognise our broker.
        self.home = (Path(home) if home is not None else paths.kafka_dir()).resolve()
        # Always the IPv4 loopback: "localhost" may resolve to ::1 first, where nothing listens.
        self.host = "127.0.0.1"
        self.port = port if port is not None else default_port()
        self.controller_port = (
            controller_port if controller_port is not None else _offset_port(self.port)
        )
        self.sasl_port = sasl_port
        self._sasl_password = sasl_password
        ports = [p for p in (self.port, self.controller_port, self.sasl_port) if p is not None]
        if len(set(ports)) != len(ports):
            raise StreamAssetsError(f"broker ports must differ, got {ports}")
        for p in ports:
            if not 0 < p < 65536:
                raise StreamAssetsError(f"invalid port {p}")

    def __repr__(self) -> str:  # never shows the SASL password
        sasl = f", sasl_port={self.sasl_port}" if self.sasl_port else ""
        return f"LocalBroker(home={str(self.home)!r}, port={self.port}{sasl})"

    # -- addresses and files ------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        return f"{self.host}:{self.sasl_port}" if self.sasl_port is not None else None

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def pid_path(self) -> Path:
        return self.home / "broker.pid"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def log_path(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_path(self) -> Path:
        return self.logs_dir / "broker.out"

    def client_config(self) -> dict[str, object]:
        """confluent-kafka settings for the plaintext listener (admin, producers, consumers)."""
        return {
            "bootstrap.servers": self.bootstrap,
            "broker.address.family": "v4",
            "logger": _client_log,
        }

    def sasl_client_config(self) -> dict[str, object]:
        """confluent-kafka settings for the Event Hubs-style SASL listener. Holds the secret."""
        if self.sasl_bootstrap is None or self._sasl_password is None:
            raise StreamAssetsError(
                "this broker has no SASL listener (pass sasl_port and sasl_password)"
            )
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "broker.address.family": "v4",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": EVENT_HUBS_USER,
            "sasl.password": self._sasl_password,
            "logger": _client_log,
        }

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout_s: float = 90) -> BrokerStatus:
        """Start the broker, or reuse one that already answers; returns once it answers.

        Raises KafkaUnavailable with the tail of the broker log when it does not come up (the
        half-started process is killed), and when a port is taken by something else.
        MissingJars propagates: nothing is downloaded here.
        """
        with self._lock():
            pid = self._our_pid()
            if pid is not None:
                running_config = self.config_path.read_text() if self.config_path.exists() else ""
                if running_config != self._config_text():
                    raise KafkaUnavailable(
                        f"a broker from {self.home} already runs (pid {pid}) with other settings "
                        f"(ports or SASL listener); stop it first ('stream-assets kafka stop') "
                        "or use another home"
                    )
                # Ours and maybe still starting (another process launched it): wait for it.
                return self._wait_until_ready(pid, timeout_s, started_here=False)
            self._remove_pid_file()
            if self._answers(self.bootstrap, timeout_s=3.0):
                # Not started from this home (Docker, another checkout, the demo's default
                # home): reusing beats failing, as long as every listener we need is there.
                if self.sasl_port is not None and not accepts(self.host, self.sasl_port):
                    raise KafkaUnavailable(
                        f"a Kafka broker not started from {self.home} answers at {self.bootstrap} "
                        f"but nothing listens on the SASL port {self.sasl_port}; stop that broker "
                        "or choose other ports"
                    )
                return BrokerStatus(True, None, self.bootstrap, self._foreign_detail())
            self._check_ports_free()
            classpath = self._classpath()
            java = _java()
            self._prepare_files()
            self._format_storage(java, classpath)
            proc = self._launch(java, classpath)
            return self._wait_until_ready(proc.pid, timeout_s, started_here=True)

    def stop(self, timeout_s: float = 60) -> BrokerStatus:
        """Stop our broker: SIGTERM (Kafka's clean shutdown), SIGKILL only after `timeout_s`.

        Idempotent; removes the pid file. A broker this home did not start is left alone.
        """
        with self._lock():
            pid = self._our_pid()
            if pid is None:
                self._remove_pid_file()
                return self._status_without_pid()
            bootstrap = self._running_bootstrap() or self.bootstrap
            send_signal(pid, signal.SIGTERM)
            if not _wait_dead(pid, timeout_s):
                log.warning(
                    "Kafka broker pid %s ignored SIGTERM for %.0f s; killing it", pid, timeout_s
                )
                send_signal(pid, signal.SIGKILL)
                _wait_dead(pid, 10)
            self._remove_pid_file()
            return BrokerStatus(False, None, bootstrap, f"stopped (was pid {pid})")

    def status(self) -> BrokerStatus:
        """Whether a broker answers at `bootstrap`, and whether it is the one from this home.

        Read-only: a stale pid file is reported, and removed by the next start or stop.
        """
        pid = self._our_pid()
        if pid is None:
            return self._status_without_pid()
        bootstrap = self._running_bootstrap() or self.bootstrap
        if self._answers(bootstrap, timeout_s=5.0):
            return BrokerStatus(True, pid, bootstrap, f"running (pid {pid}); logs: {self.log_path}")
        return BrokerStatus(
            False, pid, bootstrap,
            f"process {pid} is alive but does not answer at {bootstrap} yet (starting, stopping "
            f"or stuck); see {self.log_path}",
        )

    # -- topics -------------------------------------------------------------------------------

    def create_topics(
        self,
        topics: Iterable[str],
        partitions: int = 3,
        config: dict[str, str] | None = None,
        timeout_s: float = 30,
    ) -> None:
        """Create topics (replication factor 1); existing ones are left as they are.

        Returns once every topic has a leader for each partition, so a producer that starts
        right after does not hit UNKNOWN_TOPIC_OR_PARTITION.
        """
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        names = sorted(set(topics))
        if not names:
            return
        admin = self._admin()
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=1, config=config or {})
             for t in names],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for topic, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise self._client_error(f"could not create topic {topic!r}", error) from None
        self._wait_for_topics(admin, names, present=True, timeout_s=timeout_s)

    def delete_topics(self, topics: Iterable[str], timeout_s: float = 30) -> None:
        """Delete topics; missing ones are fine. Returns once they are gone from metadata."""
        from confluent_kafka import KafkaError, KafkaException

        names = sorted(set(topics))
        if not names:
            return
        admin = self._admin()
        futures = admin.delete_topics(names, operation_timeout=timeout_s, request_timeout=timeout_s)
        for topic, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise self._client_error(f"could not delete topic {topic!r}", error) from None
        self._wait_for_topics(admin, names, present=False, timeout_s=timeout_s)

    # -- internals: processes -----------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One start/stop at a time per home, across processes (CLI, Dagster, pytest)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "broker.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _our_pid(self) -> int | None:
        """The pid of the live broker process of this home, from the pid file or /proc.

        The pid file alone is not trusted: after a SIGKILL or reboot its pid may belong to an
        unrelated process, so the command line must name kafka.Kafka and this home's config.
        """
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and _alive(pid) and self._is_our_broker(pid):
            return pid
        # Pid file lost (deleted by hand, or a crash between launch and writing it).
        proc = Path("/proc")
        if proc.is_dir():
            for entry in proc.iterdir():
                if entry.name.isdigit() and int(entry.name) != pid:
                    candidate = int(entry.name)
                    if self._is_our_broker(candidate) and _alive(candidate):
                        return candidate
        return None

    def _is_our_broker(self, pid: int) -> bool:
        args = cmdline(pid)
        return _MAIN_CLASS in args and str(self.config_path) in args

    def _remove_pid_file(self) -> None:
        self.pid_path.unlink(missing_ok=True)

    def _classpath(self) -> str:
        found = jars.jars("kafka")  # MissingJars names the setup command
        problem = logging_problem(found)
        if problem:
            log.warning("%s", problem)
        folders = sorted({str(p.parent) for p in found})
        return os.pathsep.join(f"{folder}/*" for folder in folders)

    def _java_command(self, java: str, classpath: str, options: Iterable[str]) -> list[str]:
        return [
            java,
            *options,
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.xml'}",
            "-cp",
            classpath,
        ]

    def _prepare_files(self) -> None:
        for folder in (self.data_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        log_config = resources.files("stream_assets.dev").joinpath("broker-log4j2.xml").read_text()
        (self.home / "log4j2.xml").write_text(log_config)
        write_private(self.config_path, self._config_text())

    def _format_storage(self, java: str, classpath: str) -> None:
        """Format the KRaft log dir once; later starts find meta.properties and skip this."""
        if (self.data_dir / "meta.properties").exists():
            return
        command = [
            *self._java_command(java, classpath, TOOL_JVM_OPTIONS),
            _STORAGE_TOOL, "format",
            "--cluster-id", random_cluster_id(),
            "--config", str(self.config_path),
            "--ignore-formatted",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            output = self._redact((result.stdout + result.stderr)[-3000:])
            raise KafkaUnavailable(
                f"formatting the Kafka storage in {self.data_dir} failed (exit "
                f"{result.returncode}):\n{output}\nDelete {self.data_dir} to start from scratch."
            )

    def _launch(self, java: str, classpath: str) -> subprocess.Popen[bytes]:
        command = [
            *self._java_command(java, classpath, JVM_OPTIONS), _MAIN_CLASS, str(self.config_path)
        ]
        with open(self.stdout_path, "ab") as out:
            # Own session: Ctrl-C in the terminal that ran `kafka start`, or the end of the
            # pytest/Dagster process, must not take the broker down with it.
            proc = popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
                close_fds=True,
            )
        _CHILDREN[proc.pid] = proc
        self.pid_path.write_text(f"{proc.pid}\n")
        return proc

    def _wait_until_ready(self, pid: int, timeout_s: float, *, started_here: bool) -> BrokerStatus:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                self._remove_pid_file()
                raise KafkaUnavailable(
                    f"the Kafka broker (pid {pid}) exited during startup; "
                    + self._log_hint()
                )
            if self._answers(self.bootstrap, timeout_s=2.0) and (
                self.sasl_port is None or accepts(self.host, self.sasl_port)
            ):
                how = "started" if started_here else "already running"
                return BrokerStatus(
                    True, pid, self.bootstrap, f"{how} (pid {pid}); logs: {self.log_path}"
                )
            time.sleep(0.25)
        # Half started: do not leave a process behind that holds the ports and the data dir.
        send_signal(pid, signal.SIGTERM)
        if not _wait_dead(pid, 15):
            send_signal(pid, signal.SIGKILL)
            _wait_dead(pid, 10)
        self._remove_pid_file()
        raise KafkaUnavailable(
            f"the Kafka broker did not answer at {self.bootstrap} within {timeout_s:g} s and was "
            f"stopped; " + self._log_hint() + " (if it was recovering a large log, retry with a "
            "longer timeout)"
        )

    # -- internals: checks ----------------------------------------------------------------------

    def _answers(self, bootstrap: str, timeout_s: float) -> bool:
        """A Kafka broker answers a metadata request at `bootstrap` (not just an open port)."""
        host, _, port = bootstrap.rpartition(":")
        if not accepts(host, int(port)):
            return False  # cheap, and spares librdkafka's connection-refused retries
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "logger": _client_log,
            "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
        })
        try:
            metadata = admin.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return bool(metadata.brokers)

    def _check_ports_free(self) -> None:
        names = {self.port: "client", self.controller_port: "controller"}
        if self.sasl_port is not None:
            names[self.sasl_port] = "SASL"
        for port, role in names.items():
            if not bindable(self.host, port):
                raise KafkaUnavailable(
                    f"cannot start the Kafka broker: {self.host}:{port} ({role} port) is in use "
                    "by another program that is not a Kafka broker from "
                    f"{self.home}. Stop that program, or pick other ports (for example "
                    f"{BOOTSTRAP_ENV}=127.0.0.1:19092; the controller uses port + "
                    f"{CONTROLLER_PORT_OFFSET})."
                )

    def _status_without_pid(self) -> BrokerStatus:
        if self.pid_path.exists():
            note = f"not running (stale pid file {self.pid_path} from a killed broker)"
        else:
            note = "not running"
        if self._answers(self.bootstrap, timeout_s=3.0):
            return BrokerStatus(True, None, self.bootstrap, self._foreign_detail())
        return BrokerStatus(False, None, self.bootstrap, note)

    def _foreign_detail(self) -> str:
        return (
            f"a Kafka broker answers at {self.bootstrap} but was not started from {self.home}; "
            "it is used as is and 'stop' leaves it alone"
        )

    def _running_bootstrap(self) -> str | None:
        """The client address in the config the running broker was started with."""
        try:
            for line in self.config_path.read_text().splitlines():
                if line.startswith("advertised.listeners="):
                    for listener in line.partition("=")[2].split(","):
                        if listener.startswith("PLAINTEXT://"):
                            return listener.removeprefix("PLAINTEXT://")
        except OSError:
            pass
        return None

    def _log_hint(self) -> str:
        parts = []
        for path in (self.log_path, self.stdout_path):
            tail = log_tail(path, _LOG_TAIL_LINES)
            if tail.strip():
                parts.append(f"--- last lines of {path} ---\n{self._redact(tail)}")
        body = "\n".join(parts) if parts else f"(no log output in {self.logs_dir})"
        with contextlib.suppress(StreamAssetsError):
            problem = logging_problem(jars.jars("kafka"))
            if problem:
                body += f"\n{problem}"
        return f"see {self.log_path}\n{body}"

    def _redact(self, text: str) -> str:
        """Log lines shown in errors must never carry the SASL password, in any spelling."""
        if self._sasl_password:
            for spelling in {self._sasl_password, jaas_quote(self._sasl_password),
                             escape_property(self._sasl_password)}:
                text = text.replace(spelling, "***")
        return text

    def _admin(self) -> AdminClient:
        from confluent_kafka.admin import AdminClient

        if not self._answers(self.bootstrap, timeout_s=5.0):
            raise KafkaUnavailable(
                f"no Kafka broker answers at {self.bootstrap}; start it with "
                "'stream-assets kafka start'"
            )
        return AdminClient(self.client_config())

    def _client_error(self, what: str, error: object) -> KafkaUnavailable:
        reason = error.str() if hasattr(error, "str") else str(error)
        return KafkaUnavailable(f"{what} on {self.bootstrap}: {reason}")

    def _wait_for_topics(
        self, admin: AdminClient, names: list[str], *, present: bool, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            metadata = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
            if present:
                pending = [
                    t for t in names
                    if t not in metadata.topics
                    or metadata.topics[t].error is not None
                    or not metadata.topics[t].partitions
                    or any(p.leader < 0 for p in metadata.topics[t].partitions.values())
                ]
            else:
                pending = [t for t in names if t in metadata.topics]
            if not pending:
                return
            if time.monotonic() >= deadline:
                state = "ready" if present else "deleted"
                raise KafkaUnavailable(
                    f"topic(s) {', '.join(pending)} not {state} on {self.bootstrap} after "
                    f"{timeout_s:g} s; see {self.log_path}"
                )
            time.sleep(0.2)


    def _config_text(self) -> str:
        """server.properties; deterministic, so a running broker's settings can be compared."""
        return server_properties(self.host, self.port, self.controller_port, self.data_dir,
                                 self.sasl_port, self._sasl_password)


# -- helpers ------------------------------------------------------------------------------------


def _offset_port(port: int) -> int:
    candidate = port + CONTROLLER_PORT_OFFSET
    return candidate if candidate < 65536 else port - CONTROLLER_PORT_OFFSET


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidates = [Path(java_home) / "bin" / "java"] if java_home else []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise KafkaUnavailable(
            "no 'java' on PATH (and JAVA_HOME unset); the local Kafka broker needs Java 17+, "
            "for example 'apt-get install openjdk-17-jre-headless'"
        )
    return found


def _alive(pid: int) -> bool:
    """Whether the broker process lives; one this process started is reaped when it ended."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    return processes.alive(pid)


def _wait_dead(pid: int, timeout_s: float) -> bool:
    return processes.wait_dead(pid, timeout_s, _alive)
