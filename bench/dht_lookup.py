"""DHT lookup benchmark: N real nodes in one process on 127.0.0.1, two coordinators' records
under one key, then every node looks the key up, one lookup at a time.

    python -m bench.dht_lookup [--nodes 100 300 500]

Each N runs in its own child process, so that RSS per node and timings of one size are not
skewed by the ones before it. `--dead 0.3` closes 30% of the nodes, unannounced, after the
records are published and before the lookups, which then run twice: at once, and after every
live node has pinged its contacts once (as the periodic ping does). Per N it prints: bootstrap time, nodes left with no contacts,
median and p95 lookup time, success rate (both records found), RPCs per lookup, crawl rounds
per lookup (the hops: each round asks up to alpha=3 nodes in parallel) against log2(N), and
RSS per node. Targets: 100% found, p95 < 1 s at 500 nodes, rounds <= log2(N).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

from overlay import records
from overlay.dht import DhtNode
from overlay.identity import Identity

HOST = "127.0.0.1"
KEY = "coordinators/bench"
SEEDS = 3


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


async def _lookups(nodes: list[DhtNode], wanted: set[bytes]) -> dict[str, Any]:
    """Every node looks the key up, one at a time."""
    seconds: list[float] = []
    rpcs: list[int] = []
    rounds: list[int] = []
    found = 0
    for node in nodes:
        began = time.perf_counter()
        result = await node.lookup_detailed(KEY)
        seconds.append(time.perf_counter() - began)
        rpcs.append(result.rpcs)
        rounds.append(result.rounds)
        found += {r.signer for r in result.records} == wanted
    return {
        "median_ms": statistics.median(seconds) * 1000,
        "p95_ms": _percentile(seconds, 0.95) * 1000,
        "max_ms": max(seconds) * 1000,
        "found": found / len(nodes),
        "rpcs": statistics.mean(rpcs),
        "rounds_mean": statistics.mean(rounds),
        "rounds_max": max(rounds),
    }


async def _measure(count: int, seed: int, dead: float) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rss_before = _rss_kb()
    async with AsyncExitStack() as stack:
        seeds: list[DhtNode] = []
        for _ in range(SEEDS):
            node = DhtNode((HOST, 0), [s.address for s in seeds])
            seeds.append(await stack.enter_async_context(node))
        started = time.perf_counter()
        rest = [DhtNode((HOST, 0), [s.address for s in seeds]) for _ in range(count - SEEDS)]
        # start() bootstraps through overlay.dht's semaphore, so starting all at once is safe.
        await asyncio.gather(*(node.start() for node in rest))
        for node in rest:
            stack.push_async_callback(node.close)
        common = {
            "nodes": count,
            "bootstrap_s": time.perf_counter() - started,
            "rss_per_node_kb": (_rss_kb() - rss_before) / count,
            "isolated": sum(1 for node in [*seeds, *rest] if not node.neighbours()),
            "log2_n": math.log2(count),
        }
        nodes = [*seeds, *rest]

        coordinators = [Identity.generate() for _ in range(2)]
        for i, who in enumerate(coordinators):
            record = records.sign(who, KEY, {"addr": f"{HOST}:{8000 + i}"}, time.time(), 3600.0)
            await rng.choice(nodes).publish(KEY, record)
        wanted = {who.public_key for who in coordinators}
        if not dead:
            return [common | {"phase": "all up"} | await _lookups(nodes, wanted)]
        # Churn: nodes that vanish without a word, still in everyone's routing table.
        gone = rng.sample(nodes, int(dead * count))
        await asyncio.gather(*(node.close() for node in gone))
        nodes = [node for node in nodes if node not in gone]
        cold = common | {"phase": f"{len(gone)} dead"} | await _lookups(nodes, wanted)
        # What the periodic ping does within PING_INTERVAL of the churn.
        await asyncio.gather(*(node.ping_contacts() for node in nodes))
        warm = common | {"phase": f"{len(gone)} dead, pinged"} | await _lookups(nodes, wanted)
        return [cold, warm]


def _row(r: dict[str, Any]) -> str:
    return (
        f"{r['nodes']:>5} {r['phase']:>16} {r['bootstrap_s']:>9.1f} {r['isolated']:>8} {r['median_ms']:>9.1f} "
        f"{r['p95_ms']:>8.1f} {r['max_ms']:>8.1f} {r['found']:>7.1%} {r['rpcs']:>9.1f} "
        f"{r['rounds_mean']:>6.1f}/{r['rounds_max']:<3} {r['log2_n']:>6.1f} {r['rss_per_node_kb']:>9.0f}"
    )


HEADER = (
    "nodes            phase bootstr_s isolated median_ms   p95_ms   max_ms   found rpcs/look rounds avg/max"
    " log2N  RSS/node_kB"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 300, 500])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dead", type=float, default=0.0, help="fraction of nodes closed before the lookups")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(asyncio.run(_measure(args.child, args.seed, args.dead))))
        return 0
    print(HEADER)
    for count in args.nodes:
        if count <= SEEDS:
            parser.error(f"--nodes must be over {SEEDS}")
        # kademlia and rpcudp log every timeout; the child's stderr is shown only if it fails.
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.dht_lookup",
                "--child",
                str(count),
                "--seed",
                str(args.seed),
                "--dead",
                str(args.dead),
            ],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            print(child.stderr[-4000:], file=sys.stderr)
            return child.returncode
        for row in json.loads(child.stdout.strip().splitlines()[-1]):
            print(_row(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
