"""How many work units coordinators lease and take reports for per second, on SQLite and on
PostgreSQL, with one coordinator or several serving one PostgreSQL database.

A real coordinator (`coordinator.api.serve` on 127.0.0.1) runs in a subprocess; simulated peers
in this process register, lease and report over real signed HTTP (`overlay.http.call`, Ed25519
keys from `overlay.identity`). A simulated peer does no fetching: it answers every unit at once
with an honest-looking result for each URL, so the figure is the coordinator's own cost per unit
(HTTP, signatures, msgpack, and its store: SQLite with synchronous=FULL, or PostgreSQL with
fsync on).

Stores (`--stores`): `sqlite`, a file in a temp dir; `postgresql`, a fresh database in a
throwaway cluster the bench starts (`tests/postgres.py`, `durable=True`: fsync and synchronous
commit on, as the SQLite store's synchronous=FULL). For N coordinators (`--coordinators`) on
PostgreSQL, N coordinator subprocesses serve the same database, each with its own files dir; the
job is submitted once, to the first, and the simulated peers are spread over them round robin
(a peer registers with, leases from and reports to its coordinator only). N > 1 on SQLite is
skipped (one file, one coordinator).

The job: `--hosts` hosts of `--urls-per-host` URLs, submitted over HTTP as link-check jobs of
1,000 seeds each (the most one job takes), depth 0. With 5 URLs per host each host is one unit
(a new peer's unit holds 20 URLs), so every host is leased exactly once and host pacing (one
unit per host at a time, a 1 s rest between units) never holds the peers back: with 2,000 hosts
of 50 URLs, pacing alone would cap the rate at 2,000 units/s, whatever the coordinator costs.

Two runs per configuration, each against a fresh store and fresh coordinators:
    batched   every peer leases up to 256 units per request and reports them in one
              POST /v1/reports/batch (at most `--batched-seconds`)
    anchor    one unit per request: lease max_units=1, POST /v1/reports per unit (at most
              `--anchor-seconds`; its rate counts the units it finished meanwhile)

The clock starts once the job is in, the peers are registered and the first plan's settle time
(`host_planning.SETTLE_SECONDS`, counted from the first registration, during which nothing is
leased) is over; it stops at the `--hosts`-th unit reported (re-check units count too when
rechecks are on) or at the cap. A run also ends once `--max-errors` requests have failed (an
HTTP error, a refused report, a request over its 30 s timeout): its failures and the distinct
lines of the coordinators' logs are printed. Requests still under way 3 s after the end are
cancelled and counted. `--no-rechecks` serves with `rechecks=False` (no answer checked again,
no known answers planted); `--analyze` has PostgreSQL gather its planner statistics (ANALYZE)
before the clock starts, as autovacuum does by itself some time after a bulk insert.

CPU per unit, over the timed part of a run only: user+sys time of the coordinator processes with all their descendants (the
store runs in a child process), and for PostgreSQL of the cluster's postmaster with all its
descendants (backends, checkpointer, WAL writer...), read from /proc/PID/stat (a process's own
time plus what its reaped children left in cutime/cstime), divided by the units done. The bench
process's own CPU (the simulated peers) is shown apart: on a small machine all of them share the
cores.

    .venv/bin/python -m bench.coordinator_throughput [--stores sqlite postgresql]
        [--coordinators 1 2] [--hosts 10000] [--urls-per-host 5] [--peers 200] [--repeat 1]
        [--anchor-seconds 10] [--batched-seconds 60] [--no-rechecks] [--analyze] [--max-errors 50]

`--repeat N` runs every configuration N times, the configurations alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from coordinator import host_planning
from overlay import http
from overlay.identity import Identity
from overlay.wire_reports import MAX_REPORT_BATCH

SEEDS_PER_JOB = 1000
CAPACITY = 10_000_000.0  # bytes/s each simulated peer says it sustains
STORES = ("sqlite", "postgresql")
TARGET_PG_ONE = 3000.0  # units/s, batched, PostgreSQL with one coordinator (the issue's)
TARGET_TWO_OVER_ONE = 1.5  # two coordinators over one, batched (the issue's)
GRACE_SECONDS = 3.0  # how long requests under way at the end of a run are waited for

# Without rate limits: the bench's peers all come from one address, and what it measures is
# the coordinator's cost per unit, not how it holds back a crowd (`coordinator.rate_limits`).
# argv: the store (a SQLite path or a postgresql:// URI), the files path ("" for the default),
# the operator's public key, "rechecks" or "no-rechecks".
_SERVER = """
import asyncio, logging, sys
from pathlib import Path
from coordinator.api import serve
from coordinator.rate_limits import Rate, RateLimits, Route
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
free = {route: Rate(1e6, 10**6) for route in Route}
db = sys.argv[1] if sys.argv[1].startswith("postgresql://") else Path(sys.argv[1])
asyncio.run(serve(
    "127.0.0.1", 0, db, files=Path(sys.argv[2]) if sys.argv[2] else None, operator_keys=[sys.argv[3]],
    ready=lambda port: print(port, flush=True), rate_limits=RateLimits(free, free),
    rechecks=sys.argv[4] == "rechecks",
))
"""

_TICK = os.sysconf("SC_CLK_TCK")


def _process_table() -> dict[int, tuple[int, float]]:
    """Every process: pid -> (parent pid, CPU seconds: its own user+sys and its reaped
    children's, from /proc/PID/stat)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
        table[int(entry.name)] = (int(fields[1]), ticks / _TICK)
    return table


def tree_cpu(roots: Iterable[int]) -> float:
    """CPU seconds used so far by the processes `roots` and all their descendants (those still
    running, and through cutime/cstime those that ended and were reaped)."""
    table = _process_table()
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    total, seen, stack = 0.0, set[int](), list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        stack.extend(children[pid])
    return total


@dataclass(frozen=True, slots=True)
class Config:
    store: str
    coordinators: int


@dataclass(frozen=True, slots=True)
class Outcome:
    units: int
    seconds: float
    requests: int
    errors: int
    coordinator_cpu: float  # seconds, the coordinators and their children
    server_cpu: float  # seconds, the PostgreSQL cluster (0 on SQLite)
    bench_cpu: float  # seconds, this process (the simulated peers)

    @property
    def rate(self) -> float:
        return self.units / self.seconds if self.seconds > 0 else 0.0

    def per_unit(self, seconds: float) -> float:
        """`seconds` of CPU per unit done, in milliseconds."""
        return 1000 * seconds / self.units if self.units else float("nan")


@dataclass
class Coordinator:
    url: str
    pid: int
    log: Path
    process: asyncio.subprocess.Process


@dataclass
class Postgres:
    """The bench's cluster: where to make databases, and the postmaster whose CPU is counted."""

    cluster: Any  # tests.postgres.Cluster

    def database(self) -> str:
        return str(self.cluster.database())

    @staticmethod
    def analyze(uri: str) -> None:
        """Gather the planner's statistics now, as autovacuum would a while after a bulk insert."""
        import psycopg  # only with PostgreSQL

        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("ANALYZE")

    def postmaster(self) -> int:
        return int((self.cluster.root / "data" / "postmaster.pid").read_text().split()[0])


async def start_coordinator(db: str, files: str, operator: Identity, log: Path, rechecks: bool) -> Coordinator:
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _SERVER,
            db,
            files,
            operator.public_hex,
            "rechecks" if rechecks else "no-rechecks",
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=Path(__file__).resolve().parents[1],
        )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 120)
        if not line:
            raise RuntimeError(f"a coordinator did not start; its log:\n{log.read_text()[-3000:]}")
    except BaseException:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        await process.wait()
        raise
    return Coordinator(f"http://127.0.0.1:{int(line)}", process.pid, log, process)


