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
  blamed; so is a majority that could not reach it, which never blames one that did;
- a minority that reached the website and answered otherwise is outvoted: its key's record
  says so (`reputation.after_check`), which makes a key that is outvoted often suspect;
- answers split three ways, one of them unable to reach the website, are decided by those
  that reached it, with a fourth network asked while they are split; still split, the result
  says "disputed", keeps every answer, takes the worst (a problem is shown rather than
  hidden) and blames nobody.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workloads.bundle import JobModel

PENDING = "pending"  # an item's verdict while another answer is asked for
# Seconds a re-check waits for a peer of a network no answer came from, while there is one;
# then any peer that did not answer the item may take it: a re-check never waits for one.
PREFER_OTHER_NETWORK = 60.0
# Seconds a re-check waits for any peer to take it (every other peer left, say); then the
# answers it has are final, "unconfirmed" when they were one.
RECHECK_WAIT = 600.0
MAX_ANSWERS = 3  # answers an item gets before a majority settles it: re-checks are bounded
# ... and one more when those are split three ways, one of them unable to reach the website.


class State(enum.StrEnum):
    SINGLE = "single"  # one answer, nothing asked for a second look
    CONFIRMED = "confirmed"  # every answer agreed
    REGION_DEPENDENT = "region-dependent"  # unreachable from some networks only
    OUTVOTED = "outvoted"  # the majority settled it against a contradicting answer
    DISPUTED = "disputed"  # no majority
    UNCONFIRMED = "unconfirmed"  # asked for a second look that no other peer came to give


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


def answer_of(model: JobModel, values: Sequence[Any], counted_as: str | None, peer: str, network: str) -> Answer:
    """A record's answer as these rules compare it: its model's `agree` fields (`values` in
    `JobModel.stored` order; lists as tuples, so they compare and count)."""
    by_name = dict(zip((f.name for f in model.stored), values, strict=True))
    agreed = tuple(tuple(v) if isinstance(v, list) else v for v in (by_name[name] for name in model.agree))
    return Answer(peer, network, agreed, counted_as in model.problems, counted_as not in model.unreached)


def may_recheck(peer: str, network: str, answers: Sequence[Answer], waited: float, about: Collection[str]) -> bool:
    """May this peer give an item another answer, `waited` seconds after it was asked for?
    Never one that answered it. One of a network an answer came from only when no peer about
    is of another (`about`: the networks of the peers about), or once the question waited
    PREFER_OTHER_NETWORK."""
    if any(a.peer == peer for a in answers):
        return False
    answered = {a.network for a in answers}
    if network not in answered:
        return True
    return waited >= PREFER_OTHER_NETWORK or all(n in answered for n in about)


def given_up(answers: Sequence[Answer]) -> Settled:
    """The final answer of an item whose re-check no peer came to give (RECHECK_WAIT): the
    majority of its answers so far, else the worst; unconfirmed when it had only one. Nobody
    is blamed."""
    if len(answers) == 1:
        return Settled(answers[0].value, State.UNCONFIRMED, (answers[0].peer,), (), ())
    (top, votes), *_ = Counter(a.value for a in answers).most_common()
    if votes * 2 <= len(answers):
        top = next((a.value for a in answers if a.problem), answers[0].value)
    state = State.CONFIRMED if votes == len(answers) else State.DISPUTED
    return _split(answers, top, state, blame=False)


LINKS_TOLERATED = 2  # links a page's answer may differ by (dynamic pages) ...
LINKS_TOLERATED_SHARE = 0.1  # ... or this share of the links followed, whichever is more


def link_outliers(found: Mapping[str, frozenset[str]], answers: int) -> tuple[str, ...] | None:
    """Of the keys whose answers of a crawled page agreed (`found`: the links each found), those
    whose links differ from the ones followed (`links_to_follow`) by more than a dynamic page
    explains: a key that withholds a page's links (to stop a crawl) or makes them up (to grow
    it) is outvoted on its record, though the page's result stands. None while they differ,
    fewer than three agreed, and the item has room for another answer (`answers` so far, at
    most MAX_ANSWERS + 1): one more decides."""
    if len(set(found.values())) <= 1:
        return ()
    if len(found) < 3:
        return None if answers <= MAX_ANSWERS else ()
    follow = links_to_follow(found)
    return tuple(peer for peer, links in found.items() if links_stray(links, follow))


def links_stray(links: frozenset[str], follow: frozenset[str]) -> bool:
    """Do a page's links differ from the ones followed by more than a dynamic page explains?"""
    return len(links ^ follow) > max(LINKS_TOLERATED, LINKS_TOLERATED_SHARE * len(follow))


def links_to_follow(found: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The links a crawled page's agreeing answers found that its crawl follows: each found by
    at least half of them. A link one liar made up, or one it withheld, is outvoted once two
    others answered; between two answers alone, both are followed (a link missed is worse
    than one checked needlessly)."""
    counts = Counter(link for links in found.values() for link in links)
    return frozenset(link for link, count in counts.items() if count * 2 >= len(found))


def without(settled: Settled, outliers: Sequence[str]) -> Settled:
    """`settled` with these agreeing keys counted as outvoted (`link_outliers`)."""
    if not outliers:
        return settled
    agreed = tuple(p for p in settled.agreed if p not in outliers)
    return Settled(settled.value, settled.state, agreed, (*settled.outvoted, *outliers), settled.unreached)


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
    if top_votes * 2 > len(answers):
        winners_reached = any(a.reached for a in answers if a.value == top)
        losers_reached = any(a.reached for a in answers if a.value != top)
        if not winners_reached:
            # Most could not reach it, some did: down from those networks only. Who reached
            # it is not blamed by those who did not.
            return _split(answers, top, State.REGION_DEPENDENT, blame=False)
        return _split(answers, top, State.OUTVOTED if losers_reached else State.REGION_DEPENDENT)
    # No majority. Answers that did not reach the website are no votes on what it says: the
    # ones that did decide, with one more network asked while they are split.
    reached = Counter(a.value for a in answers if a.reached)
    if reached:
        (said, said_votes), *rest = reached.most_common()
        if said_votes * 2 > reached.total():
            return _split(answers, said, State.REGION_DEPENDENT if rest == [] else State.OUTVOTED)
    if len(answers) < MAX_ANSWERS + 1:
        return None
    worst = next((a.value for a in answers if a.problem), first.value)
    return _split(answers, worst, State.DISPUTED, blame=False)


def _split(answers: Sequence[Answer], value: Hashable, state: State, blame: bool = True) -> Settled:
    """`blame`: whoever reached the website and answered otherwise is outvoted; without it,
    every other answer is only unlike the final one (not held against its key)."""
    agreed = tuple(a.peer for a in answers if a.value == value)
    outvoted = tuple(a.peer for a in answers if a.value != value and a.reached and blame)
    unreached = tuple(a.peer for a in answers if a.value != value and not (a.reached and blame))
    return Settled(value, state, agreed, outvoted, unreached)


def next_network(answers: Sequence[Answer], networks: Sequence[str]) -> str | None:
    """Of the networks peers are in now, one no answer came from yet (the first listed), or
    None when every one has answered: then any other peer will do."""
    used = {a.network for a in answers}
    return next((n for n in networks if n not in used), None)
