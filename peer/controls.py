"""The volunteer's controls of a running peer, and its pauses.

`Pauses` keeps the reason the peer takes no work now current (the rules are peer.states'):
whoever may have changed one of its causes calls `check`, the budget keeper every tick. When a
pause begins, the running units are given back at once: each releases its lease on the way out
(peer.unit_work), so another peer can take the website over.

`VolunteerControls` is what the local page (peer.local_page) changes: pause and resume, the
budget, whom to work for. Each change is kept beside the config file for the next start.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from overlay.torrent import TorrentSession
from peer import work_choice
from peer.allowance import Allowance
from peer.budget import Budget, save_budget
from peer.coordinator_choice import CoordinatorChoice
from peer.idle import AwaySense
from peer.states import PauseStep, pause_reason, pause_step, resumes_by_itself
from peer.work_choice import WorkChoice

log = logging.getLogger("peer.agent")  # one logger for the whole agent, as before it was split


class Pauses:
    """Why the peer takes no work now (`reason`, None while it works)."""

    def __init__(self, allowance: Allowance, away: AwaySense | None, running: set[asyncio.Task[None]]) -> None:
        self.held = False  # paused by the volunteer (local page)
        self.reason: str | None = None
        self._allowance = allowance
        self._away = away
        self._running = running  # the units under way, to give back when a pause begins

    def check(self) -> None:
        """Read the causes again and pause or resume as they say."""
        away = self._away.reason() if self._away is not None else None
        after = pause_reason(held=self.held, away=away, budget=self._allowance.pause_reason())
        step = pause_step(self.reason, after)
        if step is PauseStep.RESUME:
            log.info("resuming work: %s is over", self.reason)
        elif step is PauseStep.PAUSE:
            log.warning("pausing work: %s; giving back %d running unit(s)", after, len(self._running))
            for task in self._running:
                task.cancel()  # each releases its lease on the way out (peer.unit_work)
        self.reason = after

    def resume_at(self) -> float | None:
        """When the pause ends by itself at the latest (Unix seconds), for the budget's pauses;
        None when not paused, or for pauses without a known end."""
        if not resumes_by_itself(self.reason, self._allowance.pause_reason()):
            return None
        end = self._allowance.resume_at()
        return end.timestamp() if end is not None else None


def bundle_upload_limit(configured: int | None, budget: Budget) -> int | None:
    """The rate the peer seeds bundles at: the lower of its own limit and the budget's upload
    rate; None (no limit) when neither has one."""
    given = [rate for rate in (configured, budget.max_up) if rate is not None]
    return min(given) if given else None


class VolunteerControls:
    """The changes the volunteer makes on the local page, applied to the running peer."""

    def __init__(
        self,
        pauses: Pauses,
        allowance: Allowance,
        choice: CoordinatorChoice,
        *,
        config_path: Path | None,
        bundle_upload_rate: int | None,
        by_url: bool,
    ) -> None:
        self._pauses = pauses
        self._allowance = allowance
        self._choice = choice
        self._config_path = config_path  # None: changes are not kept
        self._bundle_upload_rate = bundle_upload_rate
        self.works_by_url = by_url  # started with a coordinator URL (no DHT node)
        self.torrents: TorrentSession | None = None  # while the peer runs: its bundle rates follow the budget

    def pause(self) -> None:
        """Stop working until `resume`: running units are given back at once."""
        self._pauses.held = True
        self._pauses.check()

    def resume(self) -> None:
        self._pauses.held = False
        self._pauses.check()

    def set_budget(self, budget: Budget) -> None:
        """Use `budget` from now on, and keep it in the config file for the next start."""
        if self._config_path is not None:
            save_budget(self._config_path, budget)
        self._allowance.reconfigure(budget)
        if self.torrents is not None:
            self.torrents.set_rates(
                upload_rate=bundle_upload_limit(self._bundle_upload_rate, budget), download_rate=budget.max_down
            )
        self._pauses.check()

    def set_work_choice(self, form: Any) -> WorkChoice:
        """Work for whom `form` says (peer.work_choice.changed), from the next lease on, and keep
        it beside the config file; raises WorkChoiceError, changing nothing, for a bad form.
        Units under way finish and are reported to the coordinator that leased them."""
        choice = work_choice.changed(self._choice.wanted, form, by_url=self.works_by_url)
        if self._config_path is not None:
            work_choice.save(self._config_path.with_name(work_choice.WORK_FILE), choice)
        if choice != self._choice.wanted:
            log.info(
                "the volunteer chose to work for %s",
                choice.coordinator
                or f"network {choice.network!r}" + (f", {choice.prefer} first" if choice.prefer else ""),
            )
            self._choice.change(choice)
        return choice
