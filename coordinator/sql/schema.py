"""The SQLite store's schema, its migrations, and how a connection is opened.

Schema history (PRAGMA user_version); an older file is migrated in one transaction on open:
    1  jobs, units, items, referrers, peers
    2  owners, bundles (per-version unit counters), rollouts (per bundle name),
       jobs.bundle_version (NULL: the job follows its bundle's rollout)
    3  hosts (assigned peer and pace per unit key); peers.capacity, usage (used, cap,
       down_rate, up_rate, usage_at) and throughput; units.leased_at and renewed_at;
       job_progress (open items per job); items wait with unit_id NULL until a lease forms
       their unit;
       indexes for per-host leasing
    4  units built again with its state rule as comparisons (no temporary table per write)
    5  queues (per host and job: up to which item units took); units.first_item and
       last_item (a unit's items are that range) instead of items.unit_id
    6  grants (a key's role: operator, owner or viewer) instead of owners; audit (who changed
       what, when); limits (per key, set by the operator) and daily_urls (URLs a key's jobs
       added per UTC day); jobs.owner_key (NULL: before roles), cancelled_at, max_urls, urls
       and limited (why a job stopped adding links)
    7  stepped_aside (a host a peer could not work on, and until when it goes to others)
    8  bundles.rolled_back (the coordinator rolled the version back: it goes out again only
       by force); the version a rolled-back rollout names in its message is marked
    9  jobs.model (the job model its bundle declared; NULL before, until 12); items.record
       (the workload's record, msgpack: a list of the model's stored fields) and items.failed
       (why the platform gave up on the item) instead of the link-check columns, which rows
       from before keep; unit_logs (the stderr tails of failed units, as peers sent them)
    10 vantage points (`coordinator.vantage`): jobs.vantage (K, NULL without), items.replica and
       items.network (which vantage point an item is, the network that answered it) with items
       unique per (job, url, replica), built again for that; units.replica and units.network
       (the network of the peer it was last granted to: a vantage job's only)
    11 items.data (a records job's record, msgpack: what its unit's payload gives the
       workload; NULL for URLs and items, whose `url` column holds the item itself)
    12 every job has its model (jobs.model of the jobs before 9: what a manifest without [job]
       means) and every finished item its record: the link-check columns of items finished
       before 9 (status, final_url, redirects, error) become records and are dropped
    13 trust in what peers say: hosts.delay_claim and claimed_by (a Crawl-delay one peer saw,
       applied in full once a second peer sees as much: `host_pacing.delay`); units.version
       (the bundle version a unit was last granted with: its report must name it);
       peers.misreports (reports refused as the peer's doing, not its version's), agreed,
       outvoted, known_right, known_wrong and quarantined (why): its `reputation.PeerRecord`;
       items.answered_by (the peer whose record it holds: a quarantined key's are done again)
    14 re-checks (`coordinator.sql.rechecks`): jobs.recheck_of (a job's re-checks are a job
       of their own: an item per answer asked again, its replica the how-manieth); answers
       (each vantage point's answer of an item checked again); items.verdict (NULL when one
       answer was enough, else "pending" or a `verdicts.State`) and items.asked_at (when a
       re-check was asked for); peers.network (where its last lease request came from);
       plants (known answers planted in a unit's lease: `coordinator.sql.known_answers`)
    15 a smaller store per checked URL: referrers name the crawled page's item (page_id), not
       its URL, in a table without rowids (a referrer row cost 110 bytes, two thirds of the
       store); at most MAX_REFERRERS per item, and items.more_referrers counts the pages
       beyond them; keys (a number per peer key) and items.answerer (the number of the key
       whose record it holds) instead of items.answered_by (the key in 64 hex digits);
       retention (`coordinator.sql.retention`): jobs.deleted_at (its items, units and logs
       are deleted, in batches) and jobs.summary (what its status said when they went); items
       are indexed by host while open only (leasing reads no other), and those checked again
       by host too (known answers are drawn from them)
    16 several coordinators on one database (PostgreSQL): what each peer was seen to do
       (peers.observed_items, observed_at: its `reputation.Observed`, which weighs it in
       plans) is kept, not held by one coordinator; archives (each published version's
       archive, so every coordinator can seed every version: kept in PostgreSQL only, as a
       file's one coordinator has them in its bundle dir)

A job's items wait per host (their unit key: the origin) in id order, in a queue per host and
job whose cursor says up to which item they were taken into units.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable

from coordinator.sql import kept_records
from coordinator.store import StoreError
from overlay.wire import decode, encode
from workloads.bundle import DEFAULT_MODEL, model_from_obj

log = logging.getLogger(__name__)

# sqlite3 looks for an adapter for every parameter that is not an int, float or str, and an
# unregistered type costs it two failed attribute lookups with formatted error messages. NULLs
# and blobs are most of a result row's parameters: register them as they are.
sqlite3.register_adapter(type(None), lambda value: value)
sqlite3.register_adapter(bytes, bytes)

SCHEMA_VERSION = 16
MAX_REFERRERS = 100  # pages kept per item that link to it; more are counted, not kept
MAX_ID = 2**63 - 1  # SQLite's INTEGER range; msgpack can carry larger numbers

# ---- what the schema means, as SQL fragments the store's queries share ------------------------

# A unit's open items: the items of its host and job in its range not done yet (parameters:
# unit_key, job_id, first_item, last_item). An item is finished only as part of a unit.
UNIT_ITEMS = "unit_key = ? AND job_id = ? AND id BETWEEN ? AND ? AND done = 0"
# Does queue `q` hold items not taken into a unit yet? (Done items above a cursor are left by
# files of schema 4 only.)
WAITING = "EXISTS (SELECT 1 FROM items WHERE unit_key = q.unit_key AND job_id = q.job_id AND id > q.taken_through AND done = 0)"
# The waiting items themselves, each beside its queue `q`.
QUEUED_ITEMS = (
    "queues q JOIN items ON items.unit_key = q.unit_key AND items.job_id = q.job_id"
    " AND items.id > q.taken_through AND items.done = 0"
)

SCHEMA = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    workload TEXT NOT NULL,
    input BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done')),
    created_at REAL NOT NULL,
    finished_at REAL,
    unit_size INTEGER NOT NULL
);
CREATE TABLE units (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    unit_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done')),
    token INTEGER NOT NULL DEFAULT 0,
    peer_id TEXT,
    expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX units_by_state ON units(state, id);
CREATE INDEX units_by_job ON units(job_id, state);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    url TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    depth INTEGER NOT NULL,
    crawl INTEGER NOT NULL,
    unit_id INTEGER REFERENCES units(id),
    result TEXT,
    status INTEGER,
    final_url TEXT,
    redirects BLOB,
    error TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job_id, url)
);
CREATE INDEX items_by_unit ON items(unit_id);
CREATE INDEX items_unassigned ON items(job_id, id) WHERE unit_id IS NULL AND done = 0;
CREATE TABLE referrers (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    item_id INTEGER NOT NULL REFERENCES items(id),
    referrer_url TEXT NOT NULL,
    UNIQUE (job_id, item_id, referrer_url)
);
CREATE TABLE peers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    slots INTEGER NOT NULL,
    workloads BLOB NOT NULL,
    version TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""

# Schema version -> the statements that lift the previous version to it (or, in
# MIGRATIONS_IN_PYTHON, the function that does: a step that needs more than SQL).
MIGRATIONS = {
    2: """
