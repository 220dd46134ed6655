"""The peer's states and its pauses, without sockets: the pure table (peer.states), the pauses
of a real allowance and away sense read at times the test sets (peer.controls), and a real,
not running, Agent given the same clock."""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

from peer.agent import Agent, PeerSettings
from peer.allowance import Allowance
from peer.budget import ActiveHours, Budget
from peer.controls import Pauses
from peer.idle import MARK_FRESH, AwaySense
from peer.states import (
    PAUSED_BY_VOLUNTEER,
    STATES,
    PauseStep,
    State,
    pause_reason,
    pause_step,
    resumes_by_itself,
    state_of,
)

ROOT = Path(__file__).resolve().parents[2]
EVENING = datetime(2026, 11, 27, 20, 0)  # a Friday, outside 09:00-17:00
OFFICE_HOURS = ActiveHours.parse(["09:00-17:00"])
OUTSIDE = "outside active hours (09:00-17:00) until 09:00"

reasons = st.none() | st.text(min_size=1, max_size=20)
coordinators = st.none() | st.just("http://c.test")


@dataclass
class SetClock:
    """The peer's clock (peer.clock.Clock), set by the test."""

    at: datetime
    mono: float = 0.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.at.timestamp()

    def now(self) -> datetime:
        return self.at


# ---- the table ----------------------------------------------------------------------------


def test_the_table_names_every_state_once_and_so_does_the_architecture_page() -> None:
    names = [state for state, _ in STATES]
    assert sorted(names) == sorted(get_args(State))
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page.split("The peer (", 1)[1].split("\n\n", 2)[1]
    assert sorted(re.findall(r"^\| (\w+) \|", table, re.MULTILINE)[1:]) == sorted(names)  # [0]: the header


def test_each_row_of_the_table() -> None:
    assert state_of("outside active hours", "http://c.test", 2) == "paused"
    assert state_of(PAUSED_BY_VOLUNTEER, None, 0) == "paused"
    assert state_of(None, None, 0) == "looking"
    assert state_of(None, "http://c.test", 0) == "idle"
    assert state_of(None, "http://c.test", 3) == "working"


@given(paused=reasons, coordinator=coordinators, running=st.integers(0, 8))
def test_the_first_row_that_holds_is_the_state(paused: str | None, coordinator: str | None, running: int) -> None:
    state = state_of(paused, coordinator, running)
    assert (state == "paused") == (paused is not None)
    if paused is None:
        assert (state == "looking") == (coordinator is None)
        assert (state == "working") == (coordinator is not None and running > 0)


@given(held=st.booleans(), away=reasons, budget=reasons)
def test_the_volunteer_comes_first_then_the_person_then_the_budget(
    held: bool, away: str | None, budget: str | None
) -> None:
    reason = pause_reason(held=held, away=away, budget=budget)
    if held:
        assert reason == PAUSED_BY_VOLUNTEER
    elif away is not None:
        assert reason == away
    else:
        assert reason == budget


def test_a_pause_begins_changes_and_ends() -> None:
    assert pause_step(None, None) is PauseStep.STAYS
    assert pause_step(None, OUTSIDE) is PauseStep.PAUSE
    assert pause_step(OUTSIDE, OUTSIDE) is PauseStep.STAYS
    assert pause_step(OUTSIDE, PAUSED_BY_VOLUNTEER) is PauseStep.PAUSE  # give back anything started since
    assert pause_step(PAUSED_BY_VOLUNTEER, None) is PauseStep.RESUME


def test_only_the_budgets_pauses_end_by_themselves() -> None:
    assert resumes_by_itself(OUTSIDE, OUTSIDE)
    assert not resumes_by_itself(PAUSED_BY_VOLUNTEER, OUTSIDE)
    assert not resumes_by_itself(None, None)
    assert not resumes_by_itself("the computer is in use", None)


# ---- the pauses of a running peer, at the clock's time ------------------------------------


async def a_unit() -> None:
    """Stands for a unit under way: runs until given back."""
    await asyncio.Event().wait()


