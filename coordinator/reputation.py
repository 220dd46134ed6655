"""What the coordinator believes of a peer key: its agreement record, and the rules a store
applies to it. Pure.

Nothing a peer says is taken on its word alone (issue: trust in results). Each key keeps a
`PeerRecord`: how often other peers agreed with its answers when they were checked again,
how it did on work whose answer the coordinator knew beforehand (known answers), and how
often it named a bundle version it was not leased. From the record follow

- its **standing** (`standing`): new until it has `TRUSTED_AFTER` confirmed answers, then
  trusted; suspect while others outvote it often; quarantined once caught lying;
- how much of its "ok" work is checked again (`recheck_share`): adaptive replication, as
  BOINC does it: all of it while on probation (its first `PROBATION` checked answers), then `NEW_SHARE` for a new key, `TRUSTED_SHARE` for a long clean record, every
  answer of a suspect; and how many known answers its units carry (`known_answers`);
- its **weight** in the assignment of websites (`weight`): the lowest of what it claims, what
  it earned with confirmed answers, and what the coordinator saw it do over its recent work
  (`Observed`, with headroom to grow), so that a key claiming 1e15 bytes/s, or a wave of fresh
  keys, captures little until its work was confirmed, and a key that was confirmed still gets
  no more than it was seen to get through.

Quarantine needs proof, not disagreement: a peer behind a flaky network disagrees sometimes,
honestly, and is only checked more (suspect). Wrong on known answers (`KNOWN_WRONG_LIMIT`,
and a share of them, `KNOWN_WRONG_SHARE`) or naming versions it was not leased
(`MISREPORT_LIMIT`) quarantines it: it gets no more websites, and its unconfirmed answers are
done again by others.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

from coordinator.store import BYTES_PER_ITEM

NEW_SHARE = 0.05  # of a new key's "ok" answers checked again by another peer
TRUSTED_SHARE = 0.01  # of a trusted key's
SUSPECT_SHARE = 1.0  # of a suspect's: every answer
PROBATION = 20  # a new key's first answers checked again, every one
TRUSTED_AFTER = 200  # confirmed answers (agreed with, or known answers right) before a key is trusted
# Suspect: outvoted in more than this share of its checked answers, once it had this many checked.
SUSPECT_SHARE_OUTVOTED = 0.3
SUSPECT_AFTER = 10
KNOWN_WRONG_LIMIT = 2  # known answers wrong before quarantine ...
KNOWN_WRONG_SHARE = 0.2  # ... when they are also more than this share of its known answers
MISREPORT_LIMIT = 3  # reports naming a version the unit was not leased with
KNOWN_PER_UNIT_UNPROVEN = 3  # known answers planted in a unit of a new or suspect key
KNOWN_PER_UNIT_TRUSTED = 1  # ... of a trusted key: still some, a key may turn
# A new key's weight (bytes/s) in the assignment; it grows by EARNED_PER_ANSWER for each
# confirmed answer, up to what the key claims.
NEW_WEIGHT = 100_000.0
EARNED_PER_ANSWER = 5_000.0
# ... and up to OBSERVED_HEADROOM times the bytes/s the coordinator saw it do (`Observed`: the
# items it accepted, each counting less as it ages, OBSERVED_SECONDS its time constant). That
# cap never goes below OBSERVED_FLOOR, what a key earns by the time it is trusted: when work is
# scarce every key is seen doing little, and a floor as low as a new key's would flatten trusted
# keys down to the weight of fresh ones, handing a wave of fresh keys a share by their number.
OBSERVED_HEADROOM = 2.0
OBSERVED_SECONDS = 300.0
OBSERVED_FLOOR = NEW_WEIGHT + EARNED_PER_ANSWER * TRUSTED_AFTER


class Standing(enum.StrEnum):
    NEW = "new"
    TRUSTED = "trusted"
    SUSPECT = "suspect"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """One key's agreement record."""

    agreed: int = 0  # its answers another peer confirmed
    outvoted: int = 0  # its answers the other vantage points answered otherwise
    known_right: int = 0  # known answers it got right
    known_wrong: int = 0  # known answers it got wrong
    misreports: int = 0  # reports naming a version its unit was not leased with
    quarantined: str | None = None  # why, once caught lying

    @property
    def confirmed(self) -> int:
        return self.agreed + self.known_right

    @property
    def checked(self) -> int:
        return self.agreed + self.outvoted


def standing(record: PeerRecord) -> Standing:
    if record.quarantined is not None:
        return Standing.QUARANTINED
    if record.checked >= SUSPECT_AFTER and record.outvoted > SUSPECT_SHARE_OUTVOTED * record.checked:
        return Standing.SUSPECT
    return Standing.TRUSTED if record.confirmed >= TRUSTED_AFTER else Standing.NEW