CREATE TABLE owners (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    added_at REAL NOT NULL
);
CREATE TABLE bundles (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    owner_key TEXT NOT NULL,
    info_hash BLOB NOT NULL,
    archive_sha256 BLOB NOT NULL,
    manifest BLOB NOT NULL,
    published_at REAL NOT NULL,
    units_ok INTEGER NOT NULL DEFAULT 0,
    units_failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
CREATE TABLE rollouts (
    name TEXT PRIMARY KEY,
    owner_key TEXT NOT NULL,
    stable TEXT NOT NULL,
    candidate TEXT,
    percent INTEGER NOT NULL CHECK (percent BETWEEN 0 AND 100),
    state TEXT NOT NULL CHECK (state IN ('stable', 'rolling_out', 'rolled_back')),
    message TEXT NOT NULL,
    candidate_ok INTEGER NOT NULL DEFAULT 0,
    candidate_failed INTEGER NOT NULL DEFAULT 0
);
ALTER TABLE jobs ADD COLUMN bundle_version TEXT;
""",
    # Units are formed at lease time now: items wait with unit_id NULL. Units and items a
    # schema 2 file holds stay as they are: its queued units are leased as they are. Every
    # index costs a page write per unit at each commit, so there are few: a job counts its
    # open items instead of indexing them (in a table of its own: a jobs row holds the job's
    # input, which an update would rewrite), and hosts are indexed by peer, not by pace.
    3: """
ALTER TABLE peers ADD COLUMN capacity REAL NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN used INTEGER;
ALTER TABLE peers ADD COLUMN cap INTEGER;
ALTER TABLE peers ADD COLUMN down_rate REAL;
ALTER TABLE peers ADD COLUMN up_rate REAL;
ALTER TABLE peers ADD COLUMN usage_at REAL;
ALTER TABLE peers ADD COLUMN throughput REAL;
CREATE INDEX peers_by_last_seen ON peers(last_seen);
CREATE TABLE hosts (
    key TEXT PRIMARY KEY,
    peer_id TEXT REFERENCES peers(id),
    next_allowed_at REAL NOT NULL DEFAULT 0,
    crawl_delay REAL NOT NULL DEFAULT 0,
    backoff REAL NOT NULL DEFAULT 0
);
CREATE INDEX hosts_by_peer ON hosts(peer_id) WHERE peer_id IS NOT NULL;
ALTER TABLE units ADD COLUMN leased_at REAL;
ALTER TABLE units ADD COLUMN renewed_at REAL;
DROP INDEX units_by_state;
CREATE INDEX units_open ON units(unit_key, id) WHERE state != 'done';
DROP INDEX items_unassigned;
CREATE INDEX items_waiting ON items(unit_key, job_id, id) WHERE unit_id IS NULL AND done = 0;
CREATE TABLE job_progress (
    job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
    open_items INTEGER NOT NULL
);
INSERT INTO job_progress (job_id, open_items)
    SELECT jobs.id, (SELECT COUNT(*) FROM items WHERE items.job_id = jobs.id AND items.done = 0) FROM jobs;
INSERT INTO hosts (key) SELECT DISTINCT unit_key FROM items WHERE done = 0;
""",
    # `state IN (...)` in a CHECK builds a temporary table each time a units row is written
    # (every lease and report); the same rule as comparisons does not. SQLite cannot change a
    # constraint in place: the table is built again and its rows copied, ids and all (foreign
    # keys are off around a migration, so items keep pointing at the same units).
    4: """
CREATE TABLE units_4 (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    unit_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'queued' OR state = 'leased' OR state = 'done'),
    token INTEGER NOT NULL DEFAULT 0,
    peer_id TEXT,
    expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    leased_at REAL,
    renewed_at REAL
);
INSERT INTO units_4 (id, job_id, unit_key, state, token, peer_id, expires_at, attempts, last_error,
                     leased_at, renewed_at)
    SELECT id, job_id, unit_key, state, token, peer_id, expires_at, attempts, last_error,
           leased_at, renewed_at FROM units;
