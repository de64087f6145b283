"""Deterministic demo data: events (with labelled bad records), impressions and clicks.

The same generator serves the demo, the tests and the benchmarks. Every record carries what
it is (`kind`) and, for good events, the JSON object it encodes, so a test can compute the
expected tables in plain Python without trusting the code under test.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from stream_assets import schemas

GOOD = "good"
# Each kind of bad record the pipeline must dead-letter, with a generator of its bytes.
BAD_KINDS = (
    "invalid_json",
    "not_object",
    "missing_event_id",
    "missing_timestamp",
    "bad_timestamp",
    "wrong_type",
    "empty",
    "null",
    "not_utf8",
)
EVENT_TYPES = ("page_view", "click", "purchase", "signup", "search")
PAGES = ("/home", "/search", "/product", "/cart", "/checkout")
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """One Kafka message to produce, and what the pipeline must make of it."""

    topic: str
    key: bytes | None
    value: bytes | None
    kind: str = GOOD
    event: dict | None = field(default=None, compare=False)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_event(
    rng: random.Random, event_id: str, ts: datetime, users: int, event_types=EVENT_TYPES
) -> dict:
    duration = f"{rng.uniform(0.5, 120):.1f}" if rng.random() > 0.05 else "n/a"
    return {
        "event_id": event_id,
        "event_type": rng.choice(event_types),
        "user_id": f"user-{rng.randrange(users)}",
        "timestamp": iso(ts),
        "properties": {"page": rng.choice(PAGES), "duration": duration},
    }


def bad_value(kind: str, rng: random.Random, event: dict) -> bytes | None:
    """The bytes of one bad record of the given kind, built from a good event."""
    broken = dict(event)
    if kind == "invalid_json":
        return json.dumps(event).encode()[: rng.randrange(5, 30)]
    if kind == "not_object":
        return rng.choice([b"[1, 2, 3]", b'"just a string"', b"42", b"null", b"true"])
    if kind == "missing_event_id":
        broken.pop("event_id")
    elif kind == "missing_timestamp":
        broken.pop("timestamp")
    elif kind == "bad_timestamp":
        broken["timestamp"] = rng.choice(["yesterday", "2026-13-45T99:00:00Z", "", "12/31/2026"])
    elif kind == "wrong_type":
        field_name = rng.choice(["event_id", "user_id", "timestamp", "properties"])
        broken[field_name] = {"properties": [1, 2]}.get(field_name, 12345)
    elif kind == "empty":
        return b""
    elif kind == "null":
        return None
    elif kind == "not_utf8":
        return b'{"event_id": "\xff\xfe", "timestamp": "' + event["timestamp"].encode() + b'"}'
    else:
        raise ValueError(f"unknown bad record kind {kind!r}; one of {BAD_KINDS}")
    return json.dumps(broken).encode()


def generate_events(
    count: int,
    *,
    bad_ratio: float = 0.0,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    spacing: timedelta = timedelta(seconds=1),
    users: int = 50,
    jitter: timedelta = timedelta(seconds=30),
    id_prefix: str | None = None,
    topic: str = schemas.EVENT_TOPIC,
    bad_kinds: tuple[str, ...] = BAD_KINDS,
) -> Iterator[Record]:
    """`count` records on `topic`; about `bad_ratio` of them bad, cycling through `bad_kinds`.

    Event times advance by `spacing` with up to `jitter` of disorder, so windows see
    out-of-order events within the watermark.
    """
    rng = random.Random(seed)
    prefix = id_prefix or f"evt-{seed}"
    bad_seen = 0
    for i in range(count):
        offset = spacing * i + timedelta(seconds=rng.uniform(-1, 1) * jitter.total_seconds())
        event = make_event(rng, f"{prefix}-{i:09d}", start + offset, users)
        key = event["user_id"].encode()
        if bad_ratio > 0 and rng.random() < bad_ratio:
            kind = bad_kinds[bad_seen % len(bad_kinds)]
            bad_seen += 1
            yield Record(topic, key, bad_value(kind, rng, event), kind)
        else:
            yield Record(topic, key, json.dumps(event, separators=(",", ":")).encode(), GOOD, event)


def generate_ad_traffic(
    impressions: int,
    *,
    click_ratio: float = 0.3,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    spacing: timedelta = timedelta(seconds=2),
    late_click_ratio: float = 0.1,
    users: int = 50,
) -> Iterator[Record]:
    """Impressions and their clicks; some clicks come after the 30-minute join bound."""
    rng = random.Random(seed)
    for i in range(impressions):
        ts = start + spacing * i
        imp = {
            "impression_id": f"imp-{seed}-{i:08d}",
            "ad_id": f"ad-{rng.randrange(20)}",
            "user_id": f"user-{rng.randrange(users)}",
            "timestamp": iso(ts),
        }
        yield Record(schemas.IMPRESSION_TOPIC, imp["user_id"].encode(),
                     json.dumps(imp).encode(), GOOD, imp)
        if rng.random() < click_ratio:
            late = rng.random() < late_click_ratio
            delay = timedelta(minutes=rng.uniform(31, 40)) if late else timedelta(
                seconds=rng.uniform(1, 29 * 60))
            click = {
                "click_id": f"clk-{seed}-{i:08d}",
                "impression_id": imp["impression_id"],
                "timestamp": iso(ts + delay),
            }
            yield Record(schemas.CLICK_TOPIC, imp["user_id"].encode(),
                         json.dumps(click).encode(), GOOD, click)
