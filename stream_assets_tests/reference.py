"""Plain-Python reference for every derived table, to check the Spark transforms against.

Written from the tables' descriptions (README.md), not from stream_assets.transforms, and
importing nothing from it: a shared mistake would otherwise pass unnoticed. It is slow and
obvious on purpose.

Inputs are the good events as JSON-decoded dicts (event_id, event_type, user_id, timestamp as an
ISO-8601 string, properties dict; other keys such as topic or offset are carried along where a
table keeps them) and impressions/clicks as dicts or raw JSON. Outputs are lists of dicts keyed
by the table's columns, with timestamps as naive UTC datetimes, like rows read back from Delta.

Watermarks are not simulated. A caller who streams the input decides which events the watermark
drops and passes their ids as `late`; the reference then leaves them out.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

Row = dict[str, Any]

EPOCH = datetime(1970, 1, 1)
TUMBLING = timedelta(minutes=5)
SLIDING_SIZE, SLIDING_SLIDE = timedelta(minutes=10), timedelta(minutes=5)
ACTIVITY_GAP = timedelta(minutes=10)
USER_SESSION_GAP = timedelta(minutes=30)
CLICK_WINDOW = timedelta(minutes=30)
# The contract for user_sessions ids: uuid5(namespace, "<user_id>/<session start, epoch µs>").
SESSION_ID_NAMESPACE = uuid.UUID("5f0c2a9e-3b7d-5e51-9a0f-6c1d8e4b2a70")

# A numeric duration: sign, digits with optional fraction or a bare fraction, optional exponent,
# optional surrounding spaces/tabs/CR/LF; ASCII digits only. It must also be finite.
_NUMERIC = re.compile(r"[ \t\r\n]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\r\n]*")


def utc(value: str | datetime) -> datetime:
    """An ISO-8601 string or datetime as a naive UTC datetime (no offset means UTC)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def micros(moment: datetime) -> int:
    """Microseconds since the epoch of a naive UTC datetime."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def _floor(moment: datetime, size: timedelta) -> datetime:
    return EPOCH + ((moment - EPOCH) // size) * size


def _kept(events: Iterable[Mapping[str, Any]], late: Collection[str]) -> list[Mapping[str, Any]]:
    return [event for event in events if event["event_id"] not in late]


def event_counts(events: Iterable[Mapping[str, Any]], late: Collection[str] = ()) -> list[Row]:
    """event_counts without updated_at: events and distinct non-null users per 5-minute window."""
    groups: dict[tuple[datetime, str], list[Mapping[str, Any]]] = defaultdict(list)
    for event in _kept(events, late):
        groups[(_floor(utc(event["timestamp"]), TUMBLING), event["event_type"])].append(event)
    return [
        {
            "window_start": start,
            "window_end": start + TUMBLING,
            "event_type": event_type,
            "event_count": len(members),
            "unique_users": len({e["user_id"] for e in members if e["user_id"] is not None}),
        }
        for (start, event_type), members in groups.items()
    ]


def duration(properties: Mapping[str, str] | None) -> tuple[float | None, bool]:
    """(the numeric duration or None, whether a duration is present but not numeric)."""
    raw = (properties or {}).get("duration")
    if raw is None:
        return None, False
    if not _NUMERIC.fullmatch(raw):
        return None, True
    value = float(raw)
    return (value, False) if math.isfinite(value) else (None, True)


def event_duration_stats(
    events: Iterable[Mapping[str, Any]], late: Collection[str] = ()
) -> list[Row]:
    """10-minute windows every 5 minutes: avg numeric duration, events, invalid durations."""
    groups: dict[tuple[datetime, str], list[Mapping[str, Any]]] = defaultdict(list)
    for event in _kept(events, late):
        moment = utc(event["timestamp"])
        last_start = _floor(moment, SLIDING_SLIDE)
        start = last_start - SLIDING_SIZE + SLIDING_SLIDE
        while start <= last_start:
            if start <= moment < start + SLIDING_SIZE:
                groups[(start, event["event_type"])].append(event)
            start += SLIDING_SLIDE
    rows = []
    for (start, event_type), members in groups.items():
        parsed = [duration(e.get("properties")) for e in members]
        values = [value for value, _ in parsed if value is not None]
        rows.append(
            {
                "window_start": start,
                "window_end": start + SLIDING_SIZE,
                "event_type": event_type,
                "avg_duration": sum(values) / len(values) if values else None,
                "event_count": len(members),
                "invalid_durations": sum(1 for _, invalid in parsed if invalid),
            }
        )
    return rows


def _by_user(
    events: Iterable[Mapping[str, Any]], late: Collection[str]
) -> dict[str, list[Mapping[str, Any]]]:
    """Events with a user_id, per user, in (timestamp, event_id) order."""
    users: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for event in _kept(events, late):
        if event["user_id"] is not None:
            users[event["user_id"]].append(event)
    for members in users.values():
        members.sort(key=lambda e: (utc(e["timestamp"]), e["event_id"]))
    return users


def _split(members: list[Mapping[str, Any]], gap: timedelta) -> list[list[Mapping[str, Any]]]:
    """Sessions of time-ordered events: a pause longer than `gap` starts the next one."""
    sessions: list[list[Mapping[str, Any]]] = []
    for event in members:
        if sessions and utc(event["timestamp"]) - utc(sessions[-1][-1]["timestamp"]) <= gap:
            sessions[-1].append(event)
        else:
            sessions.append([event])
    return sessions


def activity_sessions(events: Iterable[Mapping[str, Any]], late: Collection[str] = ()) -> list[Row]:
    """Sessions with a 10-minute gap per user; first/last event by (timestamp, event_id)."""
    rows = []
    for user_id, members in _by_user(events, late).items():
        for session in _split(members, ACTIVITY_GAP):
            rows.append(
                {
                    "user_id": user_id,
                    "session_start": utc(session[0]["timestamp"]),
                    "session_end": utc(session[-1]["timestamp"]),
                    "events_in_session": len(session),
                    "first_event": session[0]["event_type"],
                    "last_event": session[-1]["event_type"],
                }
            )
    return rows


def session_id(user_id: str, session_start: datetime) -> str:
    return str(uuid.uuid5(SESSION_ID_NAMESPACE, f"{user_id}/{micros(session_start)}"))


def user_sessions(events: Iterable[Mapping[str, Any]], late: Collection[str] = ()) -> list[Row]:
    """Each user's latest session (30-minute gap), as the upserted table holds it at the end.

    Equals the streaming result when each micro-batch's events are not older than the
    previous batches' (the order inside a batch does not matter).
    """
    rows = []
    for user_id, members in _by_user(events, late).items():
        current = _split(members, USER_SESSION_GAP)[-1]
        start = utc(current[0]["timestamp"])
        rows.append(
            {
                "user_id": user_id,
                "session_id": session_id(user_id, start),
                "total_events": len(current),
                "session_start": start,
                "last_event_time": utc(current[-1]["timestamp"]),
            }
        )
    return rows


def enriched_events(
    events: Iterable[Mapping[str, Any]], users: Iterable[Mapping[str, Any]]
) -> list[Row]:
    """Each event (timestamp as datetime) with user_name, user_segment, registration_date."""
    by_id: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for user in users:
        by_id[user["user_id"]].append(user)
    empty = {"user_name": None, "user_segment": None, "registration_date": None}
    rows = []
    for event in events:
        base = {**event, "timestamp": utc(event["timestamp"])}
        matches = by_id.get(event["user_id"], []) if event["user_id"] is not None else []
        for user in matches or [empty]:
            rows.append({**base, **{column: user[column] for column in empty}})
    return rows


class _NotJson(ValueError):
    pass


class _Pairs(list):
    """A JSON object's (key, value) pairs in the record's order, duplicates kept."""


def _json_value(value: Any) -> Any:
    if isinstance(value, _Pairs):
        return {k: _json_value(v) for k, v in value}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _first_duplicate(value: Any) -> str | None:
    """The first key repeated in an object, in the record's order (at any depth)."""
    if isinstance(value, _Pairs):
        seen = set()
        for key, inner in value:
            if key in seen:
                return key
            seen.add(key)
            found = _first_duplicate(inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for inner in value:
            found = _first_duplicate(inner)
            if found is not None:
                return found
    return None


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")


def _no_lone_surrogate(value: Any) -> None:
    if isinstance(value, str):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise _NotJson("lone surrogate")
    elif isinstance(value, _Pairs):
        for key, part in value:
            _no_lone_surrogate(key)
            _no_lone_surrogate(part)
    elif isinstance(value, list):
        for part in value:
            _no_lone_surrogate(part)


def _strict_json(text: str) -> tuple[Any, str | None]:
    """(the whole text as RFC 8259 JSON, None) or (None, why it is not): Python's json
    without what it allows beyond the RFC (NaN and Infinity, lone surrogate escapes); a
    repeated key is `duplicate key: <key>` (docs/guarantees.md)."""
    try:
        data = json.loads(text, object_pairs_hook=_Pairs, parse_constant=_refuse_constant)
        _no_lone_surrogate(data)
    except (ValueError, RecursionError):
        return None, "invalid JSON"
    duplicate = _first_duplicate(data)
    if duplicate is not None:
        return None, f"duplicate key: {duplicate}"
    return _json_value(data), None


# ISO-8601 as JSON producers write it (stream_assets/records/json_records.py): a date, then
# optionally 'T' or a space and hh:mm[:ss[.fraction]], then optionally Z or an offset. ASCII
# digits only; no offset means UTC; a date alone is its midnight.
_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
                  r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?)?"
                  r"(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?")


