"""Network certificates (overlay.certificates) and the rule DHT nodes apply under a coordinators
key (overlay.announcements `admission_problem`): pure, the clock passed in."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay import records, wire
from overlay.announcements import CoordinatorAnnouncement, admission_problem, coordinators_key, network_of_key
from overlay.certificates import (
    COORDINATOR,
    DELEGATE,
    MAX_CHAIN_BYTES,
    CertificateError,
    check_chain,
    decode_chain,
    encode_chain,
    issue,
)
from overlay.identity import Identity

NOW = 1_700_000_000.0
NETWORK_KEY, DELEGATE_KEY, COORD, OTHER = (Identity.generate() for _ in range(4))


def direct(subject: Identity = COORD, *, by: Identity = NETWORK_KEY, network: str = "net", ttl: float = 3600.0):
    return (issue(by, subject.public_key, network, COORDINATOR, NOW + ttl, NOW),)


def delegated(subject: Identity = COORD, *, delegate_ttl: float = 3600.0):
    delegation = issue(NETWORK_KEY, DELEGATE_KEY.public_key, "net", DELEGATE, NOW + delegate_ttl, NOW)
    return (delegation, issue(DELEGATE_KEY, subject.public_key, "net", COORDINATOR, NOW + 3600.0, NOW))


def problem(chain, *, subject: Identity = COORD, network: str = "net", now: float = NOW) -> str | None:
    try:
        check_chain(chain, network=network, network_key=NETWORK_KEY.public_key, subject=subject.public_key, now=now)
    except CertificateError as exc:
        return str(exc)
    return None


def test_a_network_admits_directly_or_through_one_delegate() -> None:
    assert problem(direct()) is None
    assert problem(delegated()) is None


@pytest.mark.parametrize(
    ("chain", "kwargs", "reason"),
    [
        (direct(by=OTHER), {}, "not signed by the network key"),  # self-made or another network's
        (direct(by=COORD), {}, "not signed by the network key"),  # a coordinator certifying itself
        (direct(network="other"), {}, "for network 'other'"),
        (direct(), {"subject": OTHER}, "admits another key"),  # someone else's certificate copied
        (direct(ttl=10.0), {"now": NOW + 11.0}, "expired"),
        (delegated(delegate_ttl=10.0), {"now": NOW + 11.0}, "expired"),  # the delegation ran out
        (delegated()[1:], {}, "not signed by the network key"),  # the delegate's cert without its delegation
        (delegated()[:1], {"subject": DELEGATE_KEY}, "role 'delegate'"),  # a delegate is no coordinator
        ((*delegated()[:1], *delegated()), {}, "1 to 2"),  # delegates cannot delegate again
        ((), {}, "1 to 2"),
    ],
)
def test_what_a_chain_must_not_be(chain, kwargs, reason) -> None:
    found = problem(chain, **kwargs)
    assert found is not None and reason in found
    assert "\n" not in found


def test_a_changed_field_breaks_the_signature() -> None:
    (cert,) = direct()
    later = dataclasses.replace(cert, expires_at=cert.expires_at + 86400.0)
    assert "bad signature" in (problem((later,)) or "")


def test_a_chain_round_trips_and_stays_small() -> None:
    chain = delegated()
    encoded = wire.encode(encode_chain(chain))
    assert decode_chain(wire.decode(encoded)) == chain
    long_name = "n" * 64
    delegation = issue(NETWORK_KEY, DELEGATE_KEY.public_key, long_name, DELEGATE, NOW + 60, NOW)
    coordinator = issue(DELEGATE_KEY, COORD.public_key, long_name, COORDINATOR, NOW + 60, NOW)
    assert len(wire.encode(encode_chain((delegation, coordinator)))) <= MAX_CHAIN_BYTES


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.binary(max_size=70) | st.text(max_size=70),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=7),
                    max_leaves=20))  # fmt: skip
def test_hostile_chains_are_one_line_errors(obj) -> None:
    try:
        decode_chain(obj)
    except CertificateError as exc:
        assert "\n" not in str(exc)


def test_dht_rule_under_a_coordinators_key() -> None:
    key = coordinators_key("net", NETWORK_KEY.public_key)
    assert network_of_key(key) == ("net", NETWORK_KEY.public_key)

    def record(signer: Identity, chain) -> records.SignedRecord:
        announcement = CoordinatorAnnouncement(signer.public_hex, "http://c", "net", 0, 0, ("linkcheck",), NOW, chain)
        return records.sign(signer, key, announcement.payload(), NOW, 60)

    assert admission_problem(record(COORD, direct()), key, NOW) is None
    assert admission_problem(record(COORD, delegated()), key, NOW) is None
    assert "not admitted" in (admission_problem(record(OTHER, direct()), key, NOW) or "")
    assert "not admitted" in (admission_problem(record(OTHER, ()), key, NOW) or "")
    withdrawal = records.sign(COORD, key, {"withdrawn": True, "cert": encode_chain(direct())}, NOW, 60)
    assert admission_problem(withdrawal, key, NOW) is None
    assert "not admitted" in (admission_problem(records.withdrawal(OTHER, key, NOW), key, NOW) or "")
    # A key that looks like a coordinators key but names no network key is refused outright.
    assert admission_problem(record(COORD, direct()), "osaas/v1/coordinators/net", NOW) is not None
    assert admission_problem(record(COORD, ()), "osaas/v1/swarm/00", NOW) is None  # other keys: no rule
