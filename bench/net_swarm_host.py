"""What runs inside each host of `bench.net_swarm`: one process per host, in its own network
namespace, started by the bench and told what to do by files in a directory they share.

    python -m bench.net_swarm_host seeder --dir D --ip IP       the coordinator's side
    python -m bench.net_swarm_host peer --dir D --ip IP --index I [--max-up B] [--max-down B]
    python -m bench.net_swarm_host http --dir D --ip IP --index I   the plain-HTTP anchor

The seeder runs the DHT bootstrap node, the coordinator's `BundleSeeder` (announced in the DHT
as a coordinator announces it) and a plain HTTP server of the same archive. A peer runs what
`osaas peer run` runs for bundles: a DHT node, a torrent session at the rates the agent sets
(`bundle_upload_limit` of its seeding rate, `--bundle-upload-rate` or the peer's default,
and the budget's upload; the budget's download), and a `BundleCache` whose `ensure` fetches, verifies and unpacks. An http client
downloads the archive once with the standard library.

The protocol, all in D: the seeder writes `seeder.json` (its torrent port) when it seeds; each
client writes `ready-ROLE-I` when it can start, waits for `go` (which holds the start time,
`time.time()` of the bench), writes `done-ROLE-I.json` when it holds the bundle, and on SIGTERM
writes `result-ROLE-I.json`: its times and the byte counters of its interface, sampled every
`SAMPLE` seconds from inside the namespace, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import signal
import time
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

SAMPLE = 0.25  # seconds between readings of the interface's byte counters
DHT_PORT = 4000
HTTP_PORT = 8080
INTERFACE = "eth0"
_STATISTICS = Path("/sys/class/net") / INTERFACE / "statistics"


def write_json(path: Path, obj: object) -> None:
    """Whole or not at all: the bench polls for these files."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class Counters:
    """The interface's (time, rx bytes, tx bytes), this process's CPU seconds, and the
    interface's (rx packets, tx packets) so far, read every SAMPLE seconds in a task."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int, float, int, int]] = []
        self._task: asyncio.Task[None] | None = None

    def read(self) -> None:
        rx, tx, rx_packets, tx_packets = (
            int((_STATISTICS / name).read_text()) for name in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
        )
        self.samples.append((time.time(), rx, tx, time.process_time(), rx_packets, tx_packets))

    async def _run(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(SAMPLE)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.read()


async def wait_for_go(directory: Path) -> float:
    """The bench's start time, once it has said go."""
    go = directory / "go"
    while True:
        try:
            return float(go.read_text())
        except (FileNotFoundError, ValueError):
            await asyncio.sleep(0.02)


