"""Where a coordinator keeps things, as its commands are told: `--db` (a SQLite file, or a
PostgreSQL database by its URI) and `--state-dir` (its own files: key, dashboard token, DHT
state, bundles). Beside a SQLite file by default; a PostgreSQL database has no "beside", and
each of several coordinators sharing one needs a state dir of its own."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from coordinator.sql.postgres import is_postgres, shown
from coordinator.store import StoreError
from osaas.commands._shared import UsageError

T = TypeVar("T")

DB_HELP = "the coordinator's database: a SQLite file, or a PostgreSQL URI (postgresql://USER@HOST/DB)"
STATE_NAME = "coordinator"  # its files in --state-dir: coordinator.key, coordinator.dht, ...


def db_location(text: str) -> Path | str:
    """`--db`: a PostgreSQL URI as it is, else a file path."""
    return text if is_postgres(text) else Path(text)


def add_db_argument(parser: argparse.ArgumentParser, help: str = DB_HELP) -> None:
    parser.add_argument("--db", type=db_location, required=True, metavar="FILE|URI", help=help)


def add_state_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where the coordinator keeps its own files (key, dashboard token, DHT state, bundles);"
        " default: beside a SQLite --db; needed with a PostgreSQL one",
    )


def files_base(db: Path | str, state_dir: Path | None) -> Path:
    """The path the coordinator's own files are named after (its .key, .dht, .torrent,
    .bundles and dashboard token), its directory there."""
    if state_dir is not None:
        if not state_dir.is_dir():
            raise UsageError(f"--state-dir {state_dir} is not a directory")
        return state_dir / STATE_NAME
    if isinstance(db, str):
        raise UsageError(
            "with a PostgreSQL --db, give --state-dir DIR: where this coordinator keeps its key,"
            " dashboard token, DHT state and bundles"
        )
    if not db.parent.is_dir():
        raise UsageError(f"cannot open database {db}: directory {db.parent} does not exist")
    return db


def with_store(db: Path | str, work: Callable[..., Awaitable[T]], *, create: bool = False) -> T:
    """Run `work(store)` on the store at `db`. `create`: a change that may come before the first
    `serve` (an operator admits owners first) makes a SQLite database when there is none yet
    (a PostgreSQL one is made by its administrator, its tables by the first osaas to open it)."""
    from coordinator.sql import SqlStore

    if isinstance(db, Path):
        if create and not db.exists():
            if not db.parent.is_dir():
                raise UsageError(f"cannot create database {db}: directory {db.parent} does not exist")
        elif not db.is_file():
            raise UsageError(f"no coordinator database at {db}")

    async def run() -> T:
        async with SqlStore(db) as store:
            return await work(store)

    try:
        return asyncio.run(run())
    except StoreError as exc:
        raise UsageError(str(exc)) from exc


def named(db: Path | str) -> str:
    """The database as people may see it: a URI without its password."""
    return shown(db) if isinstance(db, str) else str(db)
