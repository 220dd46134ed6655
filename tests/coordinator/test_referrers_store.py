"""Referrers in the SQLite store: the page each link was found on, kept as that page's item
(schema 15), at most `MAX_REFERRERS` per item with the rest counted, and what a file of
schema 14 kept by URL carried over."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from coordinator.sql import SqlStore, schema
from coordinator.sql.schema import MAX_REFERRERS
from overlay.wire import Report, encode
from tests.coordinator.conftest import Linkcheck, add_linkcheck, item, version_of
from tests.coordinator.test_sqlite_store import LEASE, T0, register
from workloads.bundle import DEFAULT_MODEL

REST = 1.0
PAGES = [f"http://a.test/p{i}" for i in range(MAX_REFERRERS + 5)]
SHARED = "http://a.test/shared"  # linked from every page


def _answer(payload: dict[str, Any]) -> dict[str, Any]:
    items = []
    for i in payload["items"]:
        url = i["url"]
        found = item(url, [SHARED] if url in PAGES else [], crawled=i["crawl"])
        if url == PAGES[1]:
            found["final_url"] = url + "/"  # it redirected: its links are on the page it ended at
        items.append(found)
    return {"items": items}


async def _crawl(store: SqlStore, job_id: int, now: float) -> None:
    """Lease and report until the job is done, each host resting between its units."""
    while (await store.job_status(job_id)).state != "done":
        await store.rebalance(now)
        for lease in await store.lease("p1", 8, ["linkcheck"], now, LEASE):
            answer = _answer(lease.payload)
            await store.report(
                "p1", Report(lease.unit_id, lease.token, 0, answer, bundle_version=version_of(lease)), now
            )
        now += REST


async def test_an_item_keeps_a_hundred_referrers_and_counts_the_rest(tmp_path: Path, linkcheck: Linkcheck) -> None:
    async with SqlStore(tmp_path / "c.sqlite", unit_size=50) as store:
        await add_linkcheck(store, linkcheck)
        await register(store, "p1")
        job_id = await store.create_job("linkcheck", {"urls": PAGES, "depth": None}, T0)
        await _crawl(store, job_id, T0)
        rows = {row["url"]: row for row in await store.job_results(job_id, 0, 1000)}
        problems = await store.job_results(job_id, 0, 1000, counted_as=("ok",))
    shared = rows[SHARED]
    assert len(shared["referrers"]) == MAX_REFERRERS and shared["more_referrers"] == 5
    assert shared["referrers"] == sorted(shared["referrers"])
    # A page that redirected is named where it ended, as its links were found there.
    assert PAGES[1] + "/" in shared["referrers"] and PAGES[1] not in shared["referrers"]
    assert len(set(shared["referrers"]) - {PAGES[1] + "/"} - set(PAGES)) == 0
    assert all(rows[page]["referrers"] == [] and rows[page]["more_referrers"] == 0 for page in PAGES)
    # A dashboard's page of problems reads them the same way.
    assert {row["url"]: row["more_referrers"] for row in problems}[SHARED] == 5


async def test_schema_14_referrers_become_pages_and_answering_keys_numbers(tmp_path: Path) -> None:
    path = tmp_path / "fourteen.sqlite"
    with sqlite3.connect(path) as conn:  # a file as schema 14 left it: referrers by URL
        conn.executescript(schema.SCHEMA + "".join(schema.MIGRATIONS[v] for v in range(2, 12)))
        schema.records_for_all(conn)
        conn.executescript(schema.MIGRATIONS[13] + schema.MIGRATIONS[14])
        conn.execute(
            "INSERT INTO jobs (id, workload, input, state, created_at, unit_size, model) VALUES"
            " (4, 'linkcheck', x'80', 'done', 1.0, 10, ?)",
            (encode(DEFAULT_MODEL.to_obj()),),
        )
        record = [["ok", 200, "http://a.test/moved/", [], None], ["ok", 200, "http://a.test/b", [], None]]
        conn.executemany(
            "INSERT INTO items (id, job_id, url, unit_key, depth, crawl, done, record) VALUES (?, 4, ?, 'k', ?, 1, 1, ?)",
            [
                (7, "http://a.test/moved", 0, encode(_fields(record[0]))),
                (9, "http://a.test/b", 1, encode(_fields(record[1]))),
                (10, "http://a.test/c", 1, encode(_fields(record[1]))),
            ],
        )
        conn.executemany(
            "INSERT INTO referrers (job_id, item_id, referrer_url) VALUES (4, ?, ?)",
            [
                (9, "http://a.test/moved/"),  # the page where item 7's redirect ended
                (10, "http://a.test/b"),  # a page by its own URL
                (10, "http://elsewhere.test/"),  # no page of the job: counted, not kept
            ],
        )
        conn.execute("UPDATE items SET answered_by = ? WHERE id IN (9, 10)", ("ab" * 32,))
        conn.execute("PRAGMA user_version = 14")
    conn.close()
    async with SqlStore(path) as store:
        rows = {row["url"]: row for row in await store.job_results(4, 0, 10)}
    assert (rows["http://a.test/b"]["referrers"], rows["http://a.test/b"]["more_referrers"]) == (
        ["http://a.test/moved/"],
        0,
    )
    assert (rows["http://a.test/c"]["referrers"], rows["http://a.test/c"]["more_referrers"]) == (["http://a.test/b"], 1)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT item_id, page_id FROM referrers ORDER BY item_id").fetchall() == [(9, 7), (10, 9)]
        # Who answered: a number of the keys table, not the key's 64 hex digits on every item.
        assert conn.execute(
            "SELECT items.id, keys.key FROM items LEFT JOIN keys ON keys.id = items.answerer ORDER BY items.id"
        ).fetchall() == [(7, None), (9, "ab" * 32), (10, "ab" * 32)]
    conn.close()


def _fields(values: list[Any]) -> list[Any]:
    """A link-check answer in the order the default model stores its fields."""
    answer = dict(zip(["result", "status", "final_url", "redirects", "error"], values, strict=True))
    return [answer[f.name] for f in DEFAULT_MODEL.stored]
