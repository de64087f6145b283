"""The user_sessions rules, in plain Python: no Spark, runs in milliseconds."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_assets.transforms.sessions import (
    SESSION_GAP,
    STATE_TTL,
    USER_SESSIONS_WATERMARK,
    SessionState,
    advance_session,
    session_id_for,
)
from stream_assets_tests import reference

T0 = datetime(2024, 1, 1, 12, 0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_first_event_opens_a_session_counting_one() -> None:
    state = advance_session("u1", None, [at(0)])

    assert state == SessionState(session_id_for("u1", at(0)), at(0), at(0), 1)


def test_no_events_and_no_state_give_no_session() -> None:
    assert advance_session("u1", None, []) is None


def test_events_within_the_gap_add_to_the_session_across_batches() -> None:
    first = advance_session("u1", None, [at(0), at(10)])
    second = advance_session("u1", first, [at(35)])

    assert second is not None and first is not None
    assert second.session_id == first.session_id
    assert (second.total_events, second.session_start, second.last_event_time) == (3, at(0), at(35))


def test_a_pause_of_exactly_the_gap_continues_the_session() -> None:
    state = advance_session("u1", None, [at(0), at(0) + SESSION_GAP])

    assert state is not None and state.total_events == 2


def test_a_pause_longer_than_the_gap_opens_a_new_session_with_a_new_id() -> None:
    first = advance_session("u1", None, [at(0), at(5)])
    second = advance_session("u1", first, [at(5) + SESSION_GAP + timedelta(seconds=1)])

    assert first is not None and second is not None
    assert second.session_id != first.session_id
    assert second.total_events == 1
    assert second.session_start == second.last_event_time == at(35) + timedelta(seconds=1)


def test_events_of_a_batch_are_taken_in_time_order_not_arrival_order() -> None:
    # Arrival order would see a 60-minute pause between 0 and 60 and then go back in time.
    state = advance_session("u1", None, [at(60), at(0), at(45), at(20)])

    assert state == SessionState(session_id_for("u1", at(0)), at(0), at(60), 4)


def test_a_pause_inside_one_batch_splits_sessions() -> None:
    state = advance_session("u1", None, [at(0), at(5), at(50), at(55)])

    assert state == SessionState(session_id_for("u1", at(50)), at(50), at(55), 2)


def test_session_id_is_a_uuid5_of_user_and_start_so_replays_repeat_it() -> None:
    replayed = [advance_session("u1", None, [at(0), at(3)]) for _ in range(2)]

    assert replayed[0] == replayed[1]
    assert uuid.UUID(session_id_for("u1", at(0))).version == 5
    assert session_id_for("u1", at(0)) != session_id_for("u2", at(0))
    assert session_id_for("u1", at(0)) != session_id_for("u1", at(0) + timedelta(microseconds=1))


def test_session_id_matches_the_reference_contract() -> None:
    assert session_id_for("u1", at(0)) == reference.session_id("u1", at(0))


def test_late_event_before_the_start_moves_the_start_back_and_keeps_the_id() -> None:
    first = advance_session("u1", None, [at(0), at(5)])
    later = advance_session("u1", first, [at(-8)])

    assert first is not None and later is not None
    assert later.session_id == first.session_id
    assert (later.session_start, later.last_event_time, later.total_events) == (at(-8), at(5), 3)


def test_late_event_between_start_and_last_counts_without_moving_times() -> None:
    first = advance_session("u1", None, [at(0), at(20)])
    later = advance_session("u1", first, [at(10)])

    assert later == SessionState(first.session_id, at(0), at(20), 3)  # type: ignore[union-attr]


def test_event_older_than_a_replaced_session_is_not_counted() -> None:
    first = advance_session("u1", None, [at(100)])
    later = advance_session("u1", first, [at(0)])

    assert later == first


def test_state_expires_state_ttl_after_the_last_event() -> None:
    state = advance_session("u1", None, [at(0), at(7)])

    assert state is not None and state.expires_at() == at(7) + STATE_TTL


def test_state_outlives_the_session_gap_so_expiry_changes_no_output() -> None:
    # An event after an expiry would open a new session anyway, with or without the old state.
    assert STATE_TTL > SESSION_GAP


def test_watermark_is_not_longer_than_the_gap() -> None:
    amount, unit = USER_SESSIONS_WATERMARK.split()
    assert unit == "minutes"
    assert timedelta(minutes=int(amount)) <= SESSION_GAP


def test_output_row_has_the_table_columns() -> None:
    state = advance_session("u1", None, [at(0)])

    assert state is not None
    assert state.to_row("u1") == {
        "user_id": "u1",
        "session_id": session_id_for("u1", at(0)),
        "total_events": 1,
        "session_start": at(0),
        "last_event_time": at(0),
    }


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=90), min_size=1, max_size=25),
    cuts=st.sets(st.integers(min_value=1, max_value=24)),
)
def test_batching_of_in_order_events_does_not_change_the_session(
    gaps: list[int], cuts: set[int]
) -> None:
    times = [at(sum(gaps[: i + 1])) for i in range(len(gaps))]
    bounds = [0, *sorted(c for c in cuts if c < len(times)), len(times)]
    state = None
    for start, end in itertools.pairwise(bounds):
        # Inside a batch the arrival order is scrambled on purpose.
        state = advance_session("u1", state, list(reversed(times[start:end])))

    events = [
        {"event_id": f"e{i}", "event_type": "view", "user_id": "u1", "timestamp": t.isoformat()}
        for i, t in enumerate(times)
    ]
    (expected,) = reference.user_sessions(events)
    assert state is not None
    assert state.to_row("u1") == expected


@pytest.mark.parametrize("minutes", [29, 30])
def test_reference_agrees_a_pause_up_to_the_gap_continues(minutes: int) -> None:
    events = [
        {"event_id": "a", "event_type": "view", "user_id": "u1", "timestamp": at(0).isoformat()},
        {
            "event_id": "b",
            "event_type": "view",
            "user_id": "u1",
            "timestamp": at(minutes).isoformat(),
        },
    ]
    state = advance_session("u1", None, [at(0), at(minutes)])
    assert state is not None
    assert [state.to_row("u1")] == reference.user_sessions(events)