DROP TABLE units;
ALTER TABLE units_4 RENAME TO units;
CREATE INDEX units_by_job ON units(job_id, state);
CREATE INDEX units_open ON units(unit_key, id) WHERE state != 'done';
""",
    # Marking each item with its unit cost a lease, per item, the row and two index entries
    # (and the report the same again): most of the store's time. Now a host's items of a job
    # are taken in id order: a queue row per (host, job) says up to which item they were
    # taken, and a unit is the range of them it took (the items of its range not done). New
    # items always get higher ids, so a range never gains an item. Items a partial report
    # left out form a unit of their own.
    5: """
ALTER TABLE units ADD COLUMN first_item INTEGER;
ALTER TABLE units ADD COLUMN last_item INTEGER;
UPDATE units SET first_item = (SELECT MIN(id) FROM items WHERE unit_id = units.id AND done = 0),
                 last_item = (SELECT MAX(id) FROM items WHERE unit_id = units.id AND done = 0)
    WHERE state != 'done';
CREATE TABLE queues (
    unit_key TEXT NOT NULL,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    taken_through INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_key, job_id)
) WITHOUT ROWID;
INSERT INTO queues (unit_key, job_id, taken_through)
    SELECT unit_key, job_id, COALESCE(MIN(CASE WHEN unit_id IS NULL AND done = 0 THEN id END) - 1, MAX(id))
    FROM items GROUP BY unit_key, job_id;
