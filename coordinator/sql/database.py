"""What the store's thread (or process) holds: the connection, the operator's settings, the
caches of what never changes, the last plan's timing and what each peer was seen to do lately;
one transaction per call.

Every function of the concept modules (peers, jobs, planning, leasing, reports, queries,
bundles) takes a `Database` first and runs on the store's one thread: nothing here is shared
with the event loop.
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from coordinator import assignment, host_pacing
from coordinator.host_planning import MAX_SETTLE, Replanning
from coordinator.sql import postgres, schema
from coordinator.sql.connection import Connection
from coordinator.store import DEFAULT_UNIT_SIZE, StoreError
from coordinator.url_jobs import JobInput
from coordinator.vantage import VantageRules
from workloads.records import Checker

T = TypeVar("T")

_SQL_VARIABLES = 500  # keys per IN (...) list, well under SQLite's limit


@dataclass(frozen=True, slots=True)
class Settings:
    """The operator's choices for the scheduler."""

    unit_size: int = DEFAULT_UNIT_SIZE  # the most items in one unit
    max_attempts: int = 5  # failed attempts before a unit's items are given up on
    min_delay: float = host_pacing.DEFAULT_MIN_DELAY  # the pause every host gets between units
    epsilon: float = assignment.DEFAULT_EPSILON  # a peer's load stays within (1 + ε) x its share
    settle: float = 0.0  # seconds the first plan waits after the first peer (host_planning.settled)
    vantage: VantageRules = VantageRules()  # what a network is, how long vantage jobs wait for one
    rechecks: bool = False  # answers of jobs whose model compares them are checked by other peers

    def __post_init__(self) -> None:
        if self.unit_size < 1 or self.max_attempts < 1:
            raise ValueError("unit_size and max_attempts must be at least 1")
        if not 0 <= self.min_delay <= host_pacing.MAX_MIN_DELAY:
            raise ValueError(f"host_min_delay must be 0..{host_pacing.MAX_MIN_DELAY:g} seconds")
        if not 0 < self.epsilon <= assignment.MAX_EPSILON:
            raise ValueError(f"epsilon must be above 0 and at most {assignment.MAX_EPSILON:g}")
        if not 0 <= self.settle <= MAX_SETTLE:
            raise ValueError(f"settle must be 0..{MAX_SETTLE:g} seconds")


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What never changes about a job and leasing needs."""

    workload: str  # its bundle's name
    pinned: str | None  # its bundle version; None: follows the rollout
    unit_size: int  # the most items in one of its units
    owner_key: str | None  # who submitted it; None: the operator, or before roles
    vantage: int | None  # vantage points per URL (`coordinator.vantage`); None: the job has none
    recheck_of: int | None = None  # a job of re-checks: whose (`coordinator.sql.rechecks`)


@dataclass(slots=True)
class Database:
    path: str
    settings: Settings = field(default_factory=Settings)
    conn: Connection | None = None
    # A replan is due after a restart, when peers registered, and when hosts without a peer got
    # work; `last_plan` says when the last one was made and what it cost.
    replan: bool = True
    last_plan: Replanning = field(default_factory=Replanning)
    first_peer_at: float | None = None  # when a peer was first heard from since open (settle)
    planned_once: bool = False
    forgot_at: float = -math.inf  # when quiet peers were last looked for (`peers.forget_quiet`)
    monotonic: Callable[[], float] = time.monotonic  # times plans (PLAN_SHARE)
    draw: Callable[[], float] = random.random  # which answers are checked again (`verdicts.needs_second_look`)
    job_inputs: dict[int, JobInput] = field(default_factory=dict)  # parsed inputs of recent jobs
    jobs: dict[int, JobFacts] = field(default_factory=dict)
    checkers: dict[int, Checker] = field(default_factory=dict)  # jobs' record checks (their models)

    @property
    def shared(self) -> bool:
        """May other coordinators use this store at the same time (PostgreSQL)?"""
        return postgres.is_postgres(self.path)

    def open(self) -> None:
        if postgres.is_postgres(self.path):
            self.conn = postgres.connect(self.path)
        else:
            try:
                self.conn = schema.connect(self.path)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self.replan = True
        self.last_plan = Replanning()
        self.first_peer_at = None
        self.planned_once = False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Connection]:
        conn = self.conn
        assert conn is not None, "store used before open()"
        if conn.in_transaction:
            # Inside a group commit (`thread`): this call's changes are a savepoint, taken
            # back alone if it fails; the group commits them with the others.
            conn.execute("SAVEPOINT call")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK TO call")
                conn.execute("RELEASE call")
                self.forget_cached()
                raise
            conn.execute("RELEASE call")
            return
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.forget_cached()
            raise

    def forget_cached(self) -> None:
        """After a rollback: what the caches learned inside it may never have been (a job id
        taken back is given to the next job), and a plan taken back must be made again."""
        self.jobs.clear()
        self.job_inputs.clear()
        self.replan = True


def chunks(values: list[T]) -> Iterator[list[T]]:
    """`values` in lists short enough for one IN (...) of SQL variables."""
    for start in range(0, len(values), _SQL_VARIABLES):
        yield values[start : start + _SQL_VARIABLES]


def placeholders(values: list[T]) -> str:
    """`?, ?, ...`: one per value, for an IN (...) list."""
    return ", ".join("?" * len(values))
