"""The DHT's pure rules, without sockets: the ledger, token buckets, answer sizes, the handoff, the
lookup's traversal."""

from __future__ import annotations

import os
import random

import pytest
import umsgpack
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from overlay import records
from overlay.dht.answers import AMPLIFICATION, REQUEST_BYTES, answer_budget, fit_contacts, fit_value
from overlay.dht.handoff import distance, handoff_keys
from overlay.dht.limits import DhtLimits, Ledger
from overlay.dht.traversal import Traversal
from overlay.dht.verifying import TokenBucket
from overlay.identity import Identity

LIMITS = DhtLimits(max_keys=20, max_bytes=40_000, sender_keys=6, sender_bytes=20_000, signer_keys=5)
SENDERS = [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1), None]
SIGNERS = [bytes([n]) * 32 for n in range(8)]

stores = st.lists(
    st.tuples(
        st.integers(0, 40),  # which key
        st.sampled_from(SENDERS),
        st.integers(1, records.MAX_SET_BYTES),  # size
        st.sets(st.sampled_from(SIGNERS), min_size=1, max_size=3),
        st.floats(1.0, 100.0),  # expires at
        st.booleans(),  # or release the key instead
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(stores, st.floats(0.0, 120.0))
def test_the_ledger_never_lets_anyone_past_a_limit(operations, sweep_at):
    ledger = Ledger(LIMITS)
    held: dict[bytes, tuple[object, int, frozenset[bytes]]] = {}
    for index, sender, size, signers, expires_at, release in operations:
        dkey = bytes([index]) * 20
        if release:
            ledger.release(dkey)
            held.pop(dkey, None)
            continue
        signers = {s for s in signers if not ledger.signer_is_full(dkey, s)}
        if not signers or ledger.refusal(dkey, sender, size) is not None:
            continue
        first = held[dkey][0] if dkey in held else sender
        ledger.charge(dkey, sender, size, signers, [expires_at])
        held[dkey] = (first, size, frozenset(signers))
        # The invariants, after every step: the ledger's totals are the sum of what it holds...
        assert ledger.keys == len(held) <= LIMITS.max_keys
        assert ledger.bytes == sum(size for _, size, _ in held.values()) <= LIMITS.max_bytes
        # ...and a sender's keys stay within its quota (a held key only grows up to one set).
        for who in SENDERS[:3]:
            keys, nbytes = ledger.held_by(who)  # type: ignore[arg-type]
            assert keys == sum(1 for first, _, _ in held.values() if first == who) <= LIMITS.sender_keys
            assert nbytes <= LIMITS.sender_bytes + keys * records.MAX_SET_BYTES
        for signer in SIGNERS:
            assert sum(1 for *_, s in held.values() if signer in s) <= LIMITS.signer_keys
    gone = ledger.expired(sweep_at)
    for dkey in gone:
        ledger.release(dkey)
    assert ledger.expired(sweep_at) == []


def test_the_ledger_forgets_a_sender_with_nothing_held():
    ledger = Ledger(LIMITS)
    sender = ("10.0.0.9", 9)
    ledger.charge(b"k" * 20, sender, 100, [SIGNERS[0]], [10.0])
    assert ledger.held_by(sender) == (1, 100)
    assert ledger.expired(5.0) == []
    assert ledger.expired(10.0) == [b"k" * 20]
    ledger.release(b"k" * 20)
    assert ledger.held_by(sender) == (0, 0)
    assert (ledger.keys, ledger.bytes) == (0, 0)


def test_limits_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="at least one record set"):
        DhtLimits(sender_bytes=1000)
    with pytest.raises(ValueError, match="positive"):
        DhtLimits(max_keys=0)


@given(
    st.floats(0.1, 100.0),
    st.floats(1.0, 50.0),
    st.lists(st.floats(0.0, 2.0), max_size=200),
)
def test_a_token_bucket_gives_at_most_its_burst_plus_its_rate(rate, burst, steps):
    bucket = TokenBucket.full(rate, burst, 0.0)
    now, given_out = 0.0, 0
    for step in steps:
        now += step
        given_out += bucket.take(now)
        assert given_out <= burst + rate * now + 1e-6


def _contacts(count: int) -> list[tuple[bytes, str, int]]:
    return [(os.urandom(20), f"10.0.{n}.{n}", 4000 + n) for n in range(count)]


@given(st.integers(22, 3000), st.integers(0, 20))
def test_contacts_answered_are_the_closest_that_fit(request_bytes, count):
    contacts = _contacts(count)
    budget = answer_budget(request_bytes)
    kept = fit_contacts(contacts, budget)
    assert kept == contacts[: len(kept)]
    assert 21 + len(umsgpack.packb(kept)) <= AMPLIFICATION * request_bytes
    if len(kept) < count:
        assert 21 + len(umsgpack.packb(contacts[: len(kept) + 1])) > budget


def test_a_value_answered_is_the_newest_records_that_fit():
    signed = [records.sign(Identity.generate(), "k", {"a": "x" * 300}, 1000.0 - n, 600.0) for n in range(12)]
    value = records.encode_set("k", signed)
    assert fit_value(value, 3 * REQUEST_BYTES["find_value"]) == {"value": value}
    assert fit_value(value, 3 * 78) is None  # not even one record fits: the caller answers with contacts
    for request_bytes in (300, 700, 1500):
        answer = fit_value(value, 3 * request_bytes)
        assert answer is not None
        assert 21 + len(umsgpack.packb(answer)) <= 3 * request_bytes
        kept = records.decode_set(answer["value"]).records
        assert kept == tuple(signed[: len(kept)])
        assert 21 + len(umsgpack.packb({"value": records.encode_set("k", signed[: len(kept) + 1])})) > 3 * request_bytes


@given(st.lists(st.binary(min_size=20, max_size=20), max_size=100, unique=True), st.integers(0, 40))
def test_a_newcomer_is_handed_at_most_the_limit_of_the_keys_held(held, limit):
    me, newcomer, other = (os.urandom(20) for _ in range(3))
    chosen = handoff_keys(newcomer, me, held, lambda _: [other], limit)
    assert len(chosen) <= limit
    assert set(chosen) <= set(held)
    for dkey in chosen:
        assert distance(newcomer, dkey) < distance(other, dkey)
        assert distance(me, dkey) < distance(other, dkey)
    # Alone (no contacts), a node hands over the `limit` keys nearest the newcomer.
    alone = handoff_keys(newcomer, me, held, lambda _: [], limit)
    assert alone == sorted(held, key=lambda k: distance(newcomer, k))[:limit]


# ---- the lookup's traversal -----------------------------------------------------------------


@given(st.integers(5, 120), st.floats(0.0, 0.5), st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_a_traversal_finds_the_k_closest_live_nodes_and_never_waits_for_a_dead_one(count, dead_share, seed):
    """Every live node knows every node (dead ones too) and answers with the closest to the
    target; dead nodes never answer. The traversal ends with exactly the k closest live nodes,
    with never more than alpha requests holding lanes, and once any node has answered it does
    not wait for a dead node's timeout."""
    k, alpha = 20, 3
    rng = random.Random(seed)
    ids = list({rng.randbytes(20) for _ in range(count)})
    dead = set(rng.sample(ids, int(dead_share * len(ids))))
    target = rng.randbytes(20)
    nearest = sorted(ids, key=lambda node_id: distance(node_id, target))
    contact = lambda node_id: (node_id, "10.0.0.1", 4000)  # noqa: E731
    start = [contact(node_id) for node_id in rng.sample(ids, min(k, len(ids)))]
    assume(any(node_id not in dead for node_id, _, _ in start))  # or nobody could be reached
    traversal = Traversal(target, b"\xff" * 20, start, k, alpha)
    holding: list[bytes] = []  # asked, neither answered nor stalled
    stalled: list[bytes] = []
    answered = False
    while not traversal.done():
        holding += [node_id for node_id, _, _ in traversal.next()]
        assert len(holding) <= alpha
        if not holding:  # every request out has stalled and nobody answered: their timeouts come
            assert not answered
            for node_id in stalled:
                traversal.failed(node_id)
            stalled.clear()
            continue
        node_id = holding.pop(rng.randrange(len(holding)))
        if node_id in dead:
            traversal.stalled(node_id)
            stalled.append(node_id)
        else:
            traversal.answered(node_id, [contact(n) for n in nearest[: k + len(dead)]])
            answered = True
    live = [node_id for node_id in nearest if node_id not in dead]
    assert [node_id for node_id, _, _ in traversal.closest()] == live[:k]
    assert traversal.rounds <= 2  # the start, then the nodes every answer names


def test_a_traversal_waits_for_stalled_requests_only_while_nobody_has_answered():
    one, two = bytes([1]) * 20, bytes([2]) * 20
    traversal = Traversal(bytes(20), b"\xff" * 20, [(one, "10.0.0.1", 1), (two, "10.0.0.2", 1)], 20, 3)
    assert len(traversal.next()) == 2
    traversal.stalled(one)
    traversal.stalled(two)
    assert not traversal.done()  # a slow moment must not end a lookup with nothing
    traversal.answered(two)  # late, but it counts
    assert traversal.done()
    assert [node_id for node_id, _, _ in traversal.closest()] == [two]
    # A node the caller knows to be silent is never asked.
    skipping = Traversal(bytes(20), b"\xff" * 20, [(one, "10.0.0.1", 1)], 20, 3, skip=lambda node_id: node_id == one)
    assert skipping.next() == []
    assert skipping.done()