DROP INDEX items_by_unit;
DROP INDEX items_waiting;
ALTER TABLE items DROP COLUMN unit_id;
CREATE INDEX items_by_host ON items(unit_key, job_id, id);
""",
    6: """
CREATE TABLE grants (
    public_key TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('operator', 'owner', 'viewer')),
    added_at REAL NOT NULL
);
INSERT INTO grants (public_key, name, role, added_at) SELECT public_key, name, 'owner', added_at FROM owners;
DROP TABLE owners;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE limits (
    public_key TEXT PRIMARY KEY,
    jobs_at_once INTEGER NOT NULL,
    urls_per_job INTEGER NOT NULL,
    urls_per_day INTEGER NOT NULL,
    bundle_bytes INTEGER NOT NULL
);
CREATE TABLE daily_urls (
    public_key TEXT NOT NULL,
    day INTEGER NOT NULL,
    urls INTEGER NOT NULL,
    PRIMARY KEY (public_key, day)
);
ALTER TABLE jobs ADD COLUMN owner_key TEXT;
ALTER TABLE jobs ADD COLUMN cancelled_at REAL;
ALTER TABLE jobs ADD COLUMN max_urls INTEGER;
ALTER TABLE jobs ADD COLUMN urls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN limited TEXT;
UPDATE jobs SET urls = (SELECT COUNT(*) FROM items WHERE items.job_id = jobs.id);
CREATE INDEX jobs_by_owner ON jobs(owner_key, state);
""",
    7: """
CREATE TABLE stepped_aside (
    unit_key TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (unit_key, peer_id)
);
""",
    # Only the last rollback of a name was kept (in its rollout's message, `coordinator.rollout.judge`).
    8: """
ALTER TABLE bundles ADD COLUMN rolled_back INTEGER NOT NULL DEFAULT 0;
UPDATE bundles SET rolled_back = 1 WHERE EXISTS (
    SELECT 1 FROM rollouts WHERE rollouts.name = bundles.name AND rollouts.state = 'rolled_back'
        AND rollouts.message LIKE 'rolled back ' || bundles.name || ' ' || bundles.version || ':%');
""",
    9: """
ALTER TABLE jobs ADD COLUMN model BLOB;
ALTER TABLE items ADD COLUMN record BLOB;
ALTER TABLE items ADD COLUMN failed TEXT;
CREATE TABLE unit_logs (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    unit_id INTEGER NOT NULL,
    peer_id TEXT NOT NULL,
    at REAL NOT NULL,
    exit_code INTEGER NOT NULL,
    error TEXT,
    log TEXT NOT NULL
);
CREATE INDEX unit_logs_by_job ON unit_logs(job_id, id);
""",
    # An item was unique per (job, url); a vantage job has a URL once per vantage point. SQLite
    # cannot change a UNIQUE constraint in place: the table is built again, ids and all (as
    # units were for schema 4), with its index.
    10: """
