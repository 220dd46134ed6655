"""Known answers, as the SQLite store plants them in leases and judges what comes back.

A liar that says "ok" of everything is outvoted only on the share of its answers drawn for a
re-check (`rechecks`): it is checked more, never proven wrong. Work whose answer the
coordinator knows does that. When re-checks are on, a unit of a job of URLs (or of its
re-checks) is granted with a few of the same website's URLs of the same job whose answers are known
(`reputation.known_answers`: more for a key that has not proven itself) among its own, in no
telling order, as crawls when they were: the peer cannot tell them from its work. They are
kept beside the unit (`plants`), and take no part in it: their records are set aside when the
peer reports (`set_aside`), compared with what is known (`judge`), and never stored as
results.

What is known: an item of the job, or of an earlier job of the same bundle and model (a
website checked again), whose answers came from at least two peers and all agreed (verdict
"confirmed"), none of them the asking key's, none older than KNOWN_FRESH (a website changes);
of the unit's website, and none of the unit's own URLs. Fetched within the peer's lease of
the website, they keep its pace (one of another website would be a request outside its
lease, and a tell). A key holding a website from the start meets them once others checked
its first answers there (every one, while it is on probation: `reputation.recheck_share`).
An answer that could not reach the website proves nothing either way; one that reached it
and says otherwise counts against the key (`reputation.after_known_answer`), whose record
then quarantines it when it is wrong too often.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

from coordinator import reputation, vantage, verdicts
from coordinator.sql import jobs, kept_records, peers
from coordinator.sql.connection import Connection
from coordinator.sql.database import Database, chunks, placeholders
from overlay.wire import decode
from workloads.records import Record

KNOWN_FRESH = 6 * 3600.0  # seconds an agreed answer stays known: websites change
_CANDIDATES = 32  # the latest known items of a website a plant is drawn from


# An item of a job of the same bundle and model (parameters: the job) whose answers all
# agreed (the verdict), none of them the asking key's (twice), none older than the oldest
# answer time: the job's own, or a job's before it on the same website.
_KNOWN = (
    "job_id IN (SELECT id FROM jobs WHERE recheck_of IS NULL AND workload = (SELECT workload FROM jobs WHERE id = ?1)"
    " AND model = (SELECT model FROM jobs WHERE id = ?1)) AND replica = 0 AND verdict = ?2"
    " AND answerer IS DISTINCT FROM (SELECT id FROM keys WHERE key = ?3)"
    " AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.item_id = items.id AND (a.peer_id = ?3 OR a.at < ?4))"
)


def plant(
    db: Database,
    conn: Connection,
    peer_id: str,
    unit_id: int,
    job_id: int,
    key: str,
    items: list[tuple[str, bool]],
    now: float,
) -> list[tuple[str, bool]]:
    """The items of a unit's lease with known answers among them (the unit's items in their
    order, the known ones at random places); the plants kept for the report. A unit granted
    again gets new ones: its earlier holder's are dropped."""
    conn.execute("DELETE FROM plants WHERE unit_id = ?", (unit_id,))
    facts = jobs.job(db, conn, job_id)
    job_id = facts.recheck_of or job_id  # a re-check job's units carry its job's known answers
    if (
        not db.settings.rechecks
        or facts.vantage is not None
        or not jobs.checker(db, conn, job_id).model.checked
        or jobs.checker(db, conn, job_id).model.input != "urls"
    ):
        return items
    wanted = reputation.known_answers(peers.record_of(conn, peer_id))
    problems = jobs.checker(db, conn, job_id).model.problems
    candidates = conn.execute(
        f"SELECT id, url, crawl, result FROM items WHERE unit_key = ?5 AND {_KNOWN} ORDER BY id DESC LIMIT ?6",
        (job_id, verdicts.State.CONFIRMED.value, peer_id, now - KNOWN_FRESH, key, _CANDIDATES),
    ).fetchall()
    in_unit = {url for url, _ in items}
    latest = {c[1]: c for c in reversed(candidates) if c[1] not in in_unit}  # a URL once: its latest
    chosen = _mixed(list(latest.values()), wanted, problems)
    if not chosen:
        return items
    conn.executemany(
        "INSERT INTO plants (unit_id, peer_id, url, item_id) VALUES (?, ?, ?, ?)",
        [(unit_id, peer_id, url, item_id) for item_id, url, _, _ in chosen],
    )
    mixed = list(items)
    for _, url, crawl, _ in chosen:
        mixed.insert(random.randint(0, len(mixed)), (url, bool(crawl)))
    return mixed