OUT_OF_RANGE = "out of range"


def iso_instant(text: str) -> datetime | str | None:
    """The instant of ISO-8601 text as a naive UTC datetime (microseconds kept, further digits
    cut), None when it is not one, OUT_OF_RANGE when its offset moves it out of years 1-9999
    (0001-01-01T00:00:00+01:00): such an instant is ISO-8601, but no Python or Delta reader
    holds it."""
    m = _ISO.fullmatch(text)
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    if hour is None and zone is not None:
        return None
    try:
        local = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                         int(second or 0), int(((fraction or "") + "000000")[:6]))
    except ValueError:
        return None
    offset = timedelta(0)
    if zone and zone not in "Zz":
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 18 or minutes > 59 or (hours == 18 and minutes):
            return None
        offset = (1 if zone[0] == "+" else -1) * timedelta(hours=hours, minutes=minutes)
    try:
        return local - offset
    except OverflowError:
        return OUT_OF_RANGE


TIMESTAMP_RANGE = "timestamp out of range (years 0001-9999)"


def _parse_record(
    raw: bytes | str | None, fields: Sequence[str], required: Sequence[str], time_column: str
) -> tuple[Row | None, str | None]:
    """The contract of impressions and clicks: the record's checks in order, the first that
    fails is the reason. `fields` are the string fields in the declared order (timestamp
    last), `required` those that must be present and not empty."""
    if raw is None:
        return None, "null value (tombstone)"
    if len(raw) == 0:
        return None, "empty value"
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "value is not valid UTF-8"
    data, not_json = _strict_json(raw)
    if not_json:
        return None, not_json
    if not isinstance(data, dict):
        return None, "not a JSON object"
    # The declared fields in order: JSON null is a missing value.
    for name in fields:
        value = data.get(name)
        if value is None:
            if name in required:
                return None, f"missing {name}"
        elif not isinstance(value, str):
            return None, f"wrong type: {name} must be a string"
    stamp = data.get("timestamp")
    if stamp is None:
        return None, "missing timestamp"
    moment = iso_instant(stamp) if isinstance(stamp, str) else None
    if moment is None:
        return None, "wrong type: timestamp must be an ISO-8601 timestamp"
    # Then the declared rules: an empty id is as useless as none; the years readers can hold.
    for name in required:
        if data[name] == "":
            return None, f"missing {name}"
    if moment == OUT_OF_RANGE:
        return None, TIMESTAMP_RANGE
    row = {name: data.get(name) for name in fields}
    row[time_column] = moment
    return row, None