def recheck_share(record: PeerRecord) -> float:
    """The share of the key's "ok" answers checked again by another peer (problems always are):
    every one while it is on probation (fewer than PROBATION answers checked): a liar that says
    "ok" of everything would otherwise hold a website alone, with nothing known there yet to
    catch it, and finish it before anyone looked."""
    if record.checked + record.known_right + record.known_wrong < PROBATION:
        return SUSPECT_SHARE
    return {
        Standing.NEW: NEW_SHARE,
        Standing.TRUSTED: TRUSTED_SHARE,
        Standing.SUSPECT: SUSPECT_SHARE,
        Standing.QUARANTINED: SUSPECT_SHARE,
    }[standing(record)]


def known_answers(record: PeerRecord) -> int:
    """Known answers planted in each unit the key is given: more while it has not proven
    itself (new or suspect), so a liar meets one within its first units whatever share of the
    work its weight gives it."""
    return KNOWN_PER_UNIT_TRUSTED if standing(record) is Standing.TRUSTED else KNOWN_PER_UNIT_UNPROVEN


def weight(claimed: float, record: PeerRecord, observed: float) -> float:
    """The key's weight in the assignment of websites, in bytes/s: the lowest of what it
    claims (`claimed`), what it earned with confirmed answers, and OBSERVED_HEADROOM times what
    it was seen to do (`observed`, bytes/s: `observed_rate`), the last never below
    OBSERVED_FLOOR. None once quarantined, at most a new key's while suspect.

    A claim alone moves nothing: a fresh key claiming 1e15 weighs NEW_WEIGHT, and one whose
    answers were confirmed weighs no more than twice what it got through lately. The headroom
    is how an honest key grows: given more websites than it needs, it does more, and is given
    more again. Confirmation is what a liar cannot fake by working fast; the observed cap is
    what a peer honest in its answers but boastful in its claim cannot talk past."""
    match standing(record):
        case Standing.QUARANTINED:
            return 0.0
        case Standing.SUSPECT:
            allowed = NEW_WEIGHT
        case _:
            earned = NEW_WEIGHT + EARNED_PER_ANSWER * record.confirmed
            seen = OBSERVED_HEADROOM * observed if math.isfinite(observed) else 0.0
            allowed = min(earned, max(OBSERVED_FLOOR, seen))
    return max(0.0, min(claimed, allowed))  # a NaN claim: 0


@dataclass(frozen=True, slots=True)
class Observed:
    """What the coordinator saw a key do, by its own count and clock: the items it accepted
    from the key, each weighing e^(-age / OBSERVED_SECONDS), as of `at`. Divided by
    OBSERVED_SECONDS this is an exponentially weighted moving average of the items per second
    of wall time (`observed_rate`): a key that does r items/s for long is seen doing r; one
    that stops fades to nothing within a few time constants. Unlike the per-unit throughput
    that sizes units (`unit_sizing`), it cannot be raised by reporting early: a key is granted
    only the units of its websites, one at a time per website, so what it gets through is
    bounded by what it was given."""

    items: float = 0.0
    at: float = 0.0


def observed_items(seen: Observed, now: float) -> float:
    """Its decayed count of accepted items at `now` (a clock gone back ages nothing)."""
    return seen.items * math.exp(-max(0.0, now - seen.at) / OBSERVED_SECONDS)


def observed_after(seen: Observed, items: int, now: float) -> Observed:
    """It had `items` more accepted at `now`; nonsense (none, a non-finite time) changes nothing."""
    if items <= 0 or not math.isfinite(now):
        return seen
    return Observed(observed_items(seen, now) + items, max(now, seen.at))


def observed_rate(seen: Observed, now: float) -> float:
    """The bytes/s it was seen to do at `now`, at BYTES_PER_ITEM (the assignment's unit)."""
    return observed_items(seen, now) / OBSERVED_SECONDS * BYTES_PER_ITEM


def after_check(record: PeerRecord, agreed: bool) -> PeerRecord:
    """Its answer was checked by other vantage points: confirmed, or outvoted. Outvoted alone
    never quarantines (an honest peer's network fails at times); it makes the key suspect."""
    if agreed:
        return replace(record, agreed=record.agreed + 1)
    return replace(record, outvoted=record.outvoted + 1)


def after_known_answer(record: PeerRecord, right: bool) -> PeerRecord:
    """It answered an item whose answer the coordinator knew."""
    if right:
        return replace(record, known_right=record.known_right + 1)
    after = replace(record, known_wrong=record.known_wrong + 1)
    known = after.known_right + after.known_wrong
    if (
        after.quarantined is None
        and after.known_wrong >= KNOWN_WRONG_LIMIT
        and after.known_wrong > KNOWN_WRONG_SHARE * known
    ):
        after = replace(after, quarantined=f"wrong on {after.known_wrong} of {known} known answers")
    return after


def after_misreport(record: PeerRecord) -> PeerRecord:
    """It reported a unit naming a bundle version the unit was not leased with."""
    after = replace(record, misreports=record.misreports + 1)
    if after.quarantined is None and after.misreports >= MISREPORT_LIMIT:
        after = replace(after, quarantined=f"named a bundle version it was not leased {after.misreports} times")
    return after
