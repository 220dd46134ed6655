"""The origin's reveal rules (overlay/origin/reveal.py), pure: which pieces each fetcher is
shown and served, under any sequence of joins, reports, sends, ticks and departures."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.origin.reveal import Reveal, Reveals, Settings

PIECES = 24
RULES = Settings(batch=3, few=1, settle=0.5, idle=1.0, stale=3.0, spare=0.25)

ops = st.lists(
    st.tuples(
        st.sampled_from(["join", "leave", "has", "served", "tick"]),
        st.integers(min_value=0, max_value=5),  # which peer
        st.integers(min_value=0, max_value=PIECES - 1),  # which piece (or how long a tick)
    ),
    max_size=80,
)


class Model:
    """The rules plus what each peer was told, checked after every step."""

    def __init__(self) -> None:
        self.rules = Reveal(PIECES, RULES)
        self.now = 0.0
        self.told: dict[int, set[int]] = {}
        self.has: dict[int, set[int]] = {}
        self.ever_all_out = False

    def take(self, reveals: Reveals) -> None:
        for peer, pieces in reveals.items():
            assert len(pieces) == len(set(pieces)), "a piece announced twice in one go"
            assert not set(pieces) & self.told[peer], "a piece announced twice"
            assert not set(pieces) & self.has[peer], "a piece announced to a peer that has it"
            self.told[peer].update(pieces)

    def step(self, op: str, peer: int, piece: int) -> None:
        if op == "join" and peer not in self.told:
            self.told[peer], self.has[peer] = set(), set()
            self.take({peer: self.rules.join(peer, self.now)})
        elif op == "leave" and peer in self.told:
            self.rules.leave(peer)
            del self.told[peer], self.has[peer]
        elif op == "has" and peer in self.told:
            self.has[peer].add(piece)
            self.take(self.rules.has(peer, [piece], self.now))
        elif op == "served" and peer in self.told and self.rules.may_serve(peer, piece):
            self.rules.served(peer, piece, self.now)
        elif op == "tick":
            self.now += piece / 4
            self.take(self.rules.tick(self.now))
        self.check()

    def check(self) -> None:
        self.ever_all_out |= self.rules.all_gone_out
        for peer, told in self.told.items():
            assert self.rules.shown(peer) == told
            for piece in range(PIECES):  # served: what it was shown (and what it has, once shown all)
                if piece not in self.has[peer]:
                    assert self.rules.may_serve(peer, piece) == (piece in told)
        partial = [p for p in self.told if len(self.told[p] | self.has[p]) < PIECES]  # not shown all
        for peer in partial:
            assert len(self.told[peer] - self.has[peer]) <= 2 * RULES.batch
        if not self.ever_all_out:  # until every piece went out once, none goes to two fetchers
            outstanding = [self.told[p] - self.has[p] for p in partial]
            for i, one in enumerate(outstanding):
                for other in outstanding[i + 1 :]:
                    assert not one & other


@given(ops)
def test_every_step_keeps_the_rules(steps: list[tuple[str, int, int]]) -> None:
    model = Model()
    for step in steps:
        model.step(*step)


def test_a_lone_fetcher_is_shown_everything_once_settled() -> None:
    rules = Reveal(PIECES, RULES)
    first = rules.join(1, 0.0)
    assert len(first) == RULES.batch
    assert rules.tick(0.1) == {}
    everything = rules.tick(0.6)[1]
    assert sorted(first + everything) == list(range(PIECES))


def test_several_fetchers_get_pieces_nobody_else_has_and_more_as_they_report() -> None:
    rules = Reveal(PIECES, RULES)
    a, b = rules.join(1, 0.0), rules.join(2, 0.0)
    assert len(a) == len(b) == RULES.batch and not set(a) & set(b)
    assert rules.tick(0.9) == {}  # two fetchers are not few: nobody is shown everything
    more = rules.has(1, [a[0]], 0.5)[1]
    assert len(more) == 1 and more[0] not in a + b
    assert rules.has(2, [a[0]], 0.5) == {}  # b got a piece a was given: nothing new for that


def test_an_idle_fetcher_is_shown_one_more_piece_per_idle_period() -> None:
    rules = Reveal(PIECES, RULES)
    rules.join(1, 0.0)
    rules.join(2, 0.0)
    assert rules.tick(0.9) == {}
    assert [len(v) for v in rules.tick(1.0).values()] == [1, 1]
    assert rules.tick(1.5) == {}


def test_pieces_of_a_fetcher_that_left_before_getting_them_go_out_again() -> None:
    rules = Reveal(4, Settings(batch=2, few=0))
    a = rules.join(1, 0.0)
    b = rules.join(2, 0.0)
    assert sorted(a + b) == [0, 1, 2, 3]
    rules.leave(1)
    assert not rules.all_gone_out
    assert sorted(rules.has(2, b, 0.1)[2]) == sorted(a)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=2, max_value=8), st.integers(min_value=0, max_value=2**32))
def test_a_swarm_completes_with_the_origin_sending_about_one_copy(fetchers: int, seed: int) -> None:
    """Fetchers take a shown piece from the origin or any piece from each other, in random
    order: all complete, and the origin sends no more than a copy, its spare share and the
    pieces in flight when the last went out."""
    rnd = random.Random(seed)  # a seeded generator: hypothesis's own shrinks to always the same peer
    rules = Reveal(PIECES, RULES)
    shown: dict[int, set[int]] = {}
    has: dict[int, set[int]] = {p: set() for p in range(fetchers)}
    for peer in range(fetchers):
        shown[peer] = set(rules.join(peer, 0.0))
    sent, now = 0, 0.0
    for _ in range(2000):
        if all(len(h) == PIECES for h in has.values()):
            break
        now += 0.05
        for peer, pieces in rules.tick(now).items():
            shown[peer].update(pieces)
        peer = rnd.randrange(fetchers)
        if len(has[peer]) == PIECES:
            continue
        from_others = set().union(*(has[o] for o in has if o != peer)) - has[peer]
        from_origin = shown[peer] - has[peer]
        if from_others and (not from_origin or rnd.random() < 0.7):
            piece = rnd.choice(sorted(from_others))
        elif from_origin:
            piece = rnd.choice(sorted(from_origin))
            rules.served(peer, piece, now)
            sent += 1
        else:
            continue
        has[peer].add(piece)
        for other, pieces in rules.has(peer, [piece], now).items():
            shown[other].update(pieces)
    assert all(len(h) == PIECES for h in has.values())
    assert sent <= PIECES * (1 + RULES.spare) + fetchers * RULES.batch
