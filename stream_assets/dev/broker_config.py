"""The local broker's files: its server.properties and how secrets and values go into them.

Pure text, apart from writing a private file: LocalBroker (kafka_broker.py) runs the process.
"""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

# Event Hubs' Kafka endpoint takes this literal user name; the password is the connection string.
EVENT_HUBS_USER = "$ConnectionString"
NODE_ID = 1


def server_properties(host: str, port: int, controller_port: int, data_dir: Path,
                      sasl_port: int | None = None, sasl_password: str | None = None) -> str:
    """server.properties; deterministic, so a running broker's settings can be compared."""
    listeners = [f"PLAINTEXT://{host}:{port}"]
    advertised = [f"PLAINTEXT://{host}:{port}"]
    if sasl_port is not None:
        listeners.append(f"SASL_PLAINTEXT://{host}:{sasl_port}")
        advertised.append(f"SASL_PLAINTEXT://{host}:{sasl_port}")
    listeners.append(f"CONTROLLER://{host}:{controller_port}")
    settings: list[tuple[str, str]] = [
        # KRaft, one combined node. Static voters (not --standalone's dynamic quorum): the
        # controller address then lives in this file, not in the metadata log, so changing
        # ports between runs keeps working.
        ("process.roles", "broker,controller"),
        ("node.id", str(NODE_ID)),
        ("controller.quorum.voters", f"{NODE_ID}@{host}:{controller_port}"),
        ("controller.listener.names", "CONTROLLER"),
        ("listeners", ",".join(listeners)),
        ("advertised.listeners", ",".join(advertised)),
        ("inter.broker.listener.name", "PLAINTEXT"),
        ("listener.security.protocol.map",
         "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"),
        ("log.dirs", str(data_dir)),
        # One node: every internal topic with one replica, or it is never created.
        ("default.replication.factor", "1"),
        ("min.insync.replicas", "1"),
        ("offsets.topic.replication.factor", "1"),
        ("offsets.topic.num.partitions", "5"),
        ("transaction.state.log.replication.factor", "1"),
        ("transaction.state.log.min.isr", "1"),
        ("transaction.state.log.num.partitions", "5"),
        ("share.coordinator.state.topic.replication.factor", "1"),
        ("share.coordinator.state.topic.min.isr", "1"),
        ("share.coordinator.state.topic.num.partitions", "5"),
        ("num.partitions", "3"),
        ("auto.create.topics.enable", "false"),
        ("delete.topic.enable", "true"),
        ("group.initial.rebalance.delay.ms", "0"),
        # Small shared box: fewer threads, smaller up-front buffers.
        ("num.network.threads", "2"),
        ("num.io.threads", "4"),
        ("num.recovery.threads.per.data.dir", "1"),
        ("log.cleaner.dedupe.buffer.size", str(32 * 1024 * 1024)),
    ]
    if sasl_port is not None and sasl_password is not None:
        settings += [
            ("listener.name.sasl_plaintext.sasl.enabled.mechanisms", "PLAIN"),
            # The only user: Event Hubs' literal `$ConnectionString`, password the string.
            ("listener.name.sasl_plaintext.plain.sasl.jaas.config",
             "org.apache.kafka.common.security.plain.PlainLoginModule required "
             f"user_{EVENT_HUBS_USER}={jaas_quote(sasl_password)};"),
        ]
    lines = ["# Written by stream_assets.dev.kafka_broker at every start; edits are lost."]
    lines += [f"{key}={escape_property(value)}" for key, value in settings]
    return "\n".join(lines) + "\n"


def random_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: 16 random bytes, URL-safe base64, no padding.

    Like Kafka's Uuid.randomUuid, never one starting with "-": the storage tool's argument
    parser would take it for an option and refuse to format (one start in 64).
    """
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


def jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes; Kafka's JaasConfig tokenizer unescapes \\ and \"."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def escape_property(value: str) -> str:
    """Escape a value for java.util.Properties (read as ISO-8859-1, backslash escapes)."""
    out = []
    for i, ch in enumerate(value):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[ch])
        elif i == 0 and ch in " #!":
            out.append("\\" + ch)
        elif code < 0x20 or code > 0x7E:
            encoded = ch.encode("utf-16-be")
            for j in range(0, len(encoded), 2):
                out.append(f"\\u{int.from_bytes(encoded[j:j + 2], 'big'):04x}")
        else:
            out.append(ch)
    return "".join(out)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, without a moment where it is world-readable."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="latin-1") as handle:
        handle.write(text)
    os.replace(tmp, path)
    os.chmod(path, 0o600)  # O_CREAT's mode is filtered by the umask; be explicit


def logging_problem(found: list[Path]) -> str | None:
    """Kafka logs through SLF4J 1.7; a binding for the other SLF4J generation is silently
    ignored and the broker then runs with no log at all, so say so where the user looks."""
    names = [p.name for p in found]
    api_1 = any(n.startswith("slf4j-api-1.") for n in names)
    api_2 = any(n.startswith("slf4j-api-2.") for n in names)
    binding_1 = any(n.startswith(("log4j-slf4j-impl-", "slf4j-reload4j-")) for n in names)
    binding_2 = any(n.startswith("log4j-slf4j2-impl-") for n in names)
    if (api_1 and binding_1) or (api_2 and binding_2):
        return None
    return (
        "the Kafka broker will run without a log: its jars have no SLF4J binding that matches "
        f"their slf4j-api ({', '.join(n for n in names if 'slf4j' in n) or 'none'}). Declare "
        "org.slf4j:slf4j-api 2.0.x next to log4j-slf4j2-impl in jvm/kafka/pom.xml (or use "
        "log4j-slf4j-impl) and rerun 'stream-assets setup'."
    )
