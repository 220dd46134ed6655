"""Known answers, as the SQLite store plants them in leases and judges what comes back.

A liar that says "ok" of everything is outvoted only on the share of its answers drawn for a
re-check (`rechecks`): it is checked more, never proven wrong. Work whose answer the
coordinator knows does that. When re-checks are on, a new unit of a job of URLs is granted
with a few of the same website's URLs of the same job whose answers are known
(`reputation.known_answers`: more for a key that has not proven itself) among its own, in no
telling order, as crawls when they were: the peer cannot tell them from its work. They are
kept beside the unit (`plants`), and take no part in it: their records are set aside when the
peer reports (`set_aside`), compared with what is known (`judge`), and never stored as
results.

What is known: an item of the job whose answers came from at least two peers and all agreed
(verdict "confirmed"), none of them the asking key's, none older than KNOWN_FRESH (a website
changes). An answer that could not reach the website proves nothing either way; one that
reached it and says otherwise counts against the key (`reputation.after_known_answer`), whose
record then quarantines it when it is wrong too often.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from coordinator import reputation, vantage, verdicts
from coordinator.sqlite import jobs, peers
from coordinator.sqlite.database import Database, chunks, placeholders
from overlay.wire import decode
from workloads.records import Record

KNOWN_FRESH = 6 * 3600.0  # seconds an agreed answer stays known: websites change
_CANDIDATES = 32  # the latest known items of a website a plant is drawn from


class Plant(NamedTuple):
    url: str
    item_id: int  # the known item


def plant(
    db: Database,
    conn: sqlite3.Connection,
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
    if (
        not db.settings.rechecks
        or facts.recheck_of is not None
        or facts.vantage is not None
        or not jobs.checker(db, conn, job_id).model.checked
        or jobs.checker(db, conn, job_id).model.input != "urls"
    ):
        return items
    wanted = reputation.known_answers(peers.record_of(conn, peer_id))
    candidates = conn.execute(
        "SELECT id, url, crawl FROM items WHERE unit_key = ? AND job_id = ? AND replica = 0 AND verdict = ?"
        " AND answered_by IS NOT ? AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.item_id = items.id"
        " AND (a.peer_id = ? OR a.at < ?)) ORDER BY id DESC LIMIT ?",
        (key, job_id, verdicts.State.CONFIRMED.value, peer_id, peer_id, now - KNOWN_FRESH, _CANDIDATES),
    ).fetchall()
    chosen = random.sample(candidates, min(wanted, len(candidates)))
    if not chosen:
        return items
    conn.executemany(
        "INSERT INTO plants (unit_id, peer_id, url, item_id) VALUES (?, ?, ?, ?)",
        [(unit_id, peer_id, url, item_id) for item_id, url, _ in chosen],
    )
    mixed = list(items)
    for _, url, crawl in chosen:
        mixed.insert(random.randint(0, len(mixed)), (url, bool(crawl)))
    return mixed


def plants_of(conn: sqlite3.Connection, peer_id: str, unit_ids: Sequence[int]) -> dict[int, dict[str, int | None]]:
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


def judge(
    db: Database, conn: sqlite3.Connection, job_id: int, peer_id: str, answers: list[tuple[int, Record]]
) -> Judged:
    """How the peer did on known answers: right, wrong (it reached the website and said
    otherwise); one that could not reach it is neither."""
    if not answers:
        return Judged(0, 0)
    model = jobs.checker(db, conn, job_id).model
    known = {
        item_id: verdicts.answer_of(model, decode(record), result, "", vantage.UNKNOWN)
        for chunk in chunks([item_id for item_id, _ in answers])
        for item_id, result, record in conn.execute(
            f"SELECT id, result, record FROM items WHERE id IN ({placeholders(chunk)})", chunk
        )
    }
    right = wrong = 0
    for item_id, r in answers:
        said = verdicts.answer_of(model, r.values, r.counted_as, peer_id, vantage.UNKNOWN)
        if item_id not in known or not said.reached:
            continue
        if said.value == known[item_id].value:
            right += 1
        else:
            wrong += 1
    return Judged(right, wrong)


def judged(conn: sqlite3.Connection, unit_id: int, urls: Sequence[str]) -> None:
    """These plants of a unit were answered (and judged): a record sent again is set aside
    without a second judgment."""
    conn.executemany("UPDATE plants SET judged = 1 WHERE unit_id = ? AND url = ?", [(unit_id, url) for url in urls])


def forget(conn: sqlite3.Connection, unit_id: int) -> None:
    """A unit's lease ended (its final report): its plants go."""
    conn.execute("DELETE FROM plants WHERE unit_id = ?", (unit_id,))