class FetchedAt(logging.Handler):
    """When the torrent session logged that a fetch ended ("fetched ..."): the last piece
    written, before the bundle is verified and unpacked. Read from the log so that the
    peer does nothing it would not do anyway."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.at is None and isinstance(record.msg, str) and record.msg.startswith("fetched "):
            self.at = record.created


def terminated() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


# ---- the seeder ---------------------------------------------------------------------------


async def seeder(args: argparse.Namespace) -> None:
    from aiohttp import web

    from bench.bundle_swarm import published_bundle
    from coordinator.seeder import SUPER_SEED_FROM, BundleSeeder
    from overlay.dht import DhtNode
    from overlay.identity import Identity
    from workloads import bundle

    directory: Path = args.dir
    built = bundle.load_built(directory / "bundle")
    signed = built.signed
    assert signed.info_hash is not None
    stop = terminated()
    counters = Counters()
    async with AsyncExitStack() as stack:
        dht = await stack.enter_async_context(DhtNode((args.ip, DHT_PORT)))
        seed = await stack.enter_async_context(
            BundleSeeder(
                (args.ip, 0),
                identity=Identity.generate(),
                state_dir=directory / "seeder",
                upload_rate=args.seed_rate,
                dht=dht,
                network="bench",
                announce_host=args.ip,
                super_seed_from=SUPER_SEED_FROM if args.super_seed else 2**62,
                own_origin=args.own_origin,
            )
        )
        published = published_bundle(signed)
        await seed.seed(published, built.archive_path.parent, built.torrent_path.read_bytes())

        archive = built.archive_path

        async def whole_archive(_request: web.Request) -> web.FileResponse:
            return web.FileResponse(archive)

        app = web.Application()
        app.router.add_get("/bundle.tar", whole_archive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, args.ip, HTTP_PORT).start()

        counters.start()
        write_json(directory / "seeder.json", {"port": seed.listen_port, "http_port": HTTP_PORT})
        await stop.wait()
        await counters.stop()
        stats = seed.stats(signed.info_hash)
        write_json(
            directory / "result-seeder.json",
            {"payload_up": stats.total_upload, "samples": counters.samples},
        )


# ---- a peer -------------------------------------------------------------------------------


async def peer(args: argparse.Namespace) -> None:
    from overlay import wire
    from overlay.dht import DhtNode
    from overlay.identity import Identity
    from overlay.torrent import TorrentSession
    from peer.budget import Budget
    from peer.bundles import BundleCache
    from peer.controls import bundle_upload_limit
    from peer.settings import PeerSettings, announce_host

    directory: Path = args.dir
    me = directory / f"peer-{args.index}"
    job = json.loads((directory / "job.json").read_text())
    seeds = [wire.SwarmAddress(job["seed_host"], job["seed_port"])]
    info = wire.BundleInfo(
        job["name"], job["version"], bytes.fromhex(job["info_hash"]), bytes.fromhex(job["manifest"]), seeds
    )
    ref = wire.BundleRef(info.name, info.version, info.info_hash)
    # As `osaas peer run --bootstrap ... --max-up/--max-down` sets itself up (peer/agent.py):
    # listening on every address at a port of its choosing, announcing the address of its
    # route to the bootstrap node, seeding at the lower of its own limit and the budget's.
    budget = Budget(max_up=args.max_up, max_down=args.max_down)
    settings = PeerSettings(data_dir=me, bootstrap=((job["seed_host"], DHT_PORT),), budget=budget)
    if args.bundle_upload_rate:
        settings = dataclasses.replace(settings, bundle_upload_rate=args.bundle_upload_rate)
    upload_rate = bundle_upload_limit(settings.bundle_upload_rate, budget)
    stop = terminated()
    counters = Counters()
    fetched = FetchedAt()
    logging.getLogger("overlay.torrent").addHandler(fetched)
    async with AsyncExitStack() as stack:
        dht = await stack.enter_async_context(DhtNode(settings.dht_listen, settings.bootstrap))
        torrents = await stack.enter_async_context(
            TorrentSession(
                settings.torrent_listen,
                upload_rate=upload_rate,
                download_rate=budget.max_down,
                state_dir=me / "torrent",
            )
        )
        cache = await stack.enter_async_context(
            BundleCache(
                me / "bundles",
                torrents,
                identity=Identity.generate(),
                dht=dht,
                announce_host=announce_host(settings),
            )
        )
        counters.start()
        (directory / f"ready-peer-{args.index}").touch()
        began = await wait_for_go(directory)
        cpu_began = time.process_time()
        error = None
        try:
            await cache.ensure(ref, info)
        except Exception as exc:  # reported to the bench, which says which peer failed and why
            error = f"{type(exc).__name__}: {exc}"
        held = time.time()
        cpu = time.process_time() - cpu_began  # this process's CPU seconds until it held the bundle
        write_json(directory / f"done-peer-{args.index}.json", {"hold": held - began, "error": error})
        await stop.wait()
        await counters.stop()
        stats = torrents.stats(ref.info_hash) if ref.info_hash in torrents.torrents() else None
        write_json(
            directory / f"result-peer-{args.index}.json",
            {
                "began": began,
                "fetched": fetched.at,
                "held": held,
                "cpu": cpu,
                "error": error,
                "upload_limit": upload_rate,
                "download_limit": budget.max_down,
                "payload_up": stats.total_upload if stats else 0,
                "payload_down": stats.total_download if stats else 0,
                "samples": counters.samples,
            },
        )


# ---- an HTTP client (the anchor) ----------------------------------------------------------


def _download(url: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    got = 0
    with urllib.request.urlopen(url, timeout=600) as response:
        while chunk := response.read(1 << 16):
            digest.update(chunk)
            got += len(chunk)
    return got, digest.hexdigest()


async def http(args: argparse.Namespace) -> None:
    directory: Path = args.dir
    job = json.loads((directory / "job.json").read_text())
    url = f"http://{job['seed_host']}:{HTTP_PORT}/bundle.tar"
    stop = terminated()
    counters = Counters()
    counters.start()
    (directory / f"ready-http-{args.index}").touch()
    began = await wait_for_go(directory)
    cpu_began = time.process_time()
    error = None
    try:
        got, sha256 = await asyncio.to_thread(_download, url)
        if sha256 != job["archive_sha256"]:
            error = f"got {got} bytes that do not hash to the archive's sha256"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    held = time.time()
    cpu = time.process_time() - cpu_began
    write_json(directory / f"done-http-{args.index}.json", {"hold": held - began, "error": error})
    await stop.wait()
    await counters.stop()
    write_json(
        directory / f"result-http-{args.index}.json",
        {"began": began, "held": held, "cpu": cpu, "error": error, "samples": counters.samples},
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["seeder", "peer", "http"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--ip", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--max-up", type=int, default=None, help="the peer's budget: upload bytes/s")
    parser.add_argument("--max-down", type=int, default=None, help="the peer's budget: download bytes/s")
    parser.add_argument(
        "--bundle-upload-rate", type=int, default=None, help="the peer's own seeding limit (default: the peer's)"
    )
    parser.add_argument("--no-super-seed", dest="super_seed", action="store_false", help="the seeder never super-seeds")
    parser.add_argument("--own-origin", action="store_true", help="the seeder is overlay.origin, not libtorrent")
    parser.add_argument("--seed-rate", type=int, default=None, help="the coordinator's bundle upload bytes/s")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    # Dozens of DHT nodes time out on each other now and then; each is logged by kademlia.
    logging.basicConfig(level=logging.WARNING, format=f"%(created).3f {args.role}-{args.index} %(name)s %(message)s")
    for noisy in ("kademlia", "rpcudp"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    for ours in ("overlay", "peer", "coordinator"):  # when each step happened, in the host's log
        logging.getLogger(ours).setLevel(logging.INFO)
    roles: dict[str, Any] = {"seeder": seeder, "peer": peer, "http": http}
    asyncio.run(roles[args.role](args))


if __name__ == "__main__":
    main()
