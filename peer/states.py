"""The peer's states as its volunteer sees them, and why it is paused. Pure: no clock, no I/O.

| state   | when                                                                        |
| ------- | --------------------------------------------------------------------------- |
| paused  | a pause reason holds (below); running units are given back                  |
| looking | no coordinator registered with yet                                          |
| working | units running                                                               |
| idle    | working for a coordinator, no unit running                                  |

The first row that holds is the state (`state_of`), so a paused peer is paused whether it has
a coordinator or not. A pause has one reason at a time, the first of (`pause_reason`): the
volunteer paused it (local page), the person is at the computer (`--only-when-idle`,
peer.idle), the budget says so (cap used up, outside active hours: peer.allowance). Only the
budget's pauses end by themselves at a time the peer can tell (`resumes_by_itself`).
"""

from __future__ import annotations

import enum
from typing import Literal

State = Literal["looking", "idle", "working", "paused"]

# Each state and when the peer is in it, in the order `state_of` tries them.
STATES: tuple[tuple[State, str], ...] = (
    ("paused", "a pause reason holds: the volunteer, the person at the computer, or the budget"),
    ("looking", "no coordinator registered with yet"),
    ("working", "units running"),
    ("idle", "working for a coordinator, no unit running"),
)

PAUSED_BY_VOLUNTEER = "paused by the volunteer (resume on the local page)"


def state_of(paused: str | None, coordinator: str | None, running: int) -> State:
    """The state of a peer paused for `paused` (None: not paused), registered with
    `coordinator` (None: none yet), with `running` units."""
    if paused is not None:
        return "paused"
    if coordinator is None:
        return "looking"
    return "working" if running else "idle"


def pause_reason(*, held: bool, away: str | None, budget: str | None) -> str | None:
    """Why the peer must not work now, in one line for the volunteer; None to work.
    `held`: the volunteer paused it; `away`: why the person counts as present (peer.idle);
    `budget`: why the budget forbids work (peer.allowance)."""
    if held:
        return PAUSED_BY_VOLUNTEER
    if away is not None:
        return away
    return budget


class PauseStep(enum.Enum):
    """What changes when the pause reason is checked again."""

    STAYS = "stays"  # same reason (or still none): nothing to do
    PAUSE = "pause"  # a pause begins, or its reason changes: give back what runs
    RESUME = "resume"  # the pause is over: lease again


def pause_step(before: str | None, after: str | None) -> PauseStep:
    """The step from pause reason `before` to `after` (None: working)."""
    if after == before:
        return PauseStep.STAYS
    return PauseStep.RESUME if after is None else PauseStep.PAUSE


def resumes_by_itself(paused: str | None, budget: str | None) -> bool:
    """Whether the pause `paused` is the budget's (`budget`, its reason now), which ends at a
    time the peer can tell; the volunteer's and the idle rule's have no end known."""
    return paused is not None and paused == budget
