"""DHT lookup benchmark: a flash crowd of N real nodes, spread over several processes, a share of
them dead, then every live node looks up records stored under two keys.

    python -m bench.dht_lookup [--nodes 1000 5000] [--processes 4] [--dead 0.1]

Each node binds an address of its own in 127.0.0.0/8 (127.1.0.1, 127.1.0.2, ...), as nodes on
different hosts would. Per N:

1. Three seed nodes start, one after another, in a process of their own (bootstrap nodes are
   long-lived nodes of their own, not one of thousands in a shared event loop).
2. Every other node starts at once (a flash crowd): `DhtNode.start()` with the seeds as its
   bootstrap addresses, all of a process's nodes gathered together, all processes released at
   the same moment. `--processes` (4 by default) hold these nodes.
3. Two coordinators each publish a record under each of two keys, from random nodes.
4. `--dead` of the nodes (10% by default; seeds aside) are closed without a word: they stay in everyone's
   routing table and never answer again.
5. Right away (no ping has evicted them), every live node looks up both keys, `--concurrency`
   lookups at a time in each process.

Printed per N: the bootstrap seconds (the slowest process), nodes left with no contacts, the
share of lookups that found both records, lookup p50/p95/max milliseconds, crawl rounds (hops:
the longest chain of answers, each naming the node asked next) mean and max against
log2 N + 2, RPCs per lookup, the longest stall of any process's event loop (how late a 50 ms
timer fired) and RSS per node. Targets: 100% found, p95 < 1 s, max < 5 s, rounds <= log2 N + 2.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from overlay import records
from overlay.dht import DhtNode
from overlay.identity import Identity

KEYS = ("coordinators/bench", "swarms/bench")
SEEDS = 3
FIRST_ADDRESS = ipaddress.IPv4Address("127.1.0.1")


def _host(index: int) -> str:
    return str(FIRST_ADDRESS + index)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


# ---- a worker process: some of the nodes, driven by one-line commands on stdin ----------------


class _LoopWatch:
    """How late a 50 ms timer fires: the longest stall of this event loop since the last reset."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(0.05)
            self.worst = max(self.worst, loop.time() - began - 0.05)

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst


class _Worker:
    def __init__(self, first: int, count: int, options: dict[str, Any]) -> None:
        self.first = first
        self.count = count
        self.options = options
        self.nodes: dict[int, DhtNode] = {}
        self.watch = _LoopWatch()
        self.rss_before = _rss_kb()

    async def seeds(self) -> dict[str, Any]:
        addresses: list[tuple[str, int]] = []
        for index in range(self.first, self.first + SEEDS):
            node = DhtNode((_host(index), 0), list(addresses), **self.options)
            await node.start()
            self.nodes[index] = node
            addresses.append(node.address)
        return {"seeds": addresses}

    async def join(self, seeds: list[list[Any]]) -> dict[str, Any]:
        bootstrap = [(host, port) for host, port in seeds]
        joining = {
            index: DhtNode((_host(index), 0), bootstrap, **self.options)
            for index in range(self.first, self.first + self.count)
            if index not in self.nodes
        }
        self.watch.take()
        began = time.perf_counter()
        await asyncio.gather(*(node.start() for node in joining.values()))
        seconds = time.perf_counter() - began
        self.nodes.update(joining)
        return {
            "seconds": seconds,
            "isolated": sum(1 for node in self.nodes.values() if not node.neighbours()),
            "rss_per_node_kb": (_rss_kb() - self.rss_before) / len(self.nodes),
            "stall_s": self.watch.take(),
        }

    async def publish(self, seed: int) -> dict[str, Any]:
        rng = random.Random(seed)
        signers = [Identity.generate() for _ in range(2)]
        stored = []
        for key in KEYS:
            for i, who in enumerate(signers):
                record = records.sign(who, key, {"addr": f"127.0.0.1:{8000 + i}"}, time.time(), 3600.0)
                stored.append(await rng.choice(list(self.nodes.values())).publish(key, record))
        return {"signers": [s.public_key.hex() for s in signers], "stored": stored}

    async def kill(self, indexes: list[int]) -> dict[str, Any]:
        gone = [self.nodes.pop(i) for i in indexes if i in self.nodes]
        await asyncio.gather(*(node.close() for node in gone))
        return {"killed": len(gone)}

    async def lookup(self, signers: list[str], concurrency: int) -> dict[str, Any]:
        wanted = {bytes.fromhex(s) for s in signers}
        jobs = [(node, key) for node in self.nodes.values() for key in KEYS]
        random.Random(self.first).shuffle(jobs)
        results: list[tuple[float, int, int, bool]] = []
        self.watch.take()

        async def one(node: DhtNode, key: str) -> None:
            began = time.perf_counter()
            found = await node.lookup_detailed(key)
            seconds = time.perf_counter() - began
            results.append((seconds, found.rounds, found.rpcs, {r.signer for r in found.records} == wanted))

        pending = iter(jobs)

        async def lane() -> None:
            for node, key in pending:
                await one(node, key)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        seconds, rounds, rpcs, found = (list(column) for column in zip(*results, strict=True))
        return {"seconds": seconds, "rounds": rounds, "rpcs": rpcs, "found": found, "stall_s": self.watch.take()}

    async def close(self) -> dict[str, Any]:
        await asyncio.gather(*(node.close() for node in self.nodes.values()))
        return {"closed": len(self.nodes)}


async def _serve(first: int, count: int, options: dict[str, Any]) -> None:
    worker = _Worker(first, count, options)
    watching = asyncio.create_task(worker.watch.run())
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        name = command.pop("do")
        answer = await getattr(worker, name)(**command)
        print(json.dumps(answer), flush=True)
        if name == "close":
            break
    watching.cancel()