CREATE TABLE items_10 (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    url TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    depth INTEGER NOT NULL,
    crawl INTEGER NOT NULL,
    result TEXT,
    status INTEGER,
    final_url TEXT,
    redirects BLOB,
    error TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    record BLOB,
    failed TEXT,
    replica INTEGER NOT NULL DEFAULT 0,
    network TEXT,
    UNIQUE (job_id, url, replica)
);
INSERT INTO items_10 (id, job_id, url, unit_key, depth, crawl, result, status, final_url, redirects, error, done,
                      record, failed)
    SELECT id, job_id, url, unit_key, depth, crawl, result, status, final_url, redirects, error, done, record, failed
    FROM items;
DROP TABLE items;
ALTER TABLE items_10 RENAME TO items;
CREATE INDEX items_by_host ON items(unit_key, job_id, id);
ALTER TABLE jobs ADD COLUMN vantage INTEGER;
CREATE INDEX jobs_with_vantage ON jobs(state) WHERE vantage IS NOT NULL;
ALTER TABLE units ADD COLUMN replica INTEGER NOT NULL DEFAULT 0;
ALTER TABLE units ADD COLUMN network TEXT;
""",
    11: """
ALTER TABLE items ADD COLUMN data BLOB;
""",
}

# The columns items finished before job models (schema 9) kept the link checker's answers in.
_LINK_CHECK_COLUMNS = ("status", "final_url", "redirects", "error")


def records_for_all(conn: sqlite3.Connection) -> None:
    """Schema 12: a job from before job models follows what a manifest without [job] means,
    and its finished items get records of that model, made of the columns they were kept in;
    the columns go. Every results row is then read one way."""
    conn.execute("UPDATE jobs SET model = ? WHERE model IS NULL", (encode(DEFAULT_MODEL.to_obj()),))
    rows = conn.execute(
        "SELECT id, result, status, final_url, redirects, error FROM items"
        " WHERE done = 1 AND record IS NULL AND failed IS NULL"
    )
    updates = []
    for item_id, result, status, final_url, redirects, error in rows:
        answer = {
            "result": result,
            "status": status,
            "final_url": final_url,
            "redirects": [] if redirects is None else decode(redirects),
            "error": error,
        }
        updates.append((encode([answer[field.name] for field in DEFAULT_MODEL.stored]), item_id))
    conn.executemany("UPDATE items SET record = ? WHERE id = ?", updates)
    for column in _LINK_CHECK_COLUMNS:
        conn.execute(f"ALTER TABLE items DROP COLUMN {column}")


def smaller_items(conn: sqlite3.Connection) -> None:
    """Schema 15: each referrer URL becomes the item of the page it names, in the same job:
    the page with that URL, else the page its model's `links_at` field (where a redirect
    ended) names. One job at a time, so memory holds one job's pages. A URL naming no page of
    its job (none should) is counted in the item's more_referrers, like those past the cap. And
    who answered an item is a number of the keys table."""
    _execute_script(
        conn,
        """
        CREATE TABLE referrers_15 (
            item_id INTEGER NOT NULL REFERENCES items(id),
            page_id INTEGER NOT NULL,  -- an item of the same job; no foreign key, so a job's
            -- items can be deleted in batches (`retention`) in any order
            PRIMARY KEY (item_id, page_id)
        ) WITHOUT ROWID;
        ALTER TABLE items ADD COLUMN more_referrers INTEGER NOT NULL DEFAULT 0;
        """,
    )
    job_ids = [job_id for (job_id,) in conn.execute("SELECT DISTINCT job_id FROM referrers").fetchall()]
    for job_id in job_ids:
        (raw,) = conn.execute("SELECT model FROM jobs WHERE id = ?", (job_id,)).fetchone()
        model = model_from_obj(decode(raw))
        at = [f.name for f in model.stored].index(model.links_at) if model.links_at is not None else None
        pages: dict[str, int] = {}
        landed: dict[str, int] = {}
        for page_id, url, record in conn.execute(
            "SELECT id, url, record FROM items WHERE job_id = ? AND crawl = 1 ORDER BY id", (job_id,)
        ):
            pages.setdefault(url, page_id)
            values = kept_records.unpack(record, url) if at is not None and record is not None else []
            if at is not None and at < len(values) and isinstance(values[at], str):
                landed.setdefault(values[at], page_id)
        kept: dict[int, int] = {}
        more: dict[int, int] = {}
        rows = []
        for item_id, url in conn.execute(
            "SELECT item_id, referrer_url FROM referrers WHERE job_id = ? ORDER BY item_id, rowid", (job_id,)
        ):
            page_id = pages.get(url, landed.get(url))
            if page_id is None or kept.get(item_id, 0) >= MAX_REFERRERS:
                more[item_id] = more.get(item_id, 0) + 1
                continue
            kept[item_id] = kept.get(item_id, 0) + 1
            rows.append((item_id, page_id))
        conn.executemany("INSERT OR IGNORE INTO referrers_15 (item_id, page_id) VALUES (?, ?)", rows)
        conn.executemany("UPDATE items SET more_referrers = ? WHERE id = ?", [(n, i) for i, n in more.items()])
    _execute_script(conn, "DROP TABLE referrers;\nALTER TABLE referrers_15 RENAME TO referrers;\n")
    _execute_script(
        conn,
        """
        CREATE TABLE keys (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
        INSERT INTO keys (key) SELECT DISTINCT answered_by FROM items WHERE answered_by IS NOT NULL;
        ALTER TABLE items ADD COLUMN answerer INTEGER REFERENCES keys(id);
        UPDATE items SET answerer = (SELECT id FROM keys WHERE key = items.answered_by) WHERE answered_by IS NOT NULL;
        ALTER TABLE items DROP COLUMN answered_by;
        ALTER TABLE jobs ADD COLUMN deleted_at REAL;
        ALTER TABLE jobs ADD COLUMN summary BLOB;
        DROP INDEX items_by_host;
        CREATE INDEX items_open_by_host ON items(unit_key, job_id, id) WHERE done = 0;
        CREATE INDEX items_checked_by_host ON items(unit_key, id) WHERE verdict IS NOT NULL;
        """,
    )


MIGRATIONS_IN_PYTHON: dict[int, Callable[[sqlite3.Connection], None]] = {12: records_for_all, 15: smaller_items}
MIGRATIONS[13] = """
ALTER TABLE hosts ADD COLUMN delay_claim REAL NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN claimed_by TEXT;
ALTER TABLE units ADD COLUMN version TEXT;
ALTER TABLE peers ADD COLUMN misreports INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN agreed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN outvoted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN known_right INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN known_wrong INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN quarantined TEXT;
ALTER TABLE items ADD COLUMN answered_by TEXT;
"""
MIGRATIONS[14] = """
ALTER TABLE jobs ADD COLUMN recheck_of INTEGER REFERENCES jobs(id);
CREATE INDEX jobs_rechecks ON jobs(recheck_of) WHERE recheck_of IS NOT NULL;
ALTER TABLE items ADD COLUMN verdict TEXT;
ALTER TABLE items ADD COLUMN asked_at REAL;
ALTER TABLE peers ADD COLUMN network TEXT;
CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id),
    peer_id TEXT NOT NULL,
    network TEXT,
    result TEXT,
    record BLOB NOT NULL,
    links BLOB,
    at REAL NOT NULL,
    UNIQUE (item_id, peer_id)
);
CREATE TABLE plants (
    unit_id INTEGER NOT NULL REFERENCES units(id),
    peer_id TEXT NOT NULL,
    url TEXT NOT NULL,
    item_id INTEGER NOT NULL REFERENCES items(id),
    judged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_id, url)
) WITHOUT ROWID;
"""
MIGRATIONS[16] = """
ALTER TABLE peers ADD COLUMN observed_items REAL NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN observed_at REAL NOT NULL DEFAULT 0;
CREATE TABLE archives (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    archive BLOB NOT NULL,
    PRIMARY KEY (name, version),
    FOREIGN KEY (name, version) REFERENCES bundles(name, version)
);
"""

# After migration 5, the ranges must hold what unit_id said: no open unit reaches above its
# queue's cursor (its items would be taken again) and no two open units of a host's job
# overlap. Coordinators of schema 3 and 4 keep one open unit per host and job, so this holds
# for their files; a file it fails for is left as it was.
RANGES_OVERLAPPING = """
SELECT COUNT(*) FROM units JOIN queues ON queues.unit_key = units.unit_key AND queues.job_id = units.job_id
    WHERE units.state != 'done' AND units.last_item > queues.taken_through
