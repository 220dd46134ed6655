"""How many work units a coordinator leases and takes reports for per second.

A real coordinator (`coordinator.api.serve` on 127.0.0.1, SQLite in a temp dir) runs in a
subprocess; simulated peers in this process register, lease and report over real signed HTTP
(`overlay.http.call`, Ed25519 keys from `overlay.identity`). A simulated peer does no fetching:
it answers every unit at once with an honest-looking result for each URL, so the figure is the
coordinator's own cost per unit (HTTP, signatures, msgpack, SQLite with synchronous=FULL).

The job: `--hosts` hosts of `--urls-per-host` URLs, submitted over HTTP as link-check jobs of
1,000 seeds each (the most one job takes), depth 0. With 5 URLs per host each host is one unit
(a new peer's unit holds 20 URLs), so every host is leased exactly once and host pacing (one
unit per host at a time, a 1 s rest between units) never holds the peers back: with 2,000 hosts
of 50 URLs, pacing alone would cap the rate at 2,000 units/s, whatever the coordinator costs.

Two runs, each against a fresh coordinator:
    batched   every peer leases up to 256 units per request and reports them in one
              POST /v1/reports/batch
    anchor    one unit per request: lease max_units=1, POST /v1/reports per unit
The anchor runs at most `--anchor-seconds`; its rate counts the units it finished meanwhile.

    .venv/bin/python -m bench.coordinator_throughput [--hosts 20000] [--urls-per-host 5] [--peers 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from overlay import http
from overlay.identity import Identity
from overlay.wire_reports import MAX_REPORT_BATCH

SEEDS_PER_JOB = 1000
CAPACITY = 10_000_000.0  # bytes/s each simulated peer says it sustains

# Without rate limits: the bench's peers all come from one address, and what it measures is
# the coordinator's cost per unit, not how it holds back a crowd (`coordinator.rate_limits`).
_SERVER = """
import asyncio, sys
from pathlib import Path
from coordinator.api import serve
from coordinator.rate_limits import Rate, RateLimits, Route
free = {route: Rate(1e6, 10**6) for route in Route}
asyncio.run(serve(
    "127.0.0.1", 0, Path(sys.argv[1]), operator_keys=[sys.argv[2]], ready=lambda port: print(port, flush=True),
    rate_limits=RateLimits(free, free),
))
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    units: int
    seconds: float
    requests: int

    @property
    def rate(self) -> float:
        return self.units / self.seconds if self.seconds > 0 else 0.0


@contextlib.asynccontextmanager
async def coordinator(workdir: Path, operator: Identity) -> AsyncIterator[str]:
    """A coordinator subprocess on a fresh database, `operator` one of its operators; yields its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVER,
        str(workdir / "coordinator.sqlite"),
        operator.public_hex,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the coordinator did not start")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        process.terminate()
        await process.wait()


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


class Tally:
    def __init__(self, target: int) -> None:
        self.units = 0
        self.requests = 0
        self.target = target
        self.done = asyncio.Event()

    def add(self, units: int, requests: int) -> None:
        self.units += units
        self.requests += requests
        if self.units >= self.target:
            self.done.set()


async def simulated_peer(
    session: aiohttp.ClientSession, url: str, identity: Identity, batched: bool, tally: Tally
) -> None:
    lease_request = {
        "max_units": MAX_REPORT_BATCH if batched else 1,
        "workloads": ["*"],
        "usage": {"capacity": CAPACITY, "used": 0},
    }
    while not tally.done.is_set():
        granted = await http.call(session, "POST", url, "/v1/leases", lease_request, identity=identity)
        leases = granted["leases"]
        if not leases:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(tally.done.wait(), granted["retry_after"] or 1.0)
            tally.add(0, 1)
            continue
        if batched:
            answers = await http.call(
                session,
                "POST",
                url,
                "/v1/reports/batch",
                {"reports": [answer(lease) for lease in leases]},
                identity=identity,
            )
            assert all(verdict["accepted"] for verdict in answers["results"]), answers
            tally.add(len(leases), 2)
        else:
            for lease in leases:
                reply = await http.call(session, "POST", url, "/v1/reports", answer(lease), identity=identity)
                assert reply["accepted"], reply
            tally.add(len(leases), 1 + len(leases))


async def one_run(workdir: Path, args: argparse.Namespace, batched: bool, limit: float | None) -> Outcome:
    operator = Identity.generate()
    async with coordinator(workdir, operator) as url:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await submit_jobs(session, url, operator, args.hosts, args.urls_per_host)
            peers = [Identity.generate() for _ in range(args.peers)]
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
                    for i, peer in enumerate(peers)
                )
            )
            tally = Tally(target=args.hosts)  # one unit per host (see the module docstring)
            started = time.perf_counter()
            workers = [asyncio.create_task(simulated_peer(session, url, peer, batched, tally)) for peer in peers]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(tally.done.wait(), limit)
            seconds = time.perf_counter() - started
            tally.done.set()
            await asyncio.gather(*workers, return_exceptions=True)
            return Outcome(tally.units, seconds, tally.requests)


async def main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="osaas-bench-") as tmp:
        (Path(tmp) / "batched").mkdir()
        (Path(tmp) / "anchor").mkdir()
        batched = await one_run(Path(tmp) / "batched", args, True, None)
        anchor = await one_run(Path(tmp) / "anchor", args, False, args.anchor_seconds)
    print(f"coordinator throughput: {args.peers} simulated peers, {args.hosts} hosts x {args.urls_per_host} URLs")
    print(f"{'run':<34}{'units':>8}{'seconds':>10}{'units/s':>10}{'requests':>10}")
    for name, outcome in (("batched (256 per lease/report)", batched), ("anchor (1 unit per request)", anchor)):
        print(f"{name:<34}{outcome.units:>8}{outcome.seconds:>10.2f}{outcome.rate:>10.0f}{outcome.requests:>10}")
    ratio = batched.rate / anchor.rate if anchor.rate else float("inf")
    print(f"batched / anchor: {ratio:.1f}x   (wall time {time.perf_counter() - began:.0f} s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20_000)
    parser.add_argument("--urls-per-host", type=int, default=5)
    parser.add_argument("--peers", type=int, default=200)
    parser.add_argument("--anchor-seconds", type=float, default=25.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
