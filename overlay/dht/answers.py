"""Answers no larger than three times their request, so the DHT cannot amplify a forged request. Pure.

A UDP request's source address can be forged, and kademlia answered a 78-byte find_value with a
whole record set, up to ~8 kB: a 100x amplifier aimed at whoever's address was forged. Here every
answer datagram is at most `AMPLIFICATION` times the request datagram that asked for it (QUIC's
rule for addresses it has not validated, RFC 9000 section 8.1). A find_node answer keeps the
closest contacts that fit; a find_value answer keeps the newest records that fit, and when not
one does, it becomes a find_node answer.

Our nodes pad their find_node and find_value requests with zero bytes after the msgpack body
(`REQUEST_BYTES`), so that the largest answer they accept fits; the padding is theirs to pay,
which is what makes the rule cheap for honest nodes and useless to an attacker. Nodes that do not
pad (older versions, plain kademlia) still get answers, only shorter ones. rpcudp decodes the
first msgpack object of a datagram and ignores what follows, so older nodes read padded requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import umsgpack

from overlay.dht.checks import ID_BYTES
from overlay.records import MAX_SET_BYTES, RecordError, SignedRecord, decode_set, encode_set

AMPLIFICATION = 3
_HEADER = 1 + ID_BYTES  # rpcudp's type byte and message id
_KSIZE = 20  # kademlia's default k: the most contacts a find_node answer carries


def _datagram_bytes(answer: Any) -> int:
    return _HEADER + len(umsgpack.packb(answer))


def _worst_contacts(count: int) -> list[tuple[bytes, str, int]]:
    return [(bytes(ID_BYTES), "ffff:" * 7 + "ffff", 65535)] * count


# The request size at which the largest answer we accept fits.
REQUEST_BYTES = {
    "find_node": math.ceil(_datagram_bytes(_worst_contacts(_KSIZE)) / AMPLIFICATION),
    "find_value": math.ceil(_datagram_bytes({"value": bytes(MAX_SET_BYTES)}) / AMPLIFICATION),
}


# The smallest find_value answer that holds a record: below it, a set is not even decoded.
_SMALLEST_VALUE_ANSWER = _datagram_bytes(
    {"value": encode_set("k", [SignedRecord(bytes(32), b"\x80", 0.0, 1.0, bytes(64))])}
)


def answer_budget(request_bytes: int) -> int:
    """The largest answer datagram a request datagram of `request_bytes` may get."""
    return AMPLIFICATION * request_bytes


def fits(answer: Any, budget: int) -> bool:
    return _datagram_bytes(answer) <= budget


def fit_contacts(contacts: Sequence[tuple[bytes, str, int]], budget: int) -> list[tuple[bytes, str, int]]:
    """The first (closest) of `contacts` whose answer datagram fits in `budget` bytes."""
    kept = list(contacts)
    while kept and not fits(kept, budget):
        kept.pop()
    return kept


def fit_value(value: bytes, budget: int) -> dict[str, bytes] | None:
    """A find_value answer of the newest records of the set `value` that fit; None if none does."""
    answer = {"value": value}
    if fits(answer, budget):
        return answer
    if budget < _SMALLEST_VALUE_ANSWER:
        return None
    try:
        held = decode_set(value)
    except RecordError:
        return None
    records = list(held.records)  # newest first, as merge() keeps them
    while records:
        records.pop()
        answer = {"value": encode_set(held.key, records)}
        if records and fits(answer, budget):
            return answer
    return None
