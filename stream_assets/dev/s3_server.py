"""An S3-compatible server on loopback for tests: moto's server mode behind a TCP relay.

No Docker and no download: moto (PyPI, the `dev` extra) runs as its own Python process on a
private port, and a relay (stream_assets/dev/tcp_relay.py) in this process listens on the port
clients use. Moto keeps its objects in memory, so stopping moto would lose the lake; an outage
is staged by taking the relay down instead: clients get "connection refused" (and a reset on
open connections) until it comes back on the same port, with every object still there.

    server = LocalS3Server(home=tmp)
    server.start()                      # moto up, relay up, `server.bucket` created
    server.endpoint_url                 # http://127.0.0.1:<port>
    with server.outage():               # refused while inside
        ...
    server.stop()

Clients: `lake(root)` (the project's `DeltaLake` resource, whose settings reach Spark's S3A and
pyarrow alike), `pyarrow_filesystem()` and `client()` (boto3). The credentials are test values:
moto accepts any.
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream_assets.dev.ports import DEMO_PORTS, free_ports
from stream_assets.dev.processes import popen
from stream_assets.dev.tcp_relay import TcpRelay
from stream_assets.errors import StreamAssetsError
from stream_assets.resources.lake import DeltaLake

if TYPE_CHECKING:
    from pyarrow.fs import S3FileSystem

DEFAULT_BUCKET = "lake"
DEFAULT_REGION = "us-east-1"
TEST_ACCESS_KEY_ID = "stream-assets-test"
TEST_SECRET_ACCESS_KEY = "stream-assets-test-secret"
HOST = "127.0.0.1"
_LOG_TAIL_CHARS = 3000

# S3A gives up within a second instead of minutes when the server is unreachable: one SDK
# attempt, one S3A retry 100 ms later. Hadoop 3.5's defaults (org.apache.hadoop.fs.s3a.Constants):
# 5 SDK retries (fs.s3a.attempts.maximum), then 7 S3A retries 500 ms apart with backoff
# (fs.s3a.retry.limit/interval), 20 for throttling. A refused connection fails at once, so the
# connect timeout stays at S3A's 15 s minimum (lower values are raised with a warning).
# Test settings, not production ones: a real store deserves the retries.
FAST_FAILING_S3A: dict[str, str] = {
    "fs.s3a.attempts.maximum": "0",
    "fs.s3a.retry.limit": "1",
    "fs.s3a.retry.interval": "100ms",
    "fs.s3a.retry.throttle.limit": "1",
    "fs.s3a.retry.throttle.interval": "100ms",
    "fs.s3a.connection.establish.timeout": "15s",
    "fs.s3a.connection.timeout": "30s",
}


class LocalS3Server:
    """moto's S3 on a private loopback port, reachable through a relay on `port`."""

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        bucket: str = DEFAULT_BUCKET,
        region: str = DEFAULT_REGION,
        access_key_id: str = TEST_ACCESS_KEY_ID,
        secret_access_key: str = TEST_SECRET_ACCESS_KEY,
    ) -> None:
        self.home = Path(home).resolve()
        self.port = port if port is not None else free_ports(1)[0]
        self.bucket = bucket
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self._moto_port: int | None = None
        self._moto: subprocess.Popen[bytes] | None = None
        self._relay: TcpRelay | None = None

    def __repr__(self) -> str:  # never shows the secret
        return f"LocalS3Server(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r})"

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "moto.log"

    @property
    def is_up(self) -> bool:
        """Whether clients can reach the server now (False during an outage)."""
        return self._relay is not None and self._relay.is_up

    def uri(self, *parts: str, scheme: str = "s3a") -> str:
        """`s3a://<bucket>/<parts...>`; scheme="s3" for delta-rs and boto-style clients."""
        path = "/".join(p.strip("/") for p in parts if p)
        return f"{scheme}://{self.bucket}/{path}" if path else f"{scheme}://{self.bucket}"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout_s: float = 30) -> None:
        """Start moto and the relay, then create the bucket. Idempotent while running."""
        if self._moto is not None and self._moto.poll() is None:
            self.resume()
            return
        try:
            import moto.server  # noqa: F401
        except ImportError:
            raise StreamAssetsError(
                "the test S3 server needs moto; install the dev extra: pip install -e '.[dev]'"
            ) from None
        self.home.mkdir(parents=True, exist_ok=True)
        self._moto_port = free_ports(1, avoid=DEMO_PORTS | {self.port})[0]
        with open(self.log_path, "ab") as out:
            # Not a new session: the server dies with the terminal or CI job that started it,
            # and its in-memory objects are worthless to anyone else.
            self._moto = popen(
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self._moto_port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.home,
                close_fds=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_for_moto(timeout_s)
            self._relay = TcpRelay(self.port, self._moto_port, host=HOST)
            self._relay.up()
            self.client().create_bucket(Bucket=self.bucket)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10) -> None:
        """Take the relay down and stop moto; its objects are gone. Idempotent."""
        if self._relay is not None:
            self._relay.down()
            self._relay = None
        proc, self._moto = self._moto, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        atexit.unregister(self.stop)

    def interrupt(self) -> None:
        """Make the server unreachable (refused, open connections reset); objects are kept."""
        self._running_relay().down()

    def resume(self) -> None:
        """Make the server reachable again on the same port, after `interrupt()`."""
        self._running_relay().up()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The server is unreachable inside the block and reachable again after it."""
        self.interrupt()
        try:
            yield
        finally:
            self.resume()

    # -- clients ------------------------------------------------------------------------------

    def lake(self, root: str, *, fail_fast: bool = True) -> DeltaLake:
        """The project's lake resource with its tables and checkpoints under `root` (an s3a://
        URI of this server), reaching it as a user's configuration would."""
        return DeltaLake(
            tables_root=f"{root}/tables",
            checkpoints_root=f"{root}/checkpoints",
            s3_endpoint=self.endpoint_url,
            s3_region=self.region,
            s3_path_style_access=True,
            s3_access_key_id=self.access_key_id,
            s3_secret_access_key=self.secret_access_key,
            hadoop_config=FAST_FAILING_S3A if fail_fast else {},
        )

    def pyarrow_filesystem(self) -> S3FileSystem:
        """The pyarrow file system the lake's files use on this server (lake_files.py); paths
        are `<bucket>/<key>`."""
        filesystem, _ = self.lake(self.uri()).files.resolve(self.uri())
        return filesystem

    def client(self) -> Any:
        """A boto3 S3 client on this server (boto3 comes with moto)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          connect_timeout=2, read_timeout=10),
        )

    # -- internals ----------------------------------------------------------------------------

    def _running_relay(self) -> TcpRelay:
        if self._relay is None:
            raise StreamAssetsError("the test S3 server is not started; call start() first")
        return self._relay

    def _wait_for_moto(self, timeout_s: float) -> None:
        assert self._moto is not None and self._moto_port is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._moto.poll() is not None:
                raise StreamAssetsError(
                    f"moto's server exited during startup (code {self._moto.returncode}); "
                    f"its log {self.log_path} ends with:\n{self._log_tail()}"
                )
            with contextlib.suppress(OSError), socket.create_connection(
                (HOST, self._moto_port), timeout=1
            ):
                return
            time.sleep(0.1)
        raise StreamAssetsError(
            f"moto's server did not listen on {HOST}:{self._moto_port} within {timeout_s:.0f} s; "
            f"its log {self.log_path} ends with:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        except OSError:
            return ""
