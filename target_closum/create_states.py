"""The exactly-once create as a state machine: where a create stands and what moves it on.

Nothing here talks to Closum or the ledger: :mod:`target_closum.creator` carries
the machine out, and the last column says what it leaves in the ledger.

========== ============================================================ ===================
state      what it means                                                the ledger's row
========== ============================================================ ===================
NEW        nothing written yet                                          none
PENDING    the intent written; no POST out that may have created it     pending
SENT       a POST is out                                                pending
UNKNOWN    a POST's answer was lost (or a killed run left the intent):  pending
           the record may exist
DONE       created: answered with its id, or found by a search          done, with the id
REJECTED   Closum refused it (the record becomes a reject)              none (forgotten)
FAILED     it failed before a POST could create it                      none (forgotten)
UNRESOLVED it may exist and nothing could tell                          pending, for the next run
========== ============================================================ ===================

Transitions (:data:`TRANSITIONS`)::

    NEW     --MARK-->    PENDING      the intent written, just before the POST
    PENDING --SEND-->    SENT
    SENT    --ANSWER-->  DONE         the ledger holds the id
    SENT    --REFUSE-->  REJECTED     a 4xx (but an auth failure or a missing endpoint: FAIL)
    SENT    --LOSE-->    UNKNOWN      408, any 5xx but 429, a timeout, a connection dropped after sending
    SENT    --GIVE_UP--> UNRESOLVED   a 2xx that is not the envelope: asking again cannot tell
    UNKNOWN --FIND-->    DONE         the same record, whose id no finished write owns
    UNKNOWN --MISS-->    PENDING      absent: send again
    UNKNOWN --GIVE_UP--> UNRESOLVED   absent with the POST's tries spent, or the list unreadable
    NEW, PENDING, SENT --FAIL--> FAILED   any other failure (a stop, the token refused, 429s to the end)
    UNKNOWN --FAIL-->    UNRESOLVED

A create starts NEW; an intent a killed run left pending starts UNKNOWN. A
failure raised once the create is DONE (the ledger unwritable, say) moves
nothing: its intent stays pending, the record exists, and the next run finds it.
"""

from __future__ import annotations

import enum


class CreateState(enum.Enum):
    """Where a create stands (see the module's table)."""

    NEW = "new"
    PENDING = "pending"
    SENT = "sent"
    UNKNOWN = "unknown"
    DONE = "done"
    REJECTED = "rejected"
    FAILED = "failed"
    UNRESOLVED = "unresolved"


class CreateEvent(enum.Enum):
    """What moves a create on."""

    MARK = "the intent written"
    SEND = "the POST handed to the client"
    ANSWER = "answered with the new id"
    REFUSE = "refused by Closum"
    LOSE = "the answer lost"
    FIND = "found on the server"
    MISS = "not found on the server"
    GIVE_UP = "no way left to tell"
    FAIL = "failed"


_S, _E = CreateState, CreateEvent

#: (state, event) → the next state; any other pair is a bug.
TRANSITIONS: dict[tuple[CreateState, CreateEvent], CreateState] = {
    (_S.NEW, _E.MARK): _S.PENDING,
    (_S.PENDING, _E.SEND): _S.SENT,
    (_S.SENT, _E.ANSWER): _S.DONE,
    (_S.SENT, _E.REFUSE): _S.REJECTED,
    (_S.SENT, _E.LOSE): _S.UNKNOWN,
    (_S.SENT, _E.GIVE_UP): _S.UNRESOLVED,
    (_S.UNKNOWN, _E.FIND): _S.DONE,
    (_S.UNKNOWN, _E.MISS): _S.PENDING,
    (_S.UNKNOWN, _E.GIVE_UP): _S.UNRESOLVED,
    (_S.NEW, _E.FAIL): _S.FAILED,
    (_S.PENDING, _E.FAIL): _S.FAILED,
    (_S.SENT, _E.FAIL): _S.FAILED,
    (_S.UNKNOWN, _E.FAIL): _S.UNRESOLVED,
}

#: the states a create ends in
FINAL = frozenset({_S.DONE, _S.REJECTED, _S.FAILED, _S.UNRESOLVED})


class CreateMachine:
    """One create's state, moved on only along :data:`TRANSITIONS`.

    Args:
        state: where it starts: NEW, or UNKNOWN for an intent a killed run left pending.
    """

    def __init__(self, state: CreateState = CreateState.NEW) -> None:
        """Start in ``state``."""
        self.state = state

    @property
    def final(self) -> bool:
        """Whether the create has ended."""
        return self.state in FINAL

    def on(self, event: CreateEvent) -> CreateState:
        """Move on by ``event``; the new state.

        Raises:
            ValueError: the event cannot happen in the current state.
        """
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            msg = f"a create cannot be {event.value} while {self.state.value}"
            raise ValueError(msg) from None
        return self.state

    def fail(self) -> CreateState:
        """A failure was raised: FAIL unless the create has ended already (then it stays where it is)."""
        return self.state if self.final else self.on(CreateEvent.FAIL)
