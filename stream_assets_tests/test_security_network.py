"""Nothing the project starts on a developer machine listens beyond 127.0.0.1 by default.

The broker, the local Spark driver and the Dagster webserver have no authentication of their
own (the broker's SASL listener is a test emulation), so they must not be reachable from the
network: checked on the live sockets (/proc/net/tcp*) for what runs in the test session, and on
the commands that start the demo and the compose deployment for the webserver.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(),
                                reason="reads listening sockets from Linux's /proc/net")


def listening_addresses(port: int) -> set[ipaddress._BaseAddress]:
    """Local addresses of the sockets in LISTEN state on `port`, IPv4 and IPv6."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            address, port_hex = local.split(":")
            if int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            if family == socket.AF_INET:
                ip = ipaddress.ip_address(struct.pack("<I", struct.unpack(">I", raw)[0]))
            else:
                # Four little-endian 32-bit words.
                words = struct.unpack("<4I", raw)
                ip = ipaddress.ip_address(struct.pack(">4I", *words))
                if ip.ipv4_mapped:
                    ip = ip.ipv4_mapped
            found.add(ip)
    return found


@pytest.mark.integration
def test_local_broker_listens_on_loopback_only(kafka_broker):
    ports = [kafka_broker.port, kafka_broker.controller_port, kafka_broker.sasl_port]
    for port in ports:
        addresses = listening_addresses(port)
        assert addresses, f"nothing listens on broker port {port}"
        assert addresses <= LOOPBACK, f"broker port {port} listens on {addresses}"


def test_local_spark_driver_listens_on_loopback_only(spark):
    context = spark.sparkContext
    driver_port = int(context.getConf().get("spark.driver.port"))
    block_manager_port = context._jsc.sc().env().blockManager().blockManagerId().port()
    for port in (driver_port, block_manager_port):
        addresses = listening_addresses(port)
        assert addresses, f"nothing listens on Spark port {port}"
        assert addresses <= LOOPBACK, f"Spark port {port} listens on {addresses}"


def test_demo_webserver_binds_to_loopback_by_default():
    demo = (PROJECT_ROOT / "scripts" / "demo.sh").read_text()
    default = re.search(r'HOST="\$\{DAGSTER_HOST:-([^}]*)\}"', demo)
    assert default and default.group(1) == "127.0.0.1", "demo.sh must default to 127.0.0.1"
    # make demo runs `dg dev` (docs/components.md); it takes the same -h as `dagster dev`.
    assert re.search(r'(dg|dagster) dev .*-h "\$HOST"', demo), "dg dev must get -h $HOST"


def test_compose_publishes_ports_on_loopback_only():
    yaml = pytest.importorskip("yaml")
    compose_file = PROJECT_ROOT / "docker-compose.yml"
    if not compose_file.exists():
        pytest.skip("no docker-compose.yml")
    services = yaml.safe_load(compose_file.read_text()).get("services", {})
    published = []
    for name, service in services.items():
        for port in service.get("ports", []) or []:
            if isinstance(port, dict):
                published.append((name, port.get("host_ip")))
            else:
                # "host_ip:published:target" or "published:target": the short form must name
                # the host address.
                parts = str(port).split(":")
                published.append((name, parts[0] if len(parts) == 3 else None))
    assert published, "the compose file publishes no ports"
    wrong = [(name, ip) for name, ip in published if ip != "127.0.0.1"]
    assert not wrong, f"ports published beyond 127.0.0.1: {wrong}"
