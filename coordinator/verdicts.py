"""When an item's answer is final: replicated verdicts, as pure rules.

One peer's answer is final only when nothing asks for a second look. A problem (the link
checker's broken, timeout or error: whatever the workload's model counts as a problem) always
does, and so does a random share of the rest (`coordinator.reputation.recheck_share`:
adaptive, by the answering key's record). The second answer comes from another peer,
preferably of another network. Two that agree settle it (confirmed); two that disagree call
for a third, from a third network where there is one, and the majority settles it. Each
vantage point's answer is kept with the result.

Disagreement is read with care, because networks differ:
- a minority that could not reach the website (a timeout, a connection error) while the others
  did is a link down from one network: the result says "region-dependent", and nobody is
  blamed;
- a minority that reached the website and answered otherwise is outvoted: its key's record
  says so (`reputation.after_check`), which makes a key that is outvoted often suspect;
- with no majority (three different answers) the result says "disputed", keeps every answer,
  and takes the worst (a problem is shown rather than hidden).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

MAX_ANSWERS = 3  # answers an item gets at most: re-checks are bounded


class State(enum.StrEnum):
    SINGLE = "single"  # one answer, nothing asked for a second look
    CONFIRMED = "confirmed"  # every answer agreed
    REGION_DEPENDENT = "region-dependent"  # unreachable from some networks only
    OUTVOTED = "outvoted"  # the majority settled it against a contradicting answer
    DISPUTED = "disputed"  # no majority


@dataclass(frozen=True, slots=True)
class Answer:
    """One vantage point's answer to an item."""

    peer: str
    network: str  # the coordinator's label of where the peer's request came from (`coordinator.vantage`)
    value: Hashable  # the fields that must agree (the link checker's: its result)
    problem: bool  # a verdict that is never final on one answer
    reached: bool  # the peer got an answer from the website (not a timeout or a connection error)


@dataclass(frozen=True, slots=True)
class Settled:
    value: Hashable
    state: State
    agreed: tuple[str, ...]  # peers whose answer is the final one
    outvoted: tuple[str, ...]  # peers that reached the website and answered otherwise
    unreached: tuple[str, ...]  # peers that answered otherwise without reaching it (not blamed)


def needs_second_look(answer: Answer, share: float, draw: float) -> bool:
    """Is one answer not enough? Problems never are; other answers with probability `share`
    (`draw`: uniform in [0, 1), the caller's randomness, so this stays pure)."""
    return answer.problem or draw < share


def settle(answers: Sequence[Answer], sampled: bool = False) -> Settled | None:
    """The final answer of an item, or None while it needs another answer. `sampled`: the
    first answer was drawn for a second look (`needs_second_look`)."""
    if not answers:
        return None
    first = answers[0]
    if len(answers) == 1:
        if first.problem or sampled:
            return None
        return Settled(first.value, State.SINGLE, (first.peer,), (), ())
    votes = Counter(answer.value for answer in answers)
    if len(votes) == 1:
        return Settled(first.value, State.CONFIRMED, tuple(a.peer for a in answers), (), ())
    if len(answers) < MAX_ANSWERS:
        return None  # a disagreement: a third vantage point decides
    (top, top_votes), *_ = votes.most_common()
    if top_votes * 2 <= len(answers):
        worst = next((a.value for a in answers if a.problem), first.value)
        return _split(answers, worst, State.DISPUTED)
    losers = [a for a in answers if a.value != top]
    state = State.REGION_DEPENDENT if not any(a.reached for a in losers) else State.OUTVOTED
    return _split(answers, top, state)


def _split(answers: Sequence[Answer], value: Hashable, state: State) -> Settled:
    agreed = tuple(a.peer for a in answers if a.value == value)
    outvoted = tuple(a.peer for a in answers if a.value != value and a.reached)
    unreached = tuple(a.peer for a in answers if a.value != value and not a.reached)
    return Settled(value, state, agreed, outvoted, unreached)


def next_network(answers: Sequence[Answer], networks: Sequence[str]) -> str | None:
    """Of the networks peers are in now, one no answer came from yet (the first listed), or
    None when every one has answered: then any other peer will do."""
    used = {a.network for a in answers}
    return next((n for n in networks if n not in used), None)
