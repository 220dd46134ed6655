"""The rules re-checks follow, pure (`coordinator.verdicts`, `coordinator.reputation`): who may
give an item another answer, what an item nobody came back to says, which links of a crawled
page its crawl follows and whose links stray; with properties over any answers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coordinator import reputation, verdicts
from coordinator.reputation import PeerRecord
from coordinator.verdicts import Answer, State
from tests.coordinator.test_trust_rules import answer, answers

LINKS = [f"http://a.test/{n}" for n in range(30)]
link_sets = st.frozensets(st.sampled_from(LINKS), max_size=30)


def test_a_peer_never_answers_an_item_twice_and_its_network_waits_while_another_is_about() -> None:
    first = [answer("a", "broken", "net-1")]
    assert not verdicts.may_recheck("a", "net-2", first, waited=1e9, about={"net-2"})
    assert verdicts.may_recheck("b", "net-2", first, waited=0.0, about={"net-1", "net-2"})
    # Of the answering network: only when no other network is about, or after a while.
    assert not verdicts.may_recheck("b", "net-1", first, waited=0.0, about={"net-1", "net-2"})
    assert verdicts.may_recheck("b", "net-1", first, waited=0.0, about={"net-1"})
    assert verdicts.may_recheck("b", "net-1", first, waited=verdicts.PREFER_OTHER_NETWORK, about={"net-1", "net-2"})


@given(answers, st.floats(0, 1e6), st.sets(st.sampled_from(["net-p0", "net-p1", "net-x"])))
def test_no_key_that_answered_may_answer_again(given_answers: list[Answer], waited: float, about: set[str]) -> None:
    for a in given_answers:
        assert not verdicts.may_recheck(a.peer, "net-x", given_answers, waited, about)


def test_an_item_nobody_came_back_to_keeps_what_it_has_and_blames_nobody() -> None:
    assert verdicts.given_up([answer("a", "broken")]).state is State.UNCONFIRMED
    assert verdicts.given_up([answer("a", "broken"), answer("b", "broken")]).state is State.CONFIRMED
    split = verdicts.given_up([answer("a", "ok"), answer("b", "broken")])
    assert split.state is State.DISPUTED and split.value == "broken"  # the worst shown, not hidden


@given(answers)
def test_given_up_is_one_of_the_answers_and_never_outvotes(given_answers: list[Answer]) -> None:
    settled = verdicts.given_up(given_answers)
    assert settled.value in {a.value for a in given_answers}
    assert settled.outvoted == ()
    assert sorted((*settled.agreed, *settled.unreached)) == sorted(a.peer for a in given_answers)


def test_a_link_made_up_or_withheld_is_outvoted_and_a_dynamic_page_is_not() -> None:
    page = frozenset(LINKS[:20])
    made_up = page | {f"http://a.test/junk/{n}" for n in range(50)}
    found = {"honest": page, "liar": made_up, "other": page}
    assert verdicts.links_to_follow(found) == page
    assert verdicts.link_outliers(found, answers=3) == ("liar",)
    assert verdicts.link_outliers({"honest": page, "liar": frozenset(), "other": page}, answers=3) == ("liar",)
    # A page that differs a little by visit blames nobody.
    dynamic = {"a": page, "b": page - {LINKS[0]}, "c": page | {LINKS[25]}}
    assert verdicts.link_outliers(dynamic, answers=3) == ()
    # Two that differ ask for a third while there is room; without, nobody is blamed and both
    # pages' links are followed.
    assert verdicts.link_outliers({"honest": page, "liar": made_up}, answers=2) is None
    assert verdicts.link_outliers({"honest": page, "liar": made_up}, answers=verdicts.MAX_ANSWERS + 1) == ()
    assert verdicts.links_to_follow({"honest": page, "liar": made_up}) == made_up


@given(st.dictionaries(st.sampled_from("abcde"), link_sets, min_size=1))
def test_links_followed_lie_between_what_all_found_and_what_any_found(found: dict[str, frozenset[str]]) -> None:
    follow = verdicts.links_to_follow(found)
    assert frozenset.intersection(*found.values()) <= follow <= frozenset().union(*found.values())
    outliers = verdicts.link_outliers(found, answers=len(found))
    if len(set(found.values())) == 1:
        assert outliers == ()
    if outliers:
        assert len(outliers) < len(found) or len(found) >= 3  # never all of two


def test_a_new_key_is_on_probation_every_answer_checked_until_enough_were() -> None:
    assert reputation.recheck_share(PeerRecord()) == 1.0
    almost = PeerRecord(agreed=reputation.PROBATION - 1)
    assert reputation.recheck_share(almost) == 1.0
    assert reputation.recheck_share(PeerRecord(agreed=reputation.PROBATION)) == reputation.NEW_SHARE
    assert reputation.recheck_share(PeerRecord(agreed=reputation.TRUSTED_AFTER)) == reputation.TRUSTED_SHARE
