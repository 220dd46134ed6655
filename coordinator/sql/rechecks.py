"""Re-checks, as the SQLite store asks for them and settles them (`coordinator.verdicts`).

A job whose model names the fields answers must agree on (`JobModel.agree`) has answers
checked by other peers, when the operator turned re-checks on (`Settings.rechecks`): every
problem, and a share of the rest drawn by the answering key's record
(`reputation.recheck_share`), as long as some other peer that runs the job's bundle is about
(else one answer is all there can be).

- **Asking.** The item keeps its first answer, done, with the verdict "pending", and counts
  as open in its job (which does not end while an item waits for its verdict). The answer is
  kept in `answers`, and the question goes to the job's **re-check job** (a jobs row whose
  `recheck_of` names the job, made with its first re-check, ended with it): an item of the
  same URL (its replica says which answer it asks for), in its website's queue like any other
  item, so it keeps the website's pace and its one live lease. It is leased as its item was
  (a crawl when it was one), so a peer cannot tell a re-check from first work, and the links
  a re-check finds join its job like any page's: a liar that withheld them stops no crawl.
  The links do not decide a page's result (pages differ by visit, and a false problem would
  be worse), but answers that agree on it and found other links call for one more answer,
  and a key whose links the majority did not find is outvoted on its record
  (`verdicts.link_outliers`).
- **Who answers** (`allowed`, which leasing asks): never a peer that answered the item, and
  one of a network no answer came from while there is one about, for
  `verdicts.PREFER_OTHER_NETWORK` seconds (`verdicts.may_recheck`). A re-check job's units go
  to any peer, not only to the one the plan gave the website to (`leasing`).
- **Settling.** A re-check's answer joins the item's answers; `verdicts.settle` says whether
  they are final. If not, one more is asked for. If so, the item takes the final answer's
  record and the state (confirmed, region-dependent, outvoted, disputed), it is closed in its
  job, and each key's record learns whether it was confirmed or outvoted
  (`reputation.after_check`).
- **Nobody comes.** A re-check without a live lease is given up (`overdue`) once every
  peer about answered it already (the others left, paused, or stepped aside from its
  website: their bundle would not run) or once it waited
  `verdicts.RECHECK_WAIT`: the item takes what its answers say (`verdicts.given_up`,
  "unconfirmed" after one answer), and nobody is blamed.

Re-checks are fetches like any other: their peers' budgets pay for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from coordinator import host_planning, reputation, vantage, verdicts
from coordinator.sql import jobs, peers
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database, chunks, placeholders
from coordinator.store import PEER_QUIET_SECONDS
from coordinator.verdicts import Answer, Settled
from overlay.wire import decode, encode
from workloads.bundle import JobModel

log = logging.getLogger(__name__)

NOBODY_CAME = "no other peer came to check this answer again"  # a re-check given up


class Answered(NamedTuple):
    """An item a report (or a streamed batch) just finished, as re-checks need it."""

    job_id: int
    item_id: int
    url: str
    values: list[Any]  # the record's stored fields
    counted_as: str | None
    network: str | None  # the answering peer's, as the coordinator saw it
    links: list[str] | None = None  # a crawled page's (None: not a crawl)
    asked: bool = False  # a first answer that gets a second look (`Asking.judge`)


@dataclass(slots=True)
class Asking:
    """What one call's answers of a job get: which first answers are asked again (decided as
    they are taken, so that their links can wait for the verdict), and whose links wait."""

    model: JobModel
    share: float  # of the answering key's "ok" answers checked again
    peer_id: str
    recheck: bool  # the job is a re-check job: its answers' links wait for their verdict
    someone: Callable[[], bool]  # is another peer about to ask?
    draw: Callable[[], float]  # uniform in [0, 1): which "ok" answers are drawn
    _someone: bool | None = None

    @classmethod
    def of(cls, db: Database, conn: Connection, job_id: int, peer_id: str, now: float) -> Asking | None:
        """None for a job whose answers are not compared (re-checks off, a vantage job, a
        model without `agree`)."""
        facts = jobs.job(db, conn, job_id)
        model = jobs.checker(db, conn, job_id).model
        if facts.recheck_of is None and (not db.settings.rechecks or facts.vantage is not None or not model.checked):
            return None
        share = reputation.recheck_share(peers.record_of(conn, peer_id))
        return cls(
            model,
            share,
            peer_id,
            facts.recheck_of is not None,
            lambda: _someone_else(conn, facts.workload, {peer_id}, now),
            db.draw,
        )

    def judge(self, one: Answered) -> Answered:
        """The answer, marked `asked` when it is a first answer that needs a second look
        (`verdicts.needs_second_look`) and another peer is about to give it."""
        if self.recheck or not verdicts.needs_second_look(
            _answer(self.model, one, self.peer_id), self.share, self.draw()
        ):
            return one
        if self._someone is None:
            self._someone = self.someone()
        return one._replace(asked=self._someone)

    def defers(self, one: Answered) -> bool:
        """Do this answer's links wait for its item's verdict?"""
        return self.recheck or one.asked


class Waiting(NamedTuple):
    """A re-check waiting for a peer: its item of the re-check job, and when it was asked."""

    item_id: int
    job_id: int  # the re-check job's
    url: str
    asked_at: float | None


def after_answers(
    db: Database, conn: Connection, peer_id: str, answered: list[Answered], closed: dict[int, int], now: float
) -> None:
    """What follows a peer's answers: some are asked again, and re-checks' answers are
    settled. `closed` (items finished per job, about to be counted) is kept true: an item
    waiting for its verdict stays open, and one settled now is closed."""
    by_job: dict[int, list[Answered]] = {}
    for one in answered:
        by_job.setdefault(one.job_id, []).append(one)
    for job_id, answers in by_job.items():
        facts = jobs.job(db, conn, job_id)
        if facts.recheck_of is not None:
            _take_rechecks(db, conn, facts.recheck_of, job_id, peer_id, answers, closed, now)
        else:
            _first_answers(db, conn, job_id, peer_id, answers, closed, now)


def _first_answers(
    db: Database,
    conn: Connection,
    job_id: int,
    peer_id: str,
    answered: list[Answered],
    closed: dict[int, int],
    now: float,
) -> None:
    """Ask again for the answers that get a second look (`Asking.judge`)."""
    asked = [one for one in answered if one.asked]
    if not asked:
        return
    conn.executemany(
        "INSERT INTO answers (item_id, peer_id, network, result, record, links, at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (item_id, peer_id) DO NOTHING",
        [(one.item_id, peer_id, one.network, one.counted_as, encode(one.values), _links(one), now) for one in asked],
    )
    conn.executemany("UPDATE items SET verdict = ? WHERE id = ?", [(verdicts.PENDING, one.item_id) for one in asked])
    closed[job_id] = closed.get(job_id, 0) - len(asked)
    _ask(db, conn, job_id, [(one.item_id, one.url) for one in asked], now)


def _ask(db: Database, conn: Connection, job_id: int, asked: list[tuple[int, str]], now: float) -> None:
    """One more answer of each item (id, url) of the job, asked of its re-check job."""
    child = _recheck_job(conn, job_id, now)
    rows = []
    for item_id, url in asked:
        (replica,) = conn.execute(
            "SELECT COALESCE(MAX(replica), 0) + 1 FROM items WHERE job_id = ? AND url = ?", (child, url)
        ).fetchone()
        rows.append((child, replica, now, item_id))
    added = conn.executemany(
        "INSERT INTO items (job_id, url, unit_key, depth, crawl, replica, data, asked_at)"
        " SELECT ?, url, unit_key, depth, crawl, ?, data, ? FROM items WHERE id = ?",
        rows,
    ).rowcount
    conn.execute("UPDATE job_progress SET open_items = open_items + ? WHERE job_id = ?", (added, child))
    keys = sorted(
        {
            key
            for chunk in chunks([item_id for item_id, _ in asked])
            for (key,) in conn.execute(
                f"SELECT DISTINCT unit_key FROM items WHERE id IN ({placeholders(chunk)})", chunk
            )
        }
    )
    conn.executemany(
        "INSERT INTO queues (unit_key, job_id) VALUES (?, ?) ON CONFLICT DO NOTHING", [(key, child) for key in keys]
    )
    conn.executemany("INSERT INTO hosts (key) VALUES (?) ON CONFLICT DO NOTHING", [(key,) for key in keys])
    db.replan = db.replan or any(
        conn.execute("SELECT 1 FROM hosts WHERE key = ? AND peer_id IS NULL", (key,)).fetchone() for key in keys
    )


def _recheck_job(conn: Connection, job_id: int, now: float) -> int:
    """The job's re-check job, made on its first re-check: the same bundle, version and model;
    no owner of its own (it is no job of theirs to list or count)."""
    row = conn.execute("SELECT id FROM jobs WHERE recheck_of = ?", (job_id,)).fetchone()
    if row is not None:
        return int(row[0])
    child = conn.execute(
        "INSERT INTO jobs (workload, input, state, created_at, unit_size, bundle_version, max_urls, model, recheck_of)"
        " SELECT workload, input, 'running', ?, unit_size, bundle_version, max_urls, model, id FROM jobs WHERE id = ? RETURNING id",
        (now, job_id),
    ).fetchone()[0]
    assert child is not None
    conn.execute("INSERT INTO job_progress (job_id, open_items) VALUES (?, 0)", (child,))
    return child


def _take_rechecks(
    db: Database,
    conn: Connection,
    job_id: int,
    child: int,
    peer_id: str,
    answered: list[Answered],
    closed: dict[int, int],
    now: float,
) -> None:
    """A re-check job's answers join their items' answers; those that settle are final."""
    parents = _parents(conn, job_id, [one.url for one in answered])
    conn.executemany(
        "INSERT INTO answers (item_id, peer_id, network, result, record, links, at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (item_id, peer_id) DO NOTHING",
        [
            (parents[one.url], peer_id, one.network, one.counted_as, encode(one.values), _links(one), now)
            for one in answered
            if one.url in parents
        ],
    )
    model = jobs.checker(db, conn, job_id).model
    stored = answers_of(conn, model, [parents[one.url] for one in answered if one.url in parents])
    links = _links_of(conn, [parents[one.url] for one in answered if one.url in parents])
    again: list[tuple[int, str]] = []
    for one in answered:
        item_id = parents.get(one.url)
        if item_id is None:
            continue
        answers = [answer for answer, _ in stored.get(item_id, [])]
        settled = verdicts.settle(answers)
        outliers: tuple[str, ...] | None = ()
        if settled is not None:
            found = {p: found for p, found in links.get(item_id, {}).items() if p in settled.agreed}
            outliers = verdicts.link_outliers(found, len(answers))
        workload = jobs.job(db, conn, job_id).workload
        if settled is not None and outliers is not None:
            final = verdicts.without(settled, outliers)
        elif _someone_else(conn, workload, {a.peer for a in answers}, now):
            again.append((item_id, one.url))
            continue
        else:
            final = settled or verdicts.given_up(answers)
        if _final(db, conn, job_id, item_id, final, stored[item_id], closed):
            _follow_links(db, conn, job_id, item_id, final, links.get(item_id, {}), now)
    if again:
        _ask(db, conn, job_id, again, now)


def _links_of(conn: Connection, item_ids: list[int]) -> dict[int, dict[str, frozenset[str]]]:
    """The links each answer of these crawled pages found: item -> key -> links."""
    found: dict[int, dict[str, frozenset[str]]] = {}
    for chunk in chunks(sorted(set(item_ids))):
        for item_id, peer_id, links in conn.execute(
            f"SELECT item_id, peer_id, links FROM answers WHERE item_id IN ({placeholders(chunk)})"
            " AND links IS NOT NULL",
            chunk,
        ):
            found.setdefault(item_id, {})[peer_id] = frozenset(decode(links))
    return found


def _links(one: Answered) -> bytes | None:
    return None if one.links is None else encode(sorted(set(one.links)))


def _parents(conn: Connection, job_id: int, urls: list[str]) -> dict[str, int]:
    """The items of the job these URLs are (their first answer's), by URL."""
    found: dict[str, int] = {}
    for chunk in chunks(sorted(set(urls))):
        found.update(
            conn.execute(
                f"SELECT url, id FROM items WHERE job_id = ? AND replica = 0 AND url IN ({placeholders(chunk)})",
                (job_id, *chunk),
            ).fetchall()
        )
    return found


def answers_of(
    conn: Connection, model: JobModel, item_ids: list[int]
) -> dict[int, list[tuple[Answer, tuple[str | None, bytes]]]]:
    """Each item's answers in the order they came, beside each one's (result, record)."""
    found: dict[int, list[tuple[Answer, tuple[str | None, bytes]]]] = {}
    for chunk in chunks(sorted(set(item_ids))):
        for item_id, peer_id, network, result, record in conn.execute(
            f"SELECT item_id, peer_id, network, result, record FROM answers WHERE item_id IN ({placeholders(chunk)})"
            " ORDER BY id",
            chunk,
        ):
            answer = verdicts.answer_of(model, decode(record), result, peer_id, network or vantage.UNKNOWN)
            found.setdefault(item_id, []).append((answer, (result, record)))
    return found


def _final(
    db: Database,
    conn: Connection,
    job_id: int,
    item_id: int,
    settled: Settled,
    stored: list[tuple[Answer, tuple[str | None, bytes]]],
    closed: dict[int, int],
) -> bool:
    """The item takes its final answer (the first that says it) and state, once (False: it
    had been settled, or answered again); the keys whose answers were compared learn how
    they did."""
    result, record = next(kept for answer, kept in stored if answer.value == settled.value)
    if not conn.execute(
        "UPDATE items SET result = ?, record = ?, verdict = ?, answerer = ? WHERE id = ? AND verdict = ?",
        (result, record, settled.state.value, peers.key_number(conn, settled.agreed[0]), item_id, verdicts.PENDING),
    ).rowcount:
        return False  # answered again meanwhile (its first answer's key was quarantined)
    closed[job_id] = closed.get(job_id, 0) + 1
    if settled.state in (verdicts.State.CONFIRMED, verdicts.State.OUTVOTED):
        _judged(conn, settled.agreed if len(settled.agreed) > 1 else (), settled.outvoted)
    elif settled.state is verdicts.State.REGION_DEPENDENT:
        # Nobody lied, but a key that cannot reach what others reach is checked more (a key
        # that says "timeout" of everything would otherwise cost every answer three fetches
        # and never be doubted): it counts as outvoted, which makes it suspect, never quarantined.
        unreached = [a.peer for a, _ in stored if a.peer in settled.unreached and not a.reached]
        _judged(conn, settled.agreed if len(settled.agreed) > 1 else (), unreached)
    return True


def _follow_links(
    db: Database,
    conn: Connection,
    job_id: int,
    item_id: int,
    settled: Settled,
    found: Mapping[str, frozenset[str]],
    now: float,
) -> None:
    """A crawled page's verdict is in: the links its final answers agree on join its job
    (`verdicts.links_to_follow`)."""
    follow = verdicts.links_to_follow({peer: links for peer, links in found.items() if peer in settled.agreed})
    if not follow:
        return
    row = conn.execute("SELECT depth, crawl FROM items WHERE id = ?", (item_id,)).fetchone()
    if row is None or not row[1]:
        return
    jobs.add_links(db, conn, job_id, item_id, sorted(follow), row[0], now)


def _judged(conn: Connection, agreed: Iterable[str], outvoted: Iterable[str]) -> None:
    for peer_id, was_agreed in [*((p, True) for p in agreed), *((p, False) for p in outvoted)]:
        record = peers.record_of(conn, peer_id)
        peers.save_record(conn, peer_id, reputation.after_check(record, was_agreed))


def _someone_else(conn: Connection, workload: str, answered: Collection[str], now: float) -> bool:
    """Is a peer about, not quarantined, that runs `workload` and is none of `answered`?"""
    return any(
        peer_id not in answered and host_planning.runs_all(decode(names), (workload,))
        for peer_id, names in conn.execute(
            "SELECT id, workloads FROM peers WHERE last_seen >= ? AND quarantined IS NULL", (now - PEER_QUIET_SECONDS,)
        )
    )


def _answer(model: JobModel, one: Answered, peer_id: str) -> Answer:
    return verdicts.answer_of(model, one.values, one.counted_as, peer_id, one.network or vantage.UNKNOWN)


# ---- leasing ---------------------------------------------------------------------------------


def networks_about(conn: Connection, now: float) -> set[str]:
    """The networks of the peers about (not quarantined), as their lease requests came."""
    return {
        network
        for (network,) in conn.execute(
            "SELECT DISTINCT network FROM peers WHERE last_seen >= ? AND quarantined IS NULL AND network IS NOT NULL",
            (now - PEER_QUIET_SECONDS,),
        )
    }


def allowed(
    db: Database,
    conn: Connection,
    peer_id: str,
    network: str,
    waiting: list[Waiting],
    about: Collection[str],
    now: float,
) -> set[int]:
    """Which of these re-checks the asking peer may answer (`verdicts.may_recheck`)."""
    by_job: dict[int, list[Waiting]] = {}
    for one in waiting:
        by_job.setdefault(one.job_id, []).append(one)
    ok: set[int] = set()
    for child, of_child in by_job.items():
        job_id = jobs.job(db, conn, child).recheck_of
        assert job_id is not None
        parents = _parents(conn, job_id, [one.url for one in of_child])
        stored = answers_of(conn, jobs.checker(db, conn, job_id).model, list(parents.values()))
        for one in of_child:
            answers = [answer for answer, _ in stored.get(parents.get(one.url, -1), [])]
            waited = now - (now if one.asked_at is None else one.asked_at)
            if verdicts.may_recheck(peer_id, network, answers, waited, about):
                ok.add(one.item_id)
    return ok


# ---- nobody comes ----------------------------------------------------------------------------


def overdue(db: Database, conn: Connection, now: float) -> None:
    """Re-checks nobody is coming to give are given up, on websites without a live lease of
    them: those that waited RECHECK_WAIT, and those that waited PEER_QUIET_SECONDS while every
    peer about (that runs their bundle) answered them already. Their items take what their
    answers say (`verdicts.given_up`)."""
    rows = conn.execute(
        "SELECT items.id, items.job_id, items.unit_key, items.url, items.asked_at, jobs.recheck_of, jobs.workload"
        " FROM jobs CROSS JOIN items WHERE items.job_id = jobs.id AND jobs.recheck_of IS NOT NULL"
        " AND jobs.state = 'running' AND items.done = 0 AND items.asked_at <= ?",
        (now - PEER_QUIET_SECONDS,),
    ).fetchall()
    if not rows:
        return
    about = {
        peer_id: decode(names)
        for peer_id, names in conn.execute(
            "SELECT id, workloads FROM peers WHERE last_seen >= ? AND quarantined IS NULL", (now - PEER_QUIET_SECONDS,)
        )
    }
    aside: dict[str, set[str]] = {}  # a peer that stepped aside from a website takes none of it
    for key, peer_id in conn.execute("SELECT unit_key, peer_id FROM stepped_aside WHERE until > ?", (now,)):
        aside.setdefault(key, set()).add(peer_id)
    given_up: dict[tuple[int, str], list[tuple[int, str, int]]] = {}
    for item_id, child, key, url, asked_at, job_id, workload in rows:
        takers = {
            peer
            for peer, names in about.items()
            if host_planning.runs_all(names, (workload,)) and peer not in aside.get(key, ())
        }
        if asked_at > now - verdicts.RECHECK_WAIT and len(takers) > verdicts.MAX_ANSWERS + 1:
            continue  # more peers about than an item ever has answers: one of them will come
        if asked_at > now - verdicts.RECHECK_WAIT:
            parent = _parents(conn, job_id, [url]).get(url)
            answered = {
                a.peer
                for a, _ in answers_of(conn, jobs.checker(db, conn, job_id).model, [parent or -1]).get(parent or -1, [])
            }
            if takers - answered:
                continue
        given_up.setdefault((child, key), []).append((item_id, url, job_id))
    closed: dict[int, int] = {}
    gave_up = 0
    for (child, key), items in given_up.items():
        if jobs.live_lease(conn, child, key, now):
            continue
        gave_up += len(items)
        conn.executemany(
            "UPDATE items SET done = 1, result = 'error', failed = ? WHERE id = ?",
            [(NOBODY_CAME, item_id) for item_id, _, _ in items],
        )
        # Units left with nothing open are done; one that still holds later re-checks waits.
        conn.execute(
            "UPDATE units SET state = 'done', peer_id = NULL, expires_at = NULL WHERE job_id = ? AND unit_key = ?"
            " AND state != 'done' AND NOT EXISTS (SELECT 1 FROM items WHERE items.unit_key = units.unit_key"
            " AND items.job_id = units.job_id AND items.id BETWEEN units.first_item AND units.last_item"
            " AND items.done = 0)",
            (child, key),
        )
        closed[child] = closed.get(child, 0) + len(items)
        job_id = items[0][2]
        parents = _parents(conn, job_id, [url for _, url, _ in items])
        stored = answers_of(conn, jobs.checker(db, conn, job_id).model, list(parents.values()))
        found = _links_of(conn, list(parents.values()))
        for item_id in parents.values():
            if stored.get(item_id):
                final = verdicts.given_up([answer for answer, _ in stored[item_id]])
                if _final(db, conn, job_id, item_id, final, stored[item_id], closed):
                    _follow_links(db, conn, job_id, item_id, final, found.get(item_id, {}), now)
    for job_id, count in closed.items():
        jobs.items_closed(conn, job_id, count, now)
    if gave_up:
        log.info("%d re-checks given up: no other peer came to give them", gave_up)


def answers_by_item(conn: Connection, item_ids: list[int]) -> Mapping[int, list[str]]:
    """Each re-checked item's answers as its results row shows them, in the order they came:
    what each said and from which network ("broken from 192.0.2.0/24"); never which key (a
    peer's name is its volunteer's)."""
    found: dict[int, list[str]] = {}
    for chunk in chunks(item_ids):
        for item_id, network, result in conn.execute(
            f"SELECT item_id, network, result FROM answers WHERE item_id IN ({placeholders(chunk)}) ORDER BY id",
            chunk,
        ):
            found.setdefault(item_id, []).append(f"{result} from {network or vantage.UNKNOWN}")
    return found