@contextlib.asynccontextmanager
async def coordinators(
    workdir: Path, config: Config, operator: Identity, postgres: Postgres | None, rechecks: bool
) -> AsyncIterator[tuple[list[Coordinator], str]]:
    """`config.coordinators` coordinator subprocesses on one fresh store, `operator` one of
    their operators, started one after another (the first makes the schema); yields them and
    the store's location."""
    if config.store == "postgresql":
        assert postgres is not None
        db = postgres.database()
    else:
        db = str(workdir / "coordinator.sqlite")
    started: list[Coordinator] = []
    try:
        for n in range(config.coordinators):
            own = workdir / f"c{n}"
            own.mkdir()
            files = str(own / "coordinator") if config.store == "postgresql" else ""
            started.append(await start_coordinator(db, files, operator, own / "log", rechecks))
        yield started, db
    finally:
        for c in started:
            if c.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    c.process.terminate()
        for c in started:
            await c.process.wait()


async def submit_jobs(session: aiohttp.ClientSession, url: str, operator: Identity, hosts: int, per_host: int) -> int:
    """The link-check jobs holding every URL, submitted by the operator (no owner limits);
    returns how many URLs they hold."""
    urls = [f"http://h{h}.bench.test/p{n}" for h in range(hosts) for n in range(per_host)]
    jobs = [urls[i : i + SEEDS_PER_JOB] for i in range(0, len(urls), SEEDS_PER_JOB)]
    await asyncio.gather(
        *(
            http.call(
                session,
                "POST",
                url,
                "/v1/jobs",
                {"workload": "linkcheck", "input": {"urls": seeds, "depth": 0}},
                identity=operator,
            )
            for seeds in jobs
        )
    )
    return len(urls)


