"""The exactly-once create's state machine on its own: its paths, the events it refuses, where a failure leaves it."""

from __future__ import annotations

import pytest

from target_closum.create_states import FINAL, TRANSITIONS, CreateEvent, CreateMachine, CreateState

S, E = CreateState, CreateEvent


def _walk(events, start=S.NEW):
    machine = CreateMachine(start)
    return [machine.on(event) for event in events]


@pytest.mark.parametrize(
    ("start", "events", "states"),
    [
        # answered at once
        (S.NEW, [E.MARK, E.SEND, E.ANSWER], [S.PENDING, S.SENT, S.DONE]),
        # refused by Closum
        (S.NEW, [E.MARK, E.SEND, E.REFUSE], [S.PENDING, S.SENT, S.REJECTED]),
        # the answer lost, the record found by the search
        (S.NEW, [E.MARK, E.SEND, E.LOSE, E.FIND], [S.PENDING, S.SENT, S.UNKNOWN, S.DONE]),
        # the answer lost, the record absent: sent again (the intent is not written twice), answered
        (
            S.NEW,
            [E.MARK, E.SEND, E.LOSE, E.MISS, E.SEND, E.ANSWER],
            [S.PENDING, S.SENT, S.UNKNOWN, S.PENDING, S.SENT, S.DONE],
        ),
        # the answer lost, and no search can tell (tries spent, or the list unreadable)
        (S.NEW, [E.MARK, E.SEND, E.LOSE, E.GIVE_UP], [S.PENDING, S.SENT, S.UNKNOWN, S.UNRESOLVED]),
        # a 2xx that is not the envelope
        (S.NEW, [E.MARK, E.SEND, E.GIVE_UP], [S.PENDING, S.SENT, S.UNRESOLVED]),
        # an intent a killed run left: searched first
        (S.UNKNOWN, [E.FIND], [S.DONE]),
        (S.UNKNOWN, [E.MISS, E.SEND, E.ANSWER], [S.PENDING, S.SENT, S.DONE]),
        (S.UNKNOWN, [E.MISS, E.SEND, E.REFUSE], [S.PENDING, S.SENT, S.REJECTED]),
    ],
)
def test_a_create_moves_along_its_transitions(start, events, states):
    assert _walk(events, start) == states


@pytest.mark.parametrize(
    ("start", "event"),
    [
        (S.NEW, E.SEND),  # never sent before its intent is written
        (S.PENDING, E.MARK),  # the intent is written once
        (S.SENT, E.FIND),  # a search only follows a lost answer
        (S.PENDING, E.ANSWER),
        (S.UNKNOWN, E.SEND),  # never resent blindly: searched first
        (S.UNKNOWN, E.REFUSE),
    ],
)
def test_an_event_that_cannot_happen_is_refused_and_moves_nothing(start, event):
    machine = CreateMachine(start)
    with pytest.raises(ValueError, match=f"cannot be {event.value} while {start.value}"):
        machine.on(event)
    assert machine.state is start


@pytest.mark.parametrize("final", sorted(FINAL, key=lambda s: s.value))
def test_an_ended_create_moves_no_more(final):
    assert not [event for (state, event) in TRANSITIONS if state is final]
    machine = CreateMachine(final)
    assert machine.final
    for event in CreateEvent:
        with pytest.raises(ValueError, match="cannot be"):
            machine.on(event)
    assert machine.fail() is final  # a failure after DONE leaves the intent as the ledger has it


@pytest.mark.parametrize(
    ("state", "after"),
    [
        (S.NEW, S.FAILED),
        (S.PENDING, S.FAILED),
        (S.SENT, S.FAILED),  # what failed proves nothing was created (the lost answers are LOSE)
        (S.UNKNOWN, S.UNRESOLVED),  # it may exist: the intent stays for the next run
    ],
)
def test_a_failure_forgets_only_what_cannot_exist(state, after):
    machine = CreateMachine(state)
    assert machine.fail() is after
    assert machine.final


def test_every_state_is_reachable_from_where_creates_start():
    reached = {S.NEW, S.UNKNOWN}
    while True:
        more = {nxt for (state, _), nxt in TRANSITIONS.items() if state in reached} - reached
        if not more:
            break
        reached |= more
    assert reached == set(CreateState)
