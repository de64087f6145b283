"""A loopback TCP relay that can be taken down and brought back on the same port.

It stands in front of a server whose state must survive an outage (the test S3 server keeps its
objects in memory, stream_assets/dev/s3_server.py): while the relay is down, clients get
"connection refused" for new connections and a reset on open ones, exactly as if the server had
stopped, yet the server behind it keeps everything. Threads, not asyncio: the relay lives in the
pytest process next to a blocking Spark driver, and a test moves a few megabytes at most.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

from stream_assets.errors import StreamAssetsError

_ACCEPT_POLL_S = 0.1
_CHUNK = 256 * 1024


class TcpRelay:
    """Forwards `host:port` to `target_host:target_port` while up."""

    def __init__(self, port: int, target_port: int, host: str = "127.0.0.1",
                 target_host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.target = (target_host, target_port)
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        """Listen on the port again (idempotent). Raises if something else took the port."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # The previous listener's connections sit in TIME_WAIT on this port; they must not
            # keep the relay from coming back where the clients expect it.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((self.host, self.port))
            except OSError as exc:
                listener.close()
                raise StreamAssetsError(
                    f"the relay cannot listen on {self.host}:{self.port} ({exc}); another "
                    "process took the port while the relay was down"
                ) from None
            listener.listen(128)
            listener.settimeout(_ACCEPT_POLL_S)
            self._stopping.clear()
            self._listener = listener
            self._acceptor = threading.Thread(
                target=self._accept_loop, args=(listener,), name=f"tcp-relay-{self.port}",
                daemon=True,
            )
            self._acceptor.start()

    def down(self) -> None:
        """Stop listening and reset every open connection (idempotent)."""
        with self._lock:
            listener, acceptor = self._listener, self._acceptor
            self._listener = self._acceptor = None
            self._stopping.set()
            if listener is not None:
                listener.close()
            for sock in list(self._open):
                _reset(sock)
            self._open.clear()
        if acceptor is not None:
            acceptor.join(timeout=5)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by down()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if self._stopping.is_set():
                    _reset(client)
                    _reset(upstream)
                    return
                self._open.update((client, upstream))
            pair = _Pair(client, upstream, self._forget)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=pair.pump, args=(src, dst), daemon=True).start()

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(socks)


class _Pair:
    """One relayed connection: two pumps; the sockets close when both directions are done."""

    def __init__(self, client: socket.socket, upstream: socket.socket,
                 forget: Callable[..., None]) -> None:
        self.socks = (client, upstream)
        self._forget = forget
        self._lock = threading.Lock()
        self._running = 2

    def pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
            # Half-close: an HTTP client may still read the response after sending everything.
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            # One side failed (or down() reset it): the other side must see a failure too.
            for sock in self.socks:
                _reset(sock)
        finally:
            with self._lock:
                self._running -= 1
                done = self._running == 0
            if done:
                for sock in self.socks:
                    with contextlib.suppress(OSError):
                        sock.close()
                self._forget(*self.socks)


def _reset(sock: socket.socket) -> None:
    """Abort a connection: the peer sees it break (reset or early end), as with a dead server.

    shutdown() first: a plain close() from another thread does not wake a pump blocked in
    recv() on that socket, and the kernel keeps the connection open until it returns.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