def parse_impression(raw: bytes | str | None) -> tuple[Row | None, str | None]:
    """(impression_id, ad_id, user_id, impression_time) or the reason it is rejected."""
    return _parse_record(raw, ("impression_id", "ad_id", "user_id"), ("impression_id",),
                         "impression_time")


def parse_click(raw: bytes | str | None) -> tuple[Row | None, str | None]:
    """(click_id, impression_id, click_time) or the reason it is rejected."""
    return _parse_record(raw, ("click_id", "impression_id"), ("click_id", "impression_id"),
                         "click_time")


def impression_clicks(
    impressions: Iterable[Mapping[str, Any]],
    clicks: Iterable[Mapping[str, Any]],
    late: Collection[str] = (),
) -> list[Row]:
    """Left outer join of parsed impressions and clicks within 30 minutes after the impression.

    `late` holds impression_ids and click_ids the caller's watermark dropped.
    """
    kept_clicks = [c for c in clicks if c["click_id"] not in late]
    rows = []
    for imp in impressions:
        if imp["impression_id"] in late:
            continue
        shown = utc(imp["impression_time"])
        matched = [
            c
            for c in kept_clicks
            if c["impression_id"] == imp["impression_id"]
            and shown <= utc(c["click_time"]) <= shown + CLICK_WINDOW
        ]
        base = {
            "impression_id": imp["impression_id"],
            "ad_id": imp["ad_id"],
            "user_id": imp["user_id"],
            "impression_time": shown,
        }
        for click in matched:
            rows.append(
                {
                    **base,
                    "click_id": click["click_id"],
                    "click_time": utc(click["click_time"]),
                    "was_clicked": True,
                }
            )
        if not matched:
            rows.append({**base, "click_id": None, "click_time": None, "was_clicked": False})
    return rows


