"""A coordinator, its store and peers left running for a long time with work always waiting:
does any process's memory grow, does any job come out wrong, does anything stall?

    python -m bench.soak [--minutes 120] [--peers 4] [--pages 300] [--jobs 2] [--sample 30]

Real processes on loopback: the bench site (`bench.site`, broken links known), `osaas
coordinator serve` (re-checks on, as it runs by default) and `--peers` `osaas peer run`. The
bench keeps `--jobs` link-check jobs of the site running: as one finishes, its results are
compared with the site's truth (every broken link found, nothing else called broken, every
page once) and another is submitted. Every `--sample` seconds it reads each process's
resident memory (/proc, the store's child process too: its heap and, apart, the file pages it
maps) and the database's size.

At the end, per process: its memory at the start of the measured span (after the first
WARMUP of the run, a sixth of it for runs under an hour) and at the end, and the growth per
hour fitted over the span (least squares); the target (issue 22) is at most 1 MB per hour.
Then the jobs: finished, exact, the longest one, and any that came out wrong. Exit 1 when a
job came out wrong or a process died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.site import build_site
from osaas import owner
from overlay.identity import Identity

REPO = Path(__file__).resolve().parents[1]
WARMUP = 600.0  # seconds of the run left out of the growth fit (imports, caches, first plans)
TARGET_MB_PER_HOUR = 1.0
BROKEN_RATIO = 0.05
SEED = 1


@dataclass
class Watched:
    """A process whose memory is sampled: (seconds since start, resident MB)."""

    name: str
    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)  # its heap (RssAnon)
    mapped: list[tuple[float, float]] = field(default_factory=list)  # file pages (RssFile)


@dataclass
class Jobs:
    finished: int = 0
    exact: int = 0
    wrong: list[str] = field(default_factory=list)
    longest: float = 0.0


def resident_mb(pid: int, kind: str = "RssAnon") -> float | None:
    """A process's resident memory of `kind` in MB: RssAnon (its heap: what a leak grows), or
    RssFile (file pages it maps: the store's SQLite maps its database, up to 256 MB, and those
    pages grow with the file); None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{kind}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def child_name(pid: int) -> str:
    """The coordinator's store process, or multiprocessing's helper beside it."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "child"
    return "mp helper" if "resource_tracker" in command or "forkserver" in command else "store process"


def growth_per_hour(samples: list[tuple[float, float]], since: float) -> float | None:
    """MB per hour, least squares over the samples from `since` on; None with too few."""
    span = [(t, mb) for t, mb in samples if t >= since]
    if len(span) < 3:
        return None
    times = [t for t, _ in span]
    mean_t, mean_mb = statistics.fmean(times), statistics.fmean(mb for _, mb in span)
    var = sum((t - mean_t) ** 2 for t in times)
    if var == 0:
        return None
    slope = sum((t - mean_t) * (mb - mean_mb) for t, mb in span) / var
    return slope * 3600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)


@contextlib.asynccontextmanager
async def network(work: Path, pages: int, peers: int) -> AsyncIterator[tuple[str, str, list[Watched], Identity]]:
    """The site, a coordinator and its peers; yields (site URL, coordinator URL, watched, operator)."""
    env = dict(os.environ, XDG_CONFIG_HOME=str(work / "config"), PYTHONPATH=str(REPO))
    operator = Identity.generate()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        site = subprocess.Popen(
            [sys.executable, "-m", "bench.site", "--pages", str(pages), "--broken-ratio", str(BROKEN_RATIO),
             "--seed", str(SEED), "--port", "0"],
            stdout=subprocess.PIPE, text=True, cwd=REPO, env=env,
        )  # fmt: skip
        processes.append(site)  # type: ignore[arg-type]
        assert site.stdout is not None
        site_url = site.stdout.readline().rsplit(" at ", 1)[1].strip().rstrip("/")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        coordinator = start(
            [sys.executable, "-m", "osaas", "coordinator", "serve", "--listen", f"127.0.0.1:{port}",
             "--db", str(work / "c.sqlite"), "--operator-key", operator.public_hex],
            work / "coordinator.log", env,
        )  # fmt: skip
        processes.append(coordinator)
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/v1/health") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the coordinator did not start: see " + str(work / "coordinator.log"))
        watched = [Watched("coordinator", coordinator.pid)]
        watched += [Watched(child_name(pid), pid) for pid in children(coordinator.pid)]
        for i in range(peers):
            peer = start(
                [sys.executable, "-m", "osaas", "peer", "run", "--coordinator", url,
                 "--data-dir", str(work / f"peer-{i}"), "--allow-private"],
                work / f"peer-{i}.log", env,
            )  # fmt: skip
            processes.append(peer)
            watched.append(Watched(f"peer {i}", peer.pid))
        yield site_url, url, watched, operator
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def keep_jobs_running(
    url: str, site_url: str, operator: Identity, jobs: int, until: float, expected: set[str], tally: Jobs
) -> None:
    running: dict[int, float] = {}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < until or running:
            while len(running) < jobs and time.monotonic() < until:
                job_id = await owner.submit(
                    session, url, operator, "linkcheck", {"urls": [site_url + "/"], "depth": None}
                )
                running[job_id] = time.monotonic()
            for job_id, began in list(running.items()):
                status = await owner.status(session, url, operator, job_id)
                if status.state == "running":
                    continue
                del running[job_id]
                tally.finished += 1
                tally.longest = max(tally.longest, time.monotonic() - began)
                rows = await owner.results(session, url, operator, job_id)
                urls = [row["url"] for row in rows]
                broken = {row["url"] for row in rows if row["result"] in ("broken", "timeout", "error")}
                if status.state == "done" and broken == expected and len(urls) == len(set(urls)):
                    tally.exact += 1
                else:
                    missed, extra = len(expected - broken), len(broken - expected)
                    tally.wrong.append(f"job {job_id}: {status.state}, {missed} broken missed, {extra} extra")
            await asyncio.sleep(2.0)


async def sample(
    watched: list[Watched], db: Path, every: float, until: float, began: float
) -> list[tuple[float, int, int]]:
    """Memory of each process, and the sizes of the database file and of its write-ahead log
    (reused, never much more than SQLite's checkpoint size), every `every` seconds."""
    sizes: list[tuple[float, int, int]] = []
    while time.monotonic() < until:
        now = time.monotonic() - began
        for process in watched:
            mb, mapped = resident_mb(process.pid), resident_mb(process.pid, "RssFile")
            if mb is not None and mapped is not None:
                process.samples.append((now, mb))
                process.mapped.append((now, mapped))
        wal = db.with_name(db.name + "-wal")
        sizes.append((now, db.stat().st_size if db.exists() else 0, wal.stat().st_size if wal.exists() else 0))
        await asyncio.sleep(every)
    return sizes


async def soak(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="osaas-soak-"))
    work.chmod(0o755)
    seconds = args.minutes * 60
    warmup = min(WARMUP, seconds / 6)
    expected_site = build_site(args.pages, BROKEN_RATIO, SEED)
    tally = Jobs()
    async with network(work, args.pages, args.peers) as (site_url, url, watched, operator):
        expected = expected_site.broken_urls(site_url)
        print(
            f"soak: {args.minutes:g} min, {args.peers} peers, {args.jobs} jobs of {args.pages} pages at a time; work in {work}",
            flush=True,
        )
        began = time.monotonic()
        until = began + seconds
        sampling = asyncio.create_task(sample(watched, work / "c.sqlite", args.sample, until, began))
        await keep_jobs_running(url, site_url, operator, args.jobs, until, expected, tally)
        sizes = await sampling
        dead = [w.name for w in watched if resident_mb(w.pid) is None]
    print("memory: the heap (RssAnon) after the warm-up, at the end, its growth; file pages mapped (RssFile)")
    print(
        f"{'process':<14} {'MB at ' + format(warmup / 60, '.0f') + ' min':>12} {'MB at end':>10} {'MB/hour':>9}"
        f" {'mapped MB at end':>17}"
    )
    grew = False
    for process in watched:
        span = [mb for t, mb in process.samples if t >= warmup]
        slope = growth_per_hour(process.samples, warmup)
        shown = "-" if slope is None else f"{slope:+.2f}"
        grew |= slope is not None and slope > TARGET_MB_PER_HOUR
        first, last = (f"{span[0]:.1f}", f"{span[-1]:.1f}") if span else ("-", "-")
        mapped = f"{process.mapped[-1][1]:.1f}" if process.mapped else "-"
        print(f"{process.name:<14} {first:>12} {last:>10} {shown:>9} {mapped:>17}")
    if sizes:
        _, db_size, wal_size = sizes[-1]
        print(f"database at the end: {db_size / 1e6:.1f} MB, and its write-ahead log {wal_size / 1e6:.1f} MB")
    print(
        f"jobs: {tally.finished} finished, {tally.exact} exact, the longest {tally.longest:.0f} s;"
        f" target: every job exact, no process growing more than {TARGET_MB_PER_HOUR:g} MB/hour"
        f" ({'missed' if grew else 'met'} for memory)"
    )
    for line in tally.wrong[:10]:
        print("  wrong:", line)
    if dead:
        print("  died:", ", ".join(dead))
    if tally.wrong or dead:
        print(f"logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--pages", type=int, default=300, help="pages of the bench site each job crawls")
    parser.add_argument("--jobs", type=int, default=2, help="jobs kept running at once")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between memory readings")
    return asyncio.run(soak(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
