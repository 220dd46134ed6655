"""Benchmark: ``osaas check`` against LinkChecker on the generated site.

Serves ``bench.site`` from a separate process, runs each tool as a whole command (process
start to exit), compares the broken links each found with the site's expected set and prints
a table. Exits 1 if osaas's broken set differs from the expected set (or osaas failed);
the tools' outputs are then kept in a temp dir, otherwise removed.

    python -m bench.linkcheck_compare [--pages 3000] [--peers 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.site import build_site

REPO_ROOT = Path(__file__).resolve().parent.parent
QUICK_PAGES = 300
OSAAS_FAILED_RESULTS = {"broken", "timeout", "error"}
LINKCHECKER_CONFIG = """\
[checking]
threads={threads}
maxrequestspersecond=1000
timeout=30

[output]
status=0
warnings=0
log=none
fileoutput=csv

[csv]
filename={csv_path}
separator=;
parts=url,valid,result,parentname
"""


class ToolFailed(Exception):
    """A tool did not run to completion or wrote no usable output."""


@dataclass
class Outcome:
    """What one tool run produced."""

    tool: str
    wall: float | None = None
    broken: set[str] | None = None
    failure: str | None = None
    store_per_url: float | None = None  # bytes of the coordinator's database per checked URL
    postgres_per_url: float | None = None  # the same rows moved into PostgreSQL


def normalize(url: str) -> str:
    """Compare URLs without fragments."""
    return url.split("#", 1)[0]


def start_site(pages: int, broken_ratio: float, seed: int) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m bench.site`` on a free port; return the process and its base URL."""
    command = [
        sys.executable,
        "-m",
        "bench.site",
        "--pages",
        str(pages),
        "--broken-ratio",
        str(broken_ratio),
        "--seed",
        str(seed),
        "--port",
        "0",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if " at http://" not in line:
        process.kill()
        raise SystemExit(f"site server did not start: {line.strip()!r}")
    return process, line.rsplit(" at ", 1)[1].strip().rstrip("/")


def run_timed(command: list[str], workdir: Path, name: str, timeout: float) -> tuple[float, int]:
    """Run a command to completion; return (wall seconds, exit code). Output goes to files."""
    with open(workdir / f"{name}.stdout", "w") as out, open(workdir / f"{name}.stderr", "w") as err:
        start = time.perf_counter()
        try:
            code = subprocess.run(
                command, cwd=REPO_ROOT, stdout=out, stderr=err, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired as exc:
            raise ToolFailed(f"did not finish within {timeout:.0f} s") from exc
        return time.perf_counter() - start, code


def last_error_line(workdir: Path, name: str) -> str:
    """The last non-empty stderr line of a tool run, for one-line failure messages."""
    lines = (workdir / f"{name}.stderr").read_text(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else "(no stderr)"


def world_writable_dir() -> Path:
    """A temp dir LinkChecker can use after dropping root privileges to ``nobody``."""
    workdir = Path(tempfile.mkdtemp(prefix="osaas-bench-"))
    workdir.chmod(0o777)
    return workdir


def world_writable_file(path: Path, text: str = "") -> Path:
    path.write_text(text)
    path.chmod(0o666)
    return path


def linkchecker_broken(csv_path: Path) -> set[str]:
    """URLs LinkChecker reported invalid, from its CSV output."""
    rows = [line for line in csv_path.read_text().splitlines() if line and not line.startswith("#")]
    if not rows:
        raise ToolFailed(f"no CSV output in {csv_path}")
    reader = csv.DictReader(rows, delimiter=";")
    return {normalize(row["url"]) for row in reader if row["valid"] == "False"}


def run_linkchecker(base_url: str, workdir: Path, threads: int, timeout: float) -> Outcome:
    """Run LinkChecker over the whole site and collect the URLs it found broken."""
    outcome = Outcome("linkchecker")
    executable = Path(sys.executable).parent / "linkchecker"
    if not executable.exists():
        outcome.failure = f"{executable} not found: pip install linkchecker"
        return outcome
    csv_path = world_writable_file(workdir / "linkchecker.csv")
    config = LINKCHECKER_CONFIG.format(threads=threads, csv_path=csv_path)
    config_path = world_writable_file(workdir / "linkcheckerrc", config)
    command = [str(executable), "--config", str(config_path), "--no-status", base_url + "/"]
    try:
        outcome.wall, code = run_timed(command, workdir, "linkchecker", timeout)
        if code not in (0, 1):
            raise ToolFailed(f"exit {code}: {last_error_line(workdir, 'linkchecker')}")
        outcome.broken = linkchecker_broken(csv_path)
    except ToolFailed as exc:
        outcome.failure = str(exc)
    return outcome


def osaas_broken(jsonl_path: Path) -> set[str]:
    """URLs osaas reported broken, timed out or errored, from its JSON Lines output."""
    if not jsonl_path.exists() or jsonl_path.stat().st_size == 0:
        raise ToolFailed(f"wrote no output to {jsonl_path}")
    broken = set()
    for number, line in enumerate(jsonl_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record["result"] in OSAAS_FAILED_RESULTS:
                broken.add(normalize(record["url"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ToolFailed(f"bad JSON line {number} in {jsonl_path}: {exc}") from exc
    return broken


def run_osaas(base_url: str, workdir: Path, peers: int, timeout: float) -> Outcome:
    """Run ``python -m osaas check`` over the site and collect the URLs it found broken."""
    outcome = Outcome("osaas")
    output = workdir / "osaas.jsonl"
    command = [
        sys.executable,
        "-m",
        "osaas",
        "check",
        base_url + "/",
        "--peers",
        str(peers),
        "--format",
        "json",
        "--output",
        str(output),
        "--allow-private",
        "--keep",
        str(workdir / "osaas-network"),
    ]
    try:
        outcome.wall, code = run_timed(command, workdir, "osaas", timeout)
        if code not in (0, 1):
            raise ToolFailed(f"exit {code}: {last_error_line(workdir, 'osaas')}")
        try:
            outcome.broken = osaas_broken(output)
        except ToolFailed as exc:
            raise ToolFailed(f"exit {code}, {exc}: {last_error_line(workdir, 'osaas')}") from exc
        outcome.store_per_url = store_per_url(workdir / "osaas-network" / "coordinator.sqlite")
        outcome.postgres_per_url = postgres_per_url(workdir / "osaas-network" / "coordinator.sqlite")
    except ToolFailed as exc:
        outcome.failure = f"`python -m osaas check` failed: {exc}"
    return outcome


def store_per_url(db: Path) -> float:
    """The coordinator's database (its write-ahead log too, if one is left) over the URLs it
    checked: what issue 22 holds at 300 bytes."""
    size = sum(path.stat().st_size for path in (db, db.with_name(db.name + "-wal")) if path.exists())
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        (items,) = conn.execute("SELECT COUNT(*) FROM items").fetchone()
    return size / max(items, 1)


def postgres_per_url(db: Path) -> float | None:
    """The same store moved into a PostgreSQL database of a cluster of the bench's own
    (`osaas coordinator migrate`'s copy): its tables, indexes and TOAST over the URLs checked.
    None when no cluster can start here."""
    from coordinator.sql.moving import move
    from tests import postgres

    if postgres.why_not() is not None:
        return None
    with postgres.cluster() as cluster:
        target = cluster.database()
        moved = move(str(db), target)
        with psycopg.connect(target) as conn:
            row = conn.execute(
                "SELECT SUM(pg_total_relation_size(quote_ident(table_name)))"
                " FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchone()
    return float(row[0] if row else 0) / max(moved.rows["items"], 1)


def print_table(outcomes: list[Outcome], expected: set[str]) -> None:
    print(f"{'tool':<12} {'wall s':>8} {'broken found':>13} {'expected':>9} {'missed':>7} {'extra':>6}")
    for outcome in outcomes:
        if outcome.broken is None or outcome.wall is None:
            print(f"{outcome.tool:<12} {'FAILED':>8}")
            continue
        missed = len(expected - outcome.broken)
        extra = len(outcome.broken - expected)
        print(
            f"{outcome.tool:<12} {outcome.wall:>8.2f} {len(outcome.broken):>13} "
            f"{len(expected):>9} {missed:>7} {extra:>6}"
        )


def print_differences(outcome: Outcome, expected: set[str], limit: int = 5) -> None:
    """Show a few missed and extra URLs so a mismatch can be chased down."""
    if outcome.broken is None:
        return
    differences = {"missed": expected - outcome.broken, "extra": outcome.broken - expected}
    for label, urls in differences.items():
        for url in sorted(urls)[:limit]:
            print(f"  {outcome.tool} {label}: {url}")


def print_store(osaas: Outcome) -> None:
    if osaas.store_per_url is not None:
        verdict = "meets" if osaas.store_per_url <= 300 else "misses"
        print(f"osaas store: {osaas.store_per_url:.0f} bytes per checked URL ({verdict} the <= 300 target)")
    if osaas.postgres_per_url is not None:
        verdict = "meets" if osaas.postgres_per_url <= 300 else "misses"
        print(f"the same rows in PostgreSQL: {osaas.postgres_per_url:.0f} bytes per checked URL ({verdict} the target)")


def print_ratio(osaas: Outcome, linkchecker: Outcome) -> None:
    if osaas.wall is None or linkchecker.wall is None or osaas.broken is None:
        return
    ratio = osaas.wall / linkchecker.wall
    verdict = "meets" if ratio <= 0.5 else "misses"
    print(f"osaas/linkchecker wall time: {ratio:.2f} ({verdict} the <= 0.50 target)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare osaas check with LinkChecker.")
    parser.add_argument("--pages", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help=f"smoke run with {QUICK_PAGES} pages")
    parser.add_argument("--peers", type=int, default=2)
    parser.add_argument("--broken-ratio", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=32, help="LinkChecker threads")
    parser.add_argument("--timeout", type=float, default=1800, help="per tool, seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.pages = QUICK_PAGES
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    site = build_site(args.pages, args.broken_ratio, args.seed)
    server, base_url = start_site(args.pages, args.broken_ratio, args.seed)
    workdir = world_writable_dir()
    try:
        expected = site.broken_urls(base_url)
        print(
            f"site: {len(site.pages)} pages, {site.link_count()} links, {len(expected)} broken targets at {base_url}/",
            flush=True,
        )
        linkchecker = run_linkchecker(base_url, workdir, args.threads, args.timeout)
        osaas = run_osaas(base_url, workdir, args.peers, args.timeout)
    finally:
        server.terminate()
        server.wait()
    print_table([linkchecker, osaas], expected)
    for outcome in (linkchecker, osaas):
        print_differences(outcome, expected)
    print_ratio(osaas, linkchecker)
    print_store(osaas)
    for outcome in (linkchecker, osaas):
        if outcome.failure:
            print(f"{outcome.tool}: {outcome.failure}", file=sys.stderr)
    if osaas.broken != expected:
        print(f"outputs kept in {workdir}", file=sys.stderr)
        return 1
    shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
