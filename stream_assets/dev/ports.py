"""Loopback ports for the local services (broker, S3 server, Spark daemons, tests)."""

from __future__ import annotations

import socket
from collections.abc import Collection

HOST = "127.0.0.1"
# The demo broker's client and controller ports and Event Hubs' Kafka port: a temporary
# service never takes them, so a demo the user runs is never disturbed.
DEMO_PORTS = frozenset({9092, 9093, 10092})


def free_ports(count: int, avoid: Collection[int] = DEMO_PORTS) -> list[int]:
    """Distinct ports nothing listens on now (held open together so they cannot repeat)."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
            if port not in avoid:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts connections at host:port now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def bindable(host: str, port: int) -> bool:
    """Whether a server could bind host:port. SO_REUSEADDR like Java's server sockets, so a
    port left in TIME_WAIT by the previous server does not count as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