async def test_active_hours_pause_and_resume_the_peer_as_the_clock_moves(tmp_path: Path) -> None:
    clock = SetClock(EVENING)
    allowance = Allowance(Budget(active_hours=OFFICE_HOURS), tmp_path, clock=clock.now)
    running: set[asyncio.Task[None]] = set()
    unit = asyncio.create_task(a_unit())
    running.add(unit)
    pauses = Pauses(allowance, None, running)
    pauses.check()
    assert pauses.reason == OUTSIDE
    assert pauses.resume_at() == datetime(2026, 11, 28, 9, 0).timestamp()
    await asyncio.gather(unit, return_exceptions=True)
    assert unit.cancelled()  # given back at once

    clock.at = datetime(2026, 11, 28, 9, 0)
    pauses.check()
    assert pauses.reason is None and pauses.resume_at() is None


async def test_the_volunteers_pause_has_no_end_and_outranks_the_budget(tmp_path: Path) -> None:
    clock = SetClock(EVENING)
    pauses = Pauses(Allowance(Budget(active_hours=OFFICE_HOURS), tmp_path, clock=clock.now), None, set())
    pauses.held = True
    pauses.check()
    assert pauses.reason == PAUSED_BY_VOLUNTEER and pauses.resume_at() is None
    pauses.held = False
    pauses.check()
    assert pauses.reason == OUTSIDE


async def test_a_used_up_cap_pauses_until_the_next_period(tmp_path: Path) -> None:
    clock = SetClock(datetime(2026, 11, 27, 12, 0))
    allowance = Allowance(Budget(cap_bytes=1_000_000), tmp_path, clock=clock.now)
    pauses = Pauses(allowance, None, set())
    pauses.check()
    assert pauses.reason is None
    allowance.charge(down=1_000_000, up=0)
    pauses.check()
    assert pauses.reason is not None and pauses.reason.startswith("transfer cap of")
    assert pauses.resume_at() == datetime(2026, 11, 28, 0, 0).timestamp()
    clock.at += timedelta(days=1)
    pauses.check()
    assert pauses.reason is None


async def test_the_person_counts_as_away_while_the_screensaver_mark_is_fresh(tmp_path: Path) -> None:
    clock = SetClock(datetime(2026, 11, 27, 12, 0))
    mark = tmp_path / "screensaver-showing"
    mark.touch()
    touched = clock.time()
    os.utime(mark, (touched, touched))
    away = AwaySense(300.0, mark, display="", now=clock.time)  # no X here: the mark alone tells
    pauses = Pauses(Allowance(Budget(), tmp_path, clock=clock.now), away, set())
    pauses.check()
    assert pauses.reason is None
    clock.at += timedelta(seconds=MARK_FRESH + 1)
    pauses.check()
    assert pauses.reason is not None and pauses.reason.startswith("the osaas screensaver is not showing")
    assert pauses.resume_at() is None


def test_an_agent_reports_its_state_at_the_clocks_time(tmp_path: Path) -> None:
    clock = SetClock(EVENING)
    agent = Agent(
        PeerSettings(
            data_dir=tmp_path / "peer",
            coordinator="http://127.0.0.1:9",
            status_port=None,
            budget=Budget(active_hours=OFFICE_HOURS),
        ),
        clock=clock,
    )
    assert agent.status().state == "looking"  # not running: nothing checked the pauses yet
    agent.pause()
    status = agent.status()
    assert (status.state, status.paused, status.resume_at) == ("paused", PAUSED_BY_VOLUNTEER, None)
    agent.resume()
    status = agent.status()
    assert (status.state, status.paused) == ("paused", OUTSIDE)
    assert status.resume_at == datetime(2026, 11, 28, 9, 0).timestamp()
    clock.at = datetime(2026, 11, 28, 10, 0)
    agent.resume()
    status = agent.status()
    assert (status.state, status.paused, status.resume_at) == ("looking", None, None)
    assert status.usage.period_ends == datetime(2026, 11, 29, 0, 0).timestamp()
