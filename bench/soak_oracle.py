"""The soak's last word (issue 30): its derived tables against plain Python over what was sent.

After the continuous run, one record per topic a day ahead of the traffic closes every window,
session and join bound; a catch-up run of the tables (the product's own, through Dagster) then
writes what they close. The topics are read back from Kafka: each event record is matched, by
its bytes, to what the soak's producer generated from the same seed (which says whether it was
good), impressions and clicks are parsed by the reference's own parser. The reference is
stream_assets_tests/reference.py, written apart from the transforms; the tables are read back
with delta-rs. Nothing is late: the generator's 30 s of disorder is far inside every 10-minute
watermark (the tables' `rows_dropped_by_watermark` says so too).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

CLOSER_ID = "soak-closer"


@dataclass(frozen=True)
class Traffic:
    """What the soak's producers generate: the same arguments give the same records."""

    start: datetime
    rate: float
    seconds: float

    def events(self):
        from stream_assets.dev.generator import generate_events

        count = int(self.rate * self.seconds)
        return generate_events(count, bad_ratio=0.02, seed=30, start=self.start,
                               spacing=timedelta(seconds=1 / self.rate), users=1000,
                               id_prefix="soak")

    def ads(self):
        from stream_assets.dev.generator import generate_ad_traffic

        ad_rate = self.rate / 10
        return generate_ad_traffic(max(1, int(ad_rate * self.seconds)), seed=30,
                                   start=self.start, spacing=timedelta(seconds=1 / ad_rate),
                                   users=1000)


def closers(at: datetime) -> list:
    """One record per topic at `at`: past every watermark of the traffic before it."""
    from stream_assets import schemas
    from stream_assets.dev.generator import GOOD, Record, iso

    event = {"event_id": CLOSER_ID, "event_type": "closer", "user_id": CLOSER_ID,
             "timestamp": iso(at), "properties": {}}
    impression = {"impression_id": CLOSER_ID, "ad_id": "ad-closer", "user_id": CLOSER_ID,
                  "timestamp": iso(at)}
    click = {"click_id": CLOSER_ID, "impression_id": CLOSER_ID, "timestamp": iso(at)}
    return [Record(topic, b"closer", json.dumps(value).encode(), GOOD, value)
            for topic, value in ((schemas.EVENT_TOPIC, event),
                                 (schemas.IMPRESSION_TOPIC, impression),
                                 (schemas.CLICK_TOPIC, click))]


def topic_values(bootstrap: str, topic: str, timeout_s: float = 120) -> list[bytes | None]:
    """Every record value in `topic`, read from the beginning to the end it has now."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        values: list[bytes | None] = []
        reached = {p: end == 0 for p, end in ends.items()}
        deadline = time.monotonic() + timeout_s
        while not all(reached.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s:g} s")
            for message in consumer.consume(10_000, timeout=1):
                if message.error():
                    continue
                values.append(message.value())
                if message.offset() + 1 >= ends[message.partition()]:
                    reached[message.partition()] = True
        return values
    finally:
        consumer.close()


def _rows(lake, table: str, drop: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The table's rows by delta-rs, timestamps as naive UTC and maps as dicts, like the
    reference's (Arrow gives a map as a list of (key, value) pairs)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from stream_assets_tests import reference

    data = DeltaTable(lake.table_path(table)).to_pyarrow_table()
    maps = {f.name for f in data.schema if pa.types.is_map(f.type)}

    def plain(name: str, value: Any) -> Any:
        if isinstance(value, datetime):
            return reference.utc(value)
        if name in maps and value is not None:
            return dict(value)
        return value

    return [{k: plain(k, v) for k, v in row.items() if k not in drop}
            for row in data.to_pylist()]


def _verdict(check: Callable[[], None]) -> str:
    try:
        check()
    except AssertionError as exc:
        return "DIFFERS: " + str(exc).splitlines()[0]
    return "equal"


def compare(lake, bootstrap: str, traffic: Traffic, tables: Iterable[str], closed_at: datetime
            ) -> dict[str, str]:
    """Per derived table the soak ran: 'equal', or how it differs from the reference, after
    `closers(closed_at)` were sent and the tables caught up."""
    from stream_assets import schemas
    from stream_assets.dev.generator import GOOD
    from stream_assets.dev.users import generate_users
    from stream_assets.tables.dimensions import UserDimensionConfig
    from stream_assets_tests import reference

    wanted = set(tables)
    generated = {r.value: r for r in traffic.events()}
    events = [generated[value].event for value in topic_values(bootstrap, schemas.EVENT_TOPIC)
              if value in generated and generated[value].kind == GOOD]
    events += [c.event for c in closers(closed_at) if c.topic == schemas.EVENT_TOPIC]
    found: dict[str, str] = {}
    if "event_counts" in wanted:
        found["event_counts"] = _verdict(lambda: reference.assert_rows_equal(
            _rows(lake, "event_counts", ("updated_at",)), reference.event_counts(events)))
    if "event_duration_stats" in wanted:
        found["event_duration_stats"] = _verdict(lambda: reference.assert_rows_equal(
            _rows(lake, "event_duration_stats", ("updated_at",)),
            reference.event_duration_stats(events)))
    if "activity_sessions" in wanted:
        # Append mode: the closer's own session is still open.
        found["activity_sessions"] = _verdict(lambda: reference.assert_rows_equal(
            _rows(lake, "activity_sessions"),
            [r for r in reference.activity_sessions(events) if r["user_id"] != CLOSER_ID]))
    if "user_sessions" in wanted:
        # Not the id: on a live stream an event that arrives a batch late and earlier than its
        # session's start moves the start back and keeps the id (transforms/sessions.py), where
        # the reference derives the id from the final start.
        found["user_sessions"] = _verdict(lambda: reference.assert_rows_equal(
            _rows(lake, "user_sessions", ("session_id",)),
            [{k: v for k, v in row.items() if k != "session_id"}
             for row in reference.user_sessions(events)]))
    if "enriched_events" in wanted:
        users = generate_users(UserDimensionConfig().users)
        drop = ("topic", "partition", "offset", "ingested_at")
        found["enriched_events"] = _verdict(lambda: reference.assert_rows_equal(
            _rows(lake, "enriched_events", drop),
            [{k: v for k, v in row.items() if k not in drop}
             for row in reference.enriched_events(events, users)]))
    if "impression_clicks" in wanted:
        found["impression_clicks"] = _verdict(lambda: reference.assert_rows_equal(
            _rows(lake, "impression_clicks"), _impression_clicks(bootstrap)))
    return found


def _impression_clicks(bootstrap: str) -> list[dict[str, Any]]:
    """The reference join, impression by impression (it compares every pair: too slow whole)."""
    from stream_assets import schemas
    from stream_assets_tests import reference

    def parsed(topic: str, parse) -> list[dict[str, Any]]:
        return [row for row, _ in map(parse, topic_values(bootstrap, topic)) if row is not None]

    clicks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for click in parsed(schemas.CLICK_TOPIC, reference.parse_click):
        clicks[click["impression_id"]].append(click)
    rows: list[dict[str, Any]] = []
    for impression in parsed(schemas.IMPRESSION_TOPIC, reference.parse_impression):
        rows += reference.impression_clicks([impression],
                                            clicks.get(impression["impression_id"], []))
    return rows