UNION ALL
SELECT COUNT(*) FROM units a JOIN units b ON b.unit_key = a.unit_key AND b.job_id = a.job_id AND b.id > a.id
    WHERE a.state != 'done' AND b.state != 'done' AND a.first_item <= b.last_item AND b.first_item <= a.last_item
"""


def connect(path: str) -> sqlite3.Connection:
    """Open the database at `path`, created or migrated to SCHEMA_VERSION. A file that is
    there but empty or damaged is refused, never replaced: it may be all that is left of the
    jobs (a full disk, a bad copy), and the operator decides."""
    existed = os.path.exists(path) and path != ":memory:"
    if existed and os.path.getsize(path) == 0:
        raise StoreError(
            f"{path} is empty (0 bytes), not an osaas database: restore it from a backup, "
            "or move it away to start a new one"
        )
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged report must survive a power cut, since the peer then drops it.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        # Leasing and reporting touch items, units and hosts all over the file: keep its hot
        # pages in memory (the default cache is 2 MB), up to 64 MB, and map up to 256 MB.
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA mmap_size=268435456")
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        # Each call inside a group commit is a savepoint, whose undo journal would spill
        # to a temporary file past 64 KiB (a lease touches hundreds of pages): keep it,
        # and SQLite's other temporary data, in memory.
        conn.execute("PRAGMA temp_store=MEMORY")
        if existed:
            check_integrity(conn, path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path} was written by a newer osaas (schema {version}); upgrade osaas")
        if version < SCHEMA_VERSION:
            migrate(conn, path, version)
    except BaseException:
        conn.close()
        raise
    return conn


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run a script's statements one by one inside the open transaction (`executescript`
    would commit it first)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"an unfinished SQL statement in a migration: {statement.strip()[:80]}")


def check_integrity(conn: sqlite3.Connection, path: str) -> None:
    """SQLite's quick check of every page (not of index contents: that is `integrity_check`,
    far slower on a large file). Raises a one-line StoreError saying what to do."""
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        found = " ".join(" ".join(problems).replace("*** in database main ***", "").split())
        raise StoreError(
            f"{path} is damaged ({found}): restore it from a backup "
            f"(`sqlite3 {path} .recover` may save what is left); it was not changed"
        )


def migrate(conn: sqlite3.Connection, path: str, version: int) -> None:
    """Create the schema, or lift an older file to the current one, in one transaction."""
    steps: list[str | Callable[[sqlite3.Connection], None]] = [SCHEMA] if version == 0 else []
    steps += [MIGRATIONS.get(v) or MIGRATIONS_IN_PYTHON[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)]
    # Foreign keys off while tables are built again (a drop would check them); the copy
    # keeps every id, and the check before commit makes sure of it.
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        conn.execute("BEGIN IMMEDIATE")
        for step in steps:
            if isinstance(step, str):
                _execute_script(conn, step)
            else:
                step(conn)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        broken = conn.execute("PRAGMA foreign_key_check").fetchone()
        if broken is not None:
            conn.execute("ROLLBACK")
            raise StoreError(f"{path}: migration to schema {SCHEMA_VERSION} broke a reference in {broken[0]}")
        overlapping = sum(count for (count,) in conn.execute(RANGES_OVERLAPPING))
        if overlapping:
            conn.execute("ROLLBACK")
            raise StoreError(
                f"{path}: cannot migrate to schema {SCHEMA_VERSION}: {overlapping} open units share items;"
                " finish its jobs with the osaas that wrote it"
            )
        conn.execute("COMMIT")
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
    if version:
        log.info("migrated %s from schema %d to %d", path, version, SCHEMA_VERSION)
