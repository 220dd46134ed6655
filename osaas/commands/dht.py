"""`osaas dht serve | lookup`: DHT nodes and what they know."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from osaas.commands._shared import (
    EXIT_OK,
    UsageError,
    _host_port,
    _host_port_list,
    _network,
    _run_until_signal,
    _setup_logging,
    log,
)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dht = commands.add_parser("dht", help="DHT nodes and what they know").add_subparsers(metavar="ACTION")
    dht_serve = dht.add_parser("serve", help="run a standalone DHT (bootstrap) node")
    dht_serve.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT")
    dht_serve.add_argument("--bootstrap", type=_host_port_list, default=(), metavar="HOST:PORT[,...]")
    dht_serve.add_argument("--state", type=Path, help="file to keep the known contacts in, for a fast rejoin")
    dht_serve.set_defaults(run=_cmd_dht_serve)
    lookup = dht.add_parser("lookup", help="print what the DHT knows")
    lookup.add_argument("what", choices=["coordinators"])
    lookup.add_argument("--network", type=_network, help="the network's name (default: the --network-file's)")
    lookup.add_argument("--network-file", type=Path, metavar="FILE", help="the network's file (`osaas network keygen`)")
    lookup.add_argument("--network-key", metavar="PUBKEY", help="the network's key (64 hex digits)")
    lookup.add_argument("--bootstrap", type=_host_port_list, required=True, metavar="HOST:PORT[,...]")
    lookup.add_argument("--json", action="store_true")
    lookup.set_defaults(run=_cmd_dht_lookup)


def _cmd_dht_serve(args: argparse.Namespace) -> int:
    from overlay.dht import DhtNode

    _setup_logging(logging.INFO)

    async def main_coro(stop: asyncio.Event) -> None:
        async with DhtNode(args.listen, args.bootstrap, state_path=args.state) as dht:
            log.info("DHT node listening on %s:%d with %d neighbours", *dht.address, len(dht.neighbours()))
            await stop.wait()

    try:
        _run_until_signal(main_coro)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror or exc}") from exc
    return EXIT_OK


def _cmd_dht_lookup(args: argparse.Namespace) -> int:
    from osaas.commands.network import parse_network_key, read_network_file
    from overlay.announcements import CoordinatorAnnouncement
    from overlay.dht import DhtNode
    from peer.discovery import announcements

    _setup_logging(logging.WARNING)
    if args.network_file is not None:
        network, key = read_network_file(args.network_file)
        if args.network not in (None, network):
            raise UsageError(f"{args.network_file} is for network {network!r}, not --network {args.network}")
    elif args.network_key is not None:
        network = args.network or "public"
        try:
            key = parse_network_key(args.network_key)
        except ValueError as exc:
            raise UsageError(f"--network-key: {exc}") from exc
    else:
        raise UsageError("give --network-file FILE or --network-key KEY: only admitted coordinators are listed")
    listen_host = "127.0.0.1" if all(h.startswith("127.") or h == "localhost" for h, _ in args.bootstrap) else "0.0.0.0"

    async def lookup() -> list[CoordinatorAnnouncement]:
        async with DhtNode((listen_host, 0), args.bootstrap, client_only=True) as dht:
            if not dht.neighbours():
                raise UsageError(f"no DHT node answered at {', '.join(f'{h}:{p}' for h, p in args.bootstrap)}")
            return await announcements(dht, network, key)

    found = asyncio.run(lookup())
    now = time.time()
    for a in sorted(found, key=lambda a: a.url):
        if args.json:
            shown = {k: v for k, v in a.payload().items() if k != "cert"}
            print(json.dumps({"public_key": a.public_key, "issued_at": a.issued_at} | shown))
        else:
            print(
                f"{a.url}  key {a.public_key[:16]}…  load {a.load}  peers {a.peers}  "
                f"workloads {','.join(a.workloads)}  announced {max(0, now - a.issued_at):.0f} s ago"
            )
    if not found and not args.json:
        print(f"no admitted coordinators announced in network {network!r}", file=sys.stderr)
    return EXIT_OK
