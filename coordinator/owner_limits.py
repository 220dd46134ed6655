"""How much each owner may ask of the volunteers: jobs at once, URLs per job and per day, the
size of a bundle. Pure; the operator sets them per key (`osaas coordinator limits set`), the
defaults hold otherwise, and an operator's own requests have none.

Every URL a job checks is a request some volunteer makes to some website, so the limits bound
what one owner key can point the crowd at; an item or record of a job of items or records
counts as one URL (it is a volunteer's unit of work all the same). A refusal names the limit and when it resets. A job
that reaches its URL limits while crawling stops adding links (it is not failed): its status
says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from workloads.bundle.manifest import MAX_TOTAL_BYTES

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Limits:
    jobs_at_once: int = 10
    urls_per_job: int = 100_000
    urls_per_day: int = 1_000_000
    bundle_bytes: int = MAX_TOTAL_BYTES

    def __post_init__(self) -> None:
        for name in ("jobs_at_once", "urls_per_job", "urls_per_day", "bundle_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number, 0 or more")


DEFAULT = Limits()
NONE = Limits(2**62, 2**62, 2**62, 2**62)  # an operator's


def day_of(now: float) -> int:
    """The UTC day `now` falls in (days since the epoch): URLs per day are counted per day."""
    return int(now // DAY)


def resets(now: float) -> str:
    """When today's count starts again, for people."""
    return time.strftime("%Y-%m-%d 00:00 UTC", time.gmtime((day_of(now) + 1) * DAY))


def submit_refusal(
    limits: Limits, running_jobs: int, seeds: int, urls_today: int, now: float, what: str = "URLs"
) -> str | None:
    """Why a new job of `seeds` URLs is refused, or None. `what` the job's input is ("items",
    "records"): each counts as one URL."""
    counted = "" if what == "URLs" else f" (each of its {what} counts as one)"
    if running_jobs >= limits.jobs_at_once:
        return (
            f"limit reached: {limits.jobs_at_once} jobs at once ({running_jobs} running); "
            "it resets as one finishes (or is cancelled)"
        )
    if seeds > limits.urls_per_job:
        return f"limit reached: {limits.urls_per_job} URLs per job{counted}, this job has {seeds} to start with"
    if urls_today + seeds > limits.urls_per_day:
        return (
            f"limit reached: {limits.urls_per_day} URLs per day{counted} ({urls_today} used today);"
            f" it resets at {resets(now)}"
        )
    return None


def links_allowed(limits: Limits, job_urls: int, urls_today: int) -> int:
    """How many more URLs a running job may add now."""
    return max(0, min(limits.urls_per_job - job_urls, limits.urls_per_day - urls_today))


def links_limited(limits: Limits, job_urls: int, urls_today: int, now: float) -> str:
    """Why a job stopped adding links (the limit that left the least room), for its status."""
    if limits.urls_per_job - job_urls <= limits.urls_per_day - urls_today:
        return f"stopped adding links at the limit of {limits.urls_per_job} URLs per job"
    return f"stopped adding links at the limit of {limits.urls_per_day} URLs per day (it resets at {resets(now)})"


def bundle_refusal(limits: Limits, size: int) -> str | None:
    if size > limits.bundle_bytes:
        return f"limit reached: bundles of at most {limits.bundle_bytes} bytes, this one has {size}"
    return None
