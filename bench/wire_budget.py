"""The volunteer's budget at the network interface: a peer's egress fetching from a fast site
in another network namespace, its interface counters read every quarter second.

    sudo .venv/bin/python -m bench.wire_budget [--down 250kB] [--up 15kB] [--fetches 4]
        [--max-body 600000] [--seconds 16]

Prints what the interface received per second against --down, and the most any 10 s and any
1 s window carried. Every other body is 1.5 MB (abandoned at --max-body when that is smaller),
the others 300 kB. Needs root (network namespaces); the namespace tests of the budget
(tests/test_netns_budget.py) run the same scripts. Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

SITE_SCRIPT = """
import asyncio, sys
from aiohttp import web

CHUNK = b"x" * 65536

async def body(request):
    size = int(request.match_info["size"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    await response.prepare(request)
    sent = 0
    while sent < size:
        piece = CHUNK[: min(len(CHUNK), size - sent)]
        await response.write(piece)
        sent += len(piece)
    return response

app = web.Application()
app.router.add_get("/bytes/{size}", body)
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), print=None)
"""

FETCHER_SCRIPT = """
import asyncio, sys, tempfile, time
from pathlib import Path
from typing import Literal
from peer.allowance import Allowance
from peer.budget import Budget
from peer.egress import Egress, EgressConfig
from workloads.process_api import FetchRequest

site, down, up, fetches, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
max_body = int(sys.argv[6]) if len(sys.argv) > 6 else 600_000

async def worker(egress, n, deadline):
    i = 0
    while time.monotonic() < deadline:
        # Every other body is longer than max_body (as the test sets it): read to the cap, then abandoned.
        size = 1_500_000 if (n + i) % 2 else 300_000
        result = await egress.fetch(FetchRequest(id=n * 1000 + i, method="GET", url=f"{site}/bytes/{size}", want_body=True))
        if result.error is not None:  # the test asserts that the budget was used
            print(result.error, result.message, flush=True)
            await asyncio.sleep(0.2)
        i += 1

async def main():
    budget = Budget(max_down=down, max_up=up, max_fetches=fetches)
    allowance = Allowance(budget, Path(tempfile.mkdtemp()))
    # A generous connect timeout: on a busy machine the site can be slow to accept.
    config = EgressConfig(
        allow_private=True, respect_robots=False, max_body=max_body, per_host_concurrency=fetches, connect_timeout=15
    )
    async with Egress(config, allowance) as egress:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(worker(egress, n, deadline) for n in range(fetches)))
    print("down", allowance.down.used, "up", allowance.up.used, "seconds", round(time.monotonic() - deadline + seconds, 1), flush=True)

asyncio.run(main())
"""


def main(argv: list[str] | None = None) -> int:
    from peer.budget import parse_rate
    from tests import netns
    from tests.netns import sample_while, stop, wait_for
    from tests.wire_windows import window_maxima

    parser = argparse.ArgumentParser(prog="python -m bench.wire_budget", description=__doc__.splitlines()[0])
    parser.add_argument("--down", type=parse_rate, default=250_000)
    parser.add_argument("--up", type=parse_rate, default=15_000)
    parser.add_argument("--fetches", type=int, default=4)
    parser.add_argument("--max-body", type=int, default=600_000)
    parser.add_argument("--seconds", type=float, default=16.0)
    args = parser.parse_args(argv)
    reason = netns.netns_reason()
    if reason:
        print(f"wire_budget: {reason}", file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="wire-budget-"))
    with netns.hosts(2) as (site_host, peer_host):
        processes = [site_host.python("-c", SITE_SCRIPT, site_host.ipv4, "8080", log=logs / "site.log")]
        try:

            def listening() -> bool:
                ports = subprocess.run(site_host.command("ss", "-ltn"), capture_output=True, text=True)
                return "8080" in ports.stdout

            wait_for(listening, "the site to listen", 20)
            fetcher = peer_host.python(
                "-c",
                FETCHER_SCRIPT,
                f"http://{site_host.ipv4}:8080",
                str(args.down),
                str(args.up),
                str(args.fetches),
                str(args.seconds + 4),
                str(args.max_body),
                log=logs / "fetcher.log",
            )
            processes.append(fetcher)
            (samples,) = sample_while([peer_host], [fetcher], args.seconds)
        finally:
            stop(processes)
    seconds = samples[-1].at - samples[0].at
    received = samples[-1].rx - samples[0].rx
    print(f"down {args.down} B/s, {args.fetches} fetches, max body {args.max_body}: {seconds:.1f} s")
    print(f"  received at the interface: {received / seconds:,.0f} B/s = {received / seconds / args.down:.3f}x")
    for window in (10.0, 1.0):
        most = window_maxima(samples, window, "rx") / (args.down * window)
        print(f"  most over any {window:g} s: {most:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
