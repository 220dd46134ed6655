"""A PostgreSQL cluster of the test's own: Debian's `postgresql` binaries (which `make test`
installs), initdb and pg_ctl in a temp dir, on a free loopback port, stopped and removed at
the end. initdb and the server refuse to run as root, so as root (CI) they run as the
`postgres` user that Debian's package makes.

`cluster()` starts one; `Cluster.database()` makes an empty database in it for one test (or
one bench run) and gives its connection URI."""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

_BIN_ROOT = Path("/usr/lib/postgresql")
USER = "osaas"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin dir, or None."""
    found = sorted(
        (p for p in _BIN_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def why_not() -> str | None:
    """Why no cluster can start here (None: one can)."""
    if binaries() is None:
        return f"no PostgreSQL server under {_BIN_ROOT} (make test installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and no postgres user to run the server as"
    return None


@dataclass
class Cluster:
    port: int
    root: Path
    _names: Iterator[int] = field(default_factory=itertools.count)

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database; its connection URI."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.uri(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def cluster(durable: bool = False) -> Iterator[Cluster]:
    """A running cluster (trust authentication on loopback only). Tests need no durability:
    without `durable`, nothing is flushed to disk."""
    bin_dir = binaries()
    assert bin_dir is not None, why_not()
    root = Path(tempfile.mkdtemp(prefix="osaas-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    subprocess.run(
        _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8",
                         "--locale=C", "--no-sync"]),
        check=True, capture_output=True,
    )  # fmt: skip
    settings = [f"-p {port}", f"-k {root}", "-c listen_addresses=127.0.0.1", "-c max_connections=50"]
    if not durable:
        settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    subprocess.run(
        _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                         "-o", " ".join(settings), "start"]),
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield Cluster(port, root)
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