def _mixed(
    candidates: list[tuple[int, str, int, str]], wanted: int, problems: Sequence[str]
) -> list[tuple[int, str, int, str]]:
    """Up to `wanted` of the candidates (id, url, crawl, result), problems and the rest taken
    in turn: one who says "ok" of everything is wrong on a known problem, one who says
    "broken" on a known "ok"."""
    bad = [c for c in candidates if c[3] in problems]
    good = [c for c in candidates if c[3] not in problems]
    random.shuffle(bad)
    random.shuffle(good)
    chosen: list[tuple[int, str, int, str]] = []
    while len(chosen) < wanted and (bad or good):
        for pool in (bad, good) if random.random() < 0.5 else (good, bad):
            if pool and len(chosen) < wanted:
                chosen.append(pool.pop())
    return chosen


def plants_of(conn: Connection, peer_id: str, unit_ids: Sequence[int]) -> dict[int, dict[str, int | None]]:
    """The known answers planted in these units' leases to this peer: unit -> url -> its known
    item, None once judged (a streamed record of it came already)."""
    found: dict[int, dict[str, int | None]] = {}
    for chunk in chunks(sorted(set(unit_ids))):
        for unit_id, url, item_id, judged in conn.execute(
            "SELECT unit_id, url, item_id, judged FROM plants"
            f" WHERE peer_id = ? AND unit_id IN ({placeholders(chunk)})",
            (peer_id, *chunk),
        ):
            found.setdefault(unit_id, {})[url] = None if judged else item_id
    return found


def set_aside(records: list[Record], planted: dict[str, int | None]) -> tuple[list[Record], list[tuple[int, Record]]]:
    """A report's records without those of planted items, and those not judged yet beside
    their known item (the first record of each). Those are marked judged in `planted`."""
    if not planted:
        return records, []
    kept: list[Record] = []
    known: list[tuple[int, Record]] = []
    for r in records:
        if r.url not in planted:
            kept.append(r)
            continue
        item_id = planted[r.url]
        if item_id is not None:
            known.append((item_id, r))
            planted[r.url] = None
    return kept, known


class Judged(NamedTuple):
    right: int
    wrong: int


def judge(db: Database, conn: Connection, job_id: int, peer_id: str, answers: list[tuple[int, Record]]) -> Judged:
    """How the peer did on known answers: right, wrong (it reached the website and said
    otherwise, or, of a crawled page, found links that stray from those its answers agreed
    on: `verdicts.links_stray`); one that could not reach it is neither."""
    if not answers:
        return Judged(0, 0)
    model = jobs.checker(db, conn, job_id).model
    known = {}
    crawled = set()
    for chunk in chunks([item_id for item_id, _ in answers]):
        for item_id, url, result, record, crawl in conn.execute(
            f"SELECT id, url, result, record, crawl FROM items WHERE id IN ({placeholders(chunk)})", chunk
        ):
            values = kept_records.unpack(record, url)
            known[item_id] = verdicts.answer_of(model, values, result, "", vantage.UNKNOWN)
            if crawl:
                crawled.add(item_id)
    links = _agreed_links(conn, sorted(crawled))
    right = wrong = 0
    for item_id, r in answers:
        said = verdicts.answer_of(model, r.values, r.counted_as, peer_id, vantage.UNKNOWN)
        if item_id not in known or not said.reached:
            continue
        follow = links.get(item_id)
        if said.value == known[item_id].value and (
            follow is None or not verdicts.links_stray(frozenset(r.links), follow)
        ):
            right += 1
        else:
            wrong += 1
    return Judged(right, wrong)


def _agreed_links(conn: Connection, item_ids: list[int]) -> dict[int, frozenset[str]]:
    """The links the answers of these crawled pages agreed on: where two found the same, or
    three or more decide (`verdicts.links_to_follow`); two that differ tell nothing."""
    found: dict[int, dict[str, frozenset[str]]] = {}
    for chunk in chunks(item_ids):
        for item_id, peer_id, links in conn.execute(
            "SELECT item_id, peer_id, links FROM answers"
            f" WHERE item_id IN ({placeholders(chunk)}) AND links IS NOT NULL",
            chunk,
        ):
            found.setdefault(item_id, {})[peer_id] = frozenset(decode(links))
    return {
        item_id: verdicts.links_to_follow(sets)
        for item_id, sets in found.items()
        if len(sets) >= 3 or (len(sets) == 2 and len(set(sets.values())) == 1)
    }


def judged(conn: Connection, unit_id: int, urls: Sequence[str]) -> None:
    """These plants of a unit were answered (and judged): a record sent again is set aside
    without a second judgment."""
    conn.executemany("UPDATE plants SET judged = 1 WHERE unit_id = ? AND url = ?", [(unit_id, url) for url in urls])


def forget(conn: Connection, unit_id: int) -> None:
    """A unit's lease ended (its final report): its plants go."""
    conn.execute("DELETE FROM plants WHERE unit_id = ?", (unit_id,))
