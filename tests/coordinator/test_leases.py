"""The lease and fencing rules, pure: no SQLite, no sockets, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import leases
from coordinator.leases import AfterReport, UnitLease, UnitState, Verdict, after_unable, nobody_can

QUEUED = UnitLease(UnitState.QUEUED)


def test_grant_a_queued_unit() -> None:
    unit = leases.grant(QUEUED, "p1", now=100.0, lease_seconds=60.0, max_attempts=5)
    assert unit == UnitLease(UnitState.LEASED, token=1, peer_id="p1", expires_at=160.0)


def test_a_live_lease_is_not_eligible() -> None:
    unit = leases.grant(QUEUED, "p1", 100.0, 60.0, 5)
    assert not leases.is_eligible(unit, 159.9)
    assert leases.is_eligible(unit, 160.0)
    with pytest.raises(ValueError):
        leases.grant(unit, "p2", 159.9, 60.0, 5)


def test_regrant_after_expiry_counts_an_attempt_and_fences() -> None:
    first = leases.grant(QUEUED, "p1", 100.0, 60.0, 5)
    second = leases.grant(first, "p2", 200.0, 60.0, 5)
    assert second == UnitLease(UnitState.LEASED, 2, "p2", 260.0, attempts=1, last_error="lease expired")
    assert leases.judge_report(second, "p1", 1) is Verdict.STALE
    assert leases.judge_report(second, "p2", 2) is Verdict.ACCEPT
    assert leases.judge_report(second, "p1", 2) is Verdict.STALE


def test_expired_but_not_regranted_is_still_the_holders() -> None:
    unit = leases.grant(QUEUED, "p1", 100.0, 60.0, 5)
    assert leases.judge_report(unit, "p1", 1) is Verdict.ACCEPT
    assert leases.holds(unit, "p1", 1)


def test_last_expiry_gives_up_and_makes_the_old_token_stale() -> None:
    unit = UnitLease(UnitState.LEASED, token=4, peer_id="p1", expires_at=10.0, attempts=4)
    gave_up = leases.grant(unit, "p2", 20.0, 60.0, max_attempts=5)
    assert gave_up == UnitLease(
        UnitState.DONE, token=5, peer_id=None, expires_at=None, attempts=5, last_error="lease expired"
    )
    assert leases.give_up_message(gave_up) == "gave up after 5 attempts: lease expired"
    assert leases.judge_report(gave_up, "p1", 4) is Verdict.STALE


def test_completed_unit_answers_duplicates_only_to_its_finisher() -> None:
    done = leases.completed(leases.grant(QUEUED, "p1", 0.0, 60.0, 5))
    assert leases.judge_report(done, "p1", 1) is Verdict.DUPLICATE
    assert leases.judge_report(done, "p2", 1) is Verdict.STALE
    assert leases.judge_report(done, "p1", 0) is Verdict.STALE
    assert not leases.holds(done, "p1", 1)


def test_failed_requeues_then_gives_up() -> None:
    unit = leases.grant(QUEUED, "p1", 0.0, 60.0, 2)
    again = leases.failed(unit, "boom", max_attempts=2)
    assert again == UnitLease(UnitState.QUEUED, token=1, peer_id=None, expires_at=None, attempts=1, last_error="boom")
    assert leases.judge_report(again, "p1", 1) is Verdict.STALE
    final = leases.failed(leases.grant(again, "p1", 1.0, 60.0, 2), "boom 2", max_attempts=2)
    assert (final.state, final.attempts, final.token) == (UnitState.DONE, 2, 2)
    assert leases.judge_report(final, "p1", 2) is Verdict.DUPLICATE
    assert leases.give_up_message(final) == "gave up after 2 attempts: boom 2"


def test_renew_and_release() -> None:
    unit = leases.grant(QUEUED, "p1", 0.0, 60.0, 5)
    assert leases.renewed(unit, 50.0, 60.0).expires_at == 110.0
    assert leases.released(unit) == UnitLease(UnitState.QUEUED, token=1)


# ---- property: whatever peers do, a unit is finished at most once ----------------------

PEERS = ("p1", "p2", "p3")
_op = st.one_of(
    st.tuples(st.just("grant"), st.sampled_from(PEERS)),
    st.tuples(st.just("report"), st.integers(0, 20), st.sampled_from((0, 1, 2, 3)), st.booleans()),
    st.tuples(st.just("release"), st.integers(0, 20)),
    st.tuples(st.just("advance"), st.sampled_from((1.0, 30.0, 60.0, 120.0))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=60), st.integers(1, 4))
def test_no_sequence_of_operations_finishes_a_unit_twice(ops: list[tuple], max_attempts: int) -> None:
    unit = QUEUED
    now = 0.0
    issued: list[tuple[str, int]] = []  # every (peer, token) ever granted, current or not
    finishes = 0
    for op in ops:
        if op[0] == "grant" and leases.is_eligible(unit, now):
            unit = leases.grant(unit, op[1], now, 60.0, max_attempts)
            if unit.state is UnitState.DONE:
                finishes += 1
            else:
                issued.append((op[1], unit.token))
        elif op[0] in ("report", "release") and issued:
            peer, token = issued[op[1] % len(issued)]
            if op[0] == "release":
                if leases.holds(unit, peer, token):
                    unit = leases.released(unit)
                continue
            verdict = leases.judge_report(unit, peer, token)
            if verdict is Verdict.ACCEPT:
                # The duplicate flag replays the same report right after: it must change nothing.
                if op[2] == 2:
                    unit = leases.failed(unit, "boom", max_attempts)
                else:
                    unit = leases.completed(unit)
                finishes += unit.state is UnitState.DONE
                if op[3]:
                    assert leases.judge_report(unit, peer, token) in (Verdict.DUPLICATE, Verdict.STALE)
            elif verdict is Verdict.DUPLICATE:
                assert unit.state is UnitState.DONE
        elif op[0] == "advance":
            now += op[1]
        assert finishes == (1 if unit.state is UnitState.DONE else 0)
        assert unit.attempts <= max_attempts
        # Tokens only grow, so a token once superseded can never become current again.
        assert all(t <= unit.token for _, t in issued)


# ---- what a report does to its unit ------------------------------------------------------------

LEASED = leases.grant(QUEUED, "p1", 0.0, 60.0, 5)


def test_a_report_with_items_completes_the_unit() -> None:
    assert leases.after_report(LEASED, 0, 3, None, False, 5) == (leases.completed(LEASED), None)
    assert leases.after_report(LEASED, 1, 1, "some broken", False, 5).lease.state is UnitState.DONE


def test_exit_2_uses_an_attempt_unless_the_version_is_on_trial() -> None:
    failed = leases.after_report(LEASED, 2, 0, "crash", False, 5)
    assert failed.lease == UnitLease(UnitState.QUEUED, 1, None, None, attempts=1, last_error="crash")
    assert failed.give_up is None
    on_trial = leases.after_report(LEASED, 2, 0, "crash", True, 5)
    assert on_trial.lease == UnitLease(UnitState.QUEUED, 1, None, None, attempts=0, last_error="crash")


def test_exit_3_finishes_the_units_items_as_refused() -> None:
    refused = leases.after_report(LEASED, 3, 0, None, False, 5)
    assert refused.lease.state is UnitState.DONE
    assert refused.give_up == "workload refused the input: no reason given"


@settings(max_examples=100)
@given(
    exit_code=st.sampled_from([0, 1, 2]),
    attempts=st.integers(0, 10),
    max_attempts=st.integers(1, 10),
    on_trial=st.booleans(),
)
def test_a_unit_done_without_results_always_gives_its_items_up(
    exit_code: int, attempts: int, max_attempts: int, on_trial: bool
) -> None:
    # Whatever ends a unit without its items coming back must finish them with an error,
    # or its job would never end.
    after = leases.after_report(LEASED._replace(attempts=attempts), exit_code, 0, None, on_trial, max_attempts)
    if after.lease.state is UnitState.DONE:
        assert after.give_up is not None and after.give_up.startswith("gave up after")
    else:
        assert after.give_up is None and after.lease.state is UnitState.QUEUED


@pytest.mark.parametrize(
    ("stepped_aside", "able", "blamed"),
    [(1, 1, False), (1, 2, False), (2, 2, True), (2, 5, False), (3, 9, True), (0, 0, False), (1, 0, False)],
)
def test_a_unit_is_blamed_when_enough_peers_could_not_run_it(stepped_aside: int, able: int, blamed: bool) -> None:
    assert nobody_can(stepped_aside, able) is blamed


def test_unable_costs_no_attempt_until_nobody_can_run_the_unit() -> None:
    held = UnitLease(UnitState.LEASED, token=4, peer_id="p", expires_at=10.0, attempts=1)
    passed = after_unable(held, "bundle fetch stalled", False, max_attempts=3)
    assert passed == AfterReport(UnitLease(UnitState.QUEUED, 4, None, None, 1, "unable: bundle fetch stalled"))
    blamed = after_unable(held, "bundle fetch stalled", True, max_attempts=3)
    assert (blamed.lease.state, blamed.lease.attempts, blamed.give_up) == (UnitState.QUEUED, 2, None)
    last = after_unable(held._replace(attempts=2), "bundle fetch stalled", True, max_attempts=3)
    assert (last.lease.state, last.give_up) == (
        UnitState.DONE,
        "gave up after 3 attempts: no peer could run it: bundle fetch stalled",
    )