def answer(lease: dict[str, Any]) -> dict[str, Any]:
    """An instant, honest-looking report of a unit: every URL answered 200, no links."""
    items = [
        {
            "url": i["url"],
            "result": "ok",
            "status": 200,
            "final_url": i["url"],
            "redirects": [],
            "error": None,
            "links": [],
            "crawled": False,
        }
        for i in lease["payload"]["items"]
    ]
    return {
        "unit_id": lease["unit_id"],
        "token": lease["token"],
        "exit_code": 0,
        "payload": {"items": items},
        "bundle_version": lease["bundle"]["version"] if lease.get("bundle") else None,
    }


@dataclass
class Tally:
    target: int
    max_errors: int
    units: int = 0
    requests: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    slowest: float = 0.0  # seconds, the longest request (failed ones too)

    def add(self, units: int, requests: int) -> None:
        self.units += units
        self.requests += requests
        if self.units >= self.target:
            self.done.set()

    def error(self, text: str) -> None:
        self.errors[" ".join(text.split())[:300]] += 1
        if self.errors.total() >= self.max_errors:
            self.done.set()  # the run has failed: no use waiting for its time cap


async def simulated_peer(
    session: aiohttp.ClientSession, url: str, identity: Identity, batched: bool, tally: Tally
) -> None:
    """Lease, answer and report until the tally is done. A failed request is counted and the
    peer goes on after a pause (its leased units then wait for their lease to run out)."""
    lease_request = {
        "max_units": MAX_REPORT_BATCH if batched else 1,
        "workloads": ["*"],
        "usage": {"capacity": CAPACITY, "used": 0},
    }

    async def call(path: str, message: Any) -> Any:
        began = time.perf_counter()
        try:
            return await http.call(session, "POST", url, path, message, identity=identity)
        finally:
            tally.slowest = max(tally.slowest, time.perf_counter() - began)

    while not tally.done.is_set():
        try:
            granted = await call("/v1/leases", lease_request)
            leases = granted["leases"]
            if not leases:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(tally.done.wait(), granted["retry_after"] or 1.0)
                tally.add(0, 1)
                continue
            if batched:
                answers = await call("/v1/reports/batch", {"reports": [answer(lease) for lease in leases]})
                accepted = sum(1 for verdict in answers["results"] if verdict["accepted"])
                for verdict in answers["results"]:
                    if not verdict["accepted"]:
                        tally.error(f"report refused: {verdict}")
                tally.add(accepted, 2)
            else:
                for lease in leases:
                    reply = await call("/v1/reports", answer(lease))
                    if reply["accepted"]:
                        tally.add(1, 1)
                    else:
                        tally.error(f"report refused: {reply}")
                tally.add(0, 1)
        except (http.Unavailable, http.Rejected) as exc:
            cause = f" ({type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
            tally.error(f"{type(exc).__name__}{cause}: {exc}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(tally.done.wait(), 0.5)


def cpu_now(started: list[Coordinator], postgres: Postgres | None) -> tuple[float, float, float]:
    """CPU seconds so far: the coordinators' trees, the PostgreSQL cluster's, this process's."""
    server = tree_cpu([postgres.postmaster()]) if postgres is not None else 0.0
    return tree_cpu(c.pid for c in started), server, time.process_time()


async def one_run(
    workdir: Path,
    config: Config,
    args: argparse.Namespace,
    batched: bool,
    postgres: Postgres | None,
) -> Outcome:
    operator = Identity.generate()
    pg = postgres if config.store == "postgresql" else None
    async with coordinators(workdir, config, operator, pg, args.rechecks) as (started, db):
        urls = [c.url for c in started]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await submit_jobs(session, urls[0], operator, args.hosts, args.urls_per_host)
            peers = [(Identity.generate(), urls[i % len(urls)]) for i in range(args.peers)]
            registering = time.monotonic()
            await asyncio.gather(
                *(
                    http.call(
                        session,
                        "POST",
                        url,
                        "/v1/peers/register",
                        {"name": f"sim-{i}", "slots": 4, "workloads": ["*"], "capacity": CAPACITY},
                        identity=peer,
                    )
                    for i, (peer, url) in enumerate(peers)
                )
            )
            if pg is not None and args.analyze:
                await asyncio.to_thread(pg.analyze, db)
            # The first plan waits SETTLE_SECONDS after the first registration (so that peers
            # starting together all get hosts): nothing is leased meanwhile, and that wait is
            # not the coordinator's cost, so the clock starts after it.
            await asyncio.sleep(max(0.0, registering + host_planning.SETTLE_SECONDS + 0.1 - time.monotonic()))
            tally = Tally(args.hosts, args.max_errors)  # one unit per host (see the module docstring)
            before = cpu_now(started, pg)
            began = time.perf_counter()
            workers = [asyncio.create_task(simulated_peer(session, url, peer, batched, tally)) for peer, url in peers]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(tally.done.wait(), args.batched_seconds if batched else args.anchor_seconds)
            seconds = time.perf_counter() - began
            units, requests = tally.units, tally.requests
            after = cpu_now(started, pg)
            tally.done.set()
            # Requests under way finish (a report's units are then done), but one that hangs
            # is not waited for to its 30 s timeout: it is counted and cancelled.
            _, hanging = await asyncio.wait(workers, timeout=GRACE_SECONDS)
            for worker in hanging:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        died = [c for c in started if c.process.returncode is not None]
    name = f"{config.store} x{config.coordinators} {'batched' if batched else 'anchor'}"
    print(f"  {name}: {units} units in {seconds:.1f} s, {requests} requests, the slowest {tally.slowest:.1f} s")
    if hanging:
        print(f"  {name}: {len(hanging)} requests still under way {GRACE_SECONDS:.0f} s after the run (cancelled)")
    if tally.errors or died:
        print(f"  {name}: {tally.errors.total()} failed requests, {len(died)} coordinators ended early")
        for text, count in tally.errors.most_common(5):
            print(f"    {count} x {text}")
        for n, c in enumerate(started):
            lines = [line for line in c.log.read_text(errors="replace").splitlines() if line.strip()]
            # Its records' first lines (a traceback's lines are indented) and the exceptions named.
            heads = collections.Counter(
                re.sub(r" at 0x[0-9a-f]+", "", line[24:] if line[:4].isdigit() else line)  # no time stamp, no ids
                for line in lines
                if not line.startswith(" ") and not line.startswith("Traceback") and line != "" and
                not line.startswith("During handling") and not line.startswith("The above exception")
            )  # fmt: skip
            if heads:
                print(f"    coordinator {n}'s log ({len(lines)} lines), its distinct unindented lines:")
                for text, count in heads.most_common(12):
                    print(f"      {count} x {text[:400]}")
    return Outcome(
        units,
        seconds,
        requests,
        tally.errors.total(),
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
    )


@contextlib.contextmanager
def postgres_cluster(wanted: bool) -> Iterator[Postgres | None]:
    """The bench's PostgreSQL cluster (fsync on), or None when not wanted or not possible."""
    if not wanted:
        yield None
        return
    try:
        from tests import postgres
    except ImportError as exc:  # psycopg missing, say
        print(f"PostgreSQL skipped: {exc}")
        yield None
        return
    reason = postgres.why_not()
    if reason is not None:
        print(f"PostgreSQL skipped: {reason}")
        yield None
        return
    with postgres.cluster(durable=True) as cluster:
        yield Postgres(cluster)


def configurations(args: argparse.Namespace, postgres: Postgres | None) -> list[Config]:
    chosen = []
    for store in args.stores:
        if store == "postgresql" and postgres is None:
            continue
        for n in args.coordinators:
            if store == "sqlite" and n > 1:
                print(f"sqlite with {n} coordinators skipped: one SQLite file has one coordinator")
                continue
            chosen.append(Config(store, n))
    return chosen


def print_table(args: argparse.Namespace, results: dict[Config, list[tuple[Outcome, Outcome]]]) -> None:
    print(
        f"coordinator throughput: {args.peers} simulated peers, {args.hosts} hosts x {args.urls_per_host} URLs, "
        f"rechecks {'on' if args.rechecks else 'off'}{', ANALYZE before the clock' if args.analyze else ''}; "
        f"{os.cpu_count()} cores shared by the coordinators, "
        "PostgreSQL and the simulated peers"
    )
    print(
        "CPU: ms of user+sys per unit done over the timed run; server = the coordinators with their children"
        " (+ the PostgreSQL cluster: 'pg' of it), bench = this process (the simulated peers)"
    )
    print(
        "| store | coordinators | run | batched units/s | anchor units/s | server CPU ms/unit, batched (pg) "
        "| server CPU ms/unit, anchor (pg) | bench CPU ms/unit, batched / anchor | failed requests |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def ms(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.3f}"

    def cpu(o: Outcome) -> str:
        total = ms(o.per_unit(o.coordinator_cpu + o.server_cpu))
        return f"{total} ({ms(o.per_unit(o.server_cpu))})" if o.server_cpu else total

    for config, runs in results.items():
        for n, (b, a) in enumerate(runs, 1):
            print(
                f"| {config.store} | {config.coordinators} | {n} | {b.rate:,.0f} | {a.rate:,.0f} | {cpu(b)} | {cpu(a)} "
                f"| {ms(b.per_unit(b.bench_cpu))} / {ms(a.per_unit(a.bench_cpu))} | {b.errors} / {a.errors} |"
            )
    one, two = Config("postgresql", 1), Config("postgresql", 2)
    if one in results:
        rates = [b.rate for b, _ in results[one]]
        met = "met" if min(rates) >= TARGET_PG_ONE else "NOT met"
        shown = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"target: PostgreSQL, one coordinator, batched >= {TARGET_PG_ONE:,.0f} units/s: {met} ({shown})")
    if one in results and two in results:
        base = statistics.mean(b.rate for b, _ in results[one])
        ratio = statistics.mean(b.rate for b, _ in results[two]) / base if base else math.nan
        met = "met" if ratio >= TARGET_TWO_OVER_ONE else "NOT met"
        print(f"target: two coordinators >= {TARGET_TWO_OVER_ONE}x one (batched, means): {ratio:.2f}x, {met}")


async def main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    with (
        postgres_cluster("postgresql" in args.stores) as postgres,
        tempfile.TemporaryDirectory(prefix="osaas-bench-") as tmp,
    ):
        chosen = configurations(args, postgres)
        results: dict[Config, list[tuple[Outcome, Outcome]]] = {c: [] for c in chosen}
        for round_ in range(args.repeat):  # configurations alternate, so the noise spreads over all
            for config in chosen:
                pair = []
                for kind in ("batched", "anchor"):
                    workdir = Path(tmp) / f"{config.store}-{config.coordinators}-{round_}-{kind}"
                    workdir.mkdir()
                    pair.append(await one_run(workdir, config, args, kind == "batched", postgres))
                results[config].append((pair[0], pair[1]))
    print_table(args, results)
    print(f"wall time {time.perf_counter() - began:.0f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--coordinators", nargs="+", type=int, default=[1, 2], help="how many coordinators (a list)")
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--urls-per-host", type=int, default=5)
    parser.add_argument("--peers", type=int, default=200)
    parser.add_argument("--anchor-seconds", type=float, default=10.0)
    parser.add_argument("--batched-seconds", type=float, default=60.0, help="the batched run's time cap")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every configuration, alternated")
    parser.add_argument(
        "--no-rechecks",
        dest="rechecks",
        action="store_false",
        help="serve with rechecks=False: no answer checked again, no known answers planted in units",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="PostgreSQL: ANALYZE the database once the job is in and the peers registered, before the clock starts",
    )
    parser.add_argument(
        "--max-errors", type=int, default=50, help="a run ends once this many requests failed (it has failed)"
    )
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.coordinators):
        parser.error("--coordinators: at least 1")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