# ---- the parent: workers started, released together, figures gathered -------------------------


class _Workers:
    def __init__(self, children: list[subprocess.Popen[str]]) -> None:
        self.children = children

    def ask(self, command: dict[str, Any], which: list[int] | None = None) -> list[dict[str, Any]]:
        """Send `command` to the workers (all by default) at once, then read each one's answer."""
        chosen = [self.children[i] for i in (which if which is not None else range(len(self.children)))]
        for child in chosen:
            assert child.stdin is not None
            child.stdin.write(json.dumps(command) + "\n")
            child.stdin.flush()
        answers = []
        for child in chosen:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line:
                raise RuntimeError(f"a worker exited ({child.wait()}) before answering {command['do']}")
            answers.append(json.loads(line))
        return answers


@contextmanager
def _started(count: int, processes: int, options: dict[str, Any], log: IO[str]) -> Iterator[_Workers]:
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.dht_lookup", "--worker", str(first), str(end - first), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        for first, end in _bounds(count, processes)
    ]
    try:
        yield _Workers(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()


def _measure(
    count: int, processes: int, dead: float, concurrency: int, seed: int, options: dict[str, Any], log: IO[str]
) -> dict[str, Any]:
    rng = random.Random(seed)
    with _started(count, processes, options, log) as workers:
        seeds = workers.ask({"do": "seeds"}, [0])[0]["seeds"]
        joined = workers.ask({"do": "join", "seeds": seeds})
        published = workers.ask({"do": "publish", "seed": seed}, [1])[0]
        gone = sorted(rng.sample(range(SEEDS, count), int(dead * count)))
        for i, (first, end) in enumerate(_bounds(count, processes)):
            workers.ask({"do": "kill", "indexes": [g for g in gone if first <= g < end]}, [i])
        looked = workers.ask({"do": "lookup", "signers": published["signers"], "concurrency": concurrency})
        workers.ask({"do": "close"})
    seconds = [s for answer in looked for s in answer["seconds"]]
    rounds = [r for answer in looked for r in answer["rounds"]]
    return {
        "nodes": count,
        "processes": processes,
        "dead": len(gone),
        "bootstrap_s": max(a["seconds"] for a in joined),
        "isolated": sum(a["isolated"] for a in joined),
        "stored": min(published["stored"]),
        "lookups": len(seconds),
        "found": sum(f for answer in looked for f in answer["found"]) / len(seconds),
        "p50_ms": statistics.median(seconds) * 1000,
        "p95_ms": _percentile(seconds, 0.95) * 1000,
        "max_ms": max(seconds) * 1000,
        "rounds_mean": statistics.mean(rounds),
        "rounds_max": max(rounds),
        "rounds_target": math.floor(math.log2(count)) + 2,
        "rpcs": statistics.mean(r for answer in looked for r in answer["rpcs"]),
        "stall_join_s": max(a["stall_s"] for a in joined),
        "stall_lookup_s": max(a["stall_s"] for a in looked),
        "rss_per_node_kb": statistics.mean(a["rss_per_node_kb"] for a in joined),
    }


def _bounds(count: int, processes: int) -> list[tuple[int, int]]:
    """The node indexes each worker holds: the seeds in one of their own (bootstrap nodes are
    long-lived nodes of their own), then the others in `processes` shares."""
    rest = count - SEEDS
    shares = [rest // processes + (1 if i < rest % processes else 0) for i in range(processes)]
    firsts = [SEEDS + sum(shares[:i]) for i in range(processes)]
    return [(0, SEEDS)] + [(first, first + share) for first, share in zip(firsts, shares, strict=True)]


HEADER = (
    "nodes procs dead bootstr_s isolated stored  found p50_ms p95_ms  max_ms rounds avg/max target"
    " rpcs/look stall join/look s RSS/node_kB"
)


def _row(r: dict[str, Any]) -> str:
    return (
        f"{r['nodes']:>5} {r['processes']:>5} {r['dead']:>4} {r['bootstrap_s']:>9.1f} {r['isolated']:>8}"
        f" {r['stored']:>6} {r['found']:>6.1%} {r['p50_ms']:>6.1f} {r['p95_ms']:>6.1f} {r['max_ms']:>7.1f}"
        f" {r['rounds_mean']:>6.1f}/{r['rounds_max']:<3} {r['rounds_target']:>6} {r['rpcs']:>9.1f}"
        f" {r['stall_join_s']:>8.2f}/{r['stall_lookup_s']:<6.2f} {r['rss_per_node_kb']:>11.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--processes", type=int, default=4, help="processes the nodes are spread over")
    parser.add_argument("--dead", type=float, default=0.1, help="share of nodes closed before the lookups")
    parser.add_argument("--concurrency", type=int, default=2, help="lookups at once in each process")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ping-interval", type=float, help="DhtNode's ping_interval (its default if not given)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        first, count, options = args.worker
        asyncio.run(_serve(int(first), int(count), json.loads(options)))
        return 0
    options = {} if args.ping_interval is None else {"ping_interval": args.ping_interval}
    print(HEADER, flush=True)
    for count in args.nodes:
        if count < SEEDS + args.processes:
            parser.error(f"--nodes must be at least {SEEDS + args.processes}")
        # kademlia logs every timeout: the workers' stderr is kept in a file, shown if they fail.
        with tempfile.TemporaryFile("w+") as log:
            try:
                row = _measure(count, args.processes, args.dead, args.concurrency, args.seed, options, log)
            except Exception:
                log.seek(0)
                print(log.read()[-4000:], file=sys.stderr)
                raise
        print(_row(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