def _sort_key(row: Mapping[str, Any]) -> tuple:
    # Floats are left out of the order: two rows differing only by rounding must still pair up.
    key = []
    for column in sorted(row):
        value = row[column]
        if isinstance(value, float):
            continue
        if isinstance(value, Mapping):
            value = repr(sorted(value.items()))
        key.append((column, value is None, "" if value is None else value))
    return tuple(key)


def _same(actual: Any, expected: Any, rel_tol: float, abs_tol: float) -> bool:
    if isinstance(actual, float) and isinstance(expected, float):
        return math.isclose(actual, expected, rel_tol=rel_tol, abs_tol=abs_tol)
    return actual == expected


def assert_rows_equal(
    actual: Iterable[Mapping[str, Any]],
    expected: Iterable[Mapping[str, Any]],
    *,
    rel_tol: float = 1e-9,
    abs_tol: float = 1e-12,
) -> None:
    """The same rows in any order, same columns, floats equal within tolerance.

    Spark sums in a different order than Python, so floats are compared with `math.isclose`.
    """
    got = sorted((dict(r) for r in actual), key=_sort_key)
    want = sorted((dict(r) for r in expected), key=_sort_key)
    problems = []
    if len(got) != len(want):
        problems.append(f"{len(got)} rows, expected {len(want)}")
    for index, (g, w) in enumerate(zip(got, want, strict=False)):
        if set(g) != set(w):
            problems.append(f"row {index}: columns {sorted(g)}, expected {sorted(w)}")
            continue
        differing = [c for c in w if not _same(g[c], w[c], rel_tol, abs_tol)]
        if differing:
            problems.append(
                f"row {index}: " + ", ".join(f"{c}={g[c]!r} expected {w[c]!r}" for c in differing)
            )
    if problems:
        listing = "\n".join(["actual:", *map(repr, got), "expected:", *map(repr, want)])
        raise AssertionError("\n".join(problems[:10]) + "\n" + listing)
