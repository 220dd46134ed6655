"""`osaas peer run | status | page`: a volunteer's peer."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from typing import Any

import aiohttp

from osaas.commands._shared import (
    EXIT_OK,
    UsageError,
    _absolute_path,
    _coordinator_url,
    _duration,
    _host_port,
    _host_port_list,
    _ip_address,
    _network,
    _port,
    _positive,
    _public_address,
    _rate,
    _run_until_signal,
    _status_port,
    _with_session,
    add_logging_arguments,
    setup_logging_from,
)
from overlay.identity import IdentityError
from peer.budget import BudgetError, budget_from, default_config_path
from peer.idle import DEFAULT_IDLE_AFTER
from peer.status import DEFAULT_STATUS_PORT, STATUS_HOST, status_text


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    peer = commands.add_parser("peer", help="run a volunteer peer").add_subparsers(metavar="ACTION")
    run = peer.add_parser("run", help="lease and run work units")
    run.add_argument("--coordinator", type=_coordinator_url, metavar="URL", help="work for this coordinator (no DHT)")
    run.add_argument(
        "--bootstrap",
        type=_host_port_list,
        default=(),
        metavar="HOST:PORT[,...]",
        help="DHT nodes to join through; coordinators are found in the DHT",
    )
    run.add_argument(
        "--network",
        type=_network,
        help="the network whose coordinators to work for (default: as last chosen on the peer's page, else public)",
    )
    run.add_argument(
        "--network-file",
        type=_absolute_path,
        action="append",
        default=[],
        metavar="FILE",
        help="a network's file from its operator (`osaas network keygen`): its name and key (repeatable);"
        " the only one given is the network worked for unless --network says otherwise",
    )
    run.add_argument(
        "--network-key",
        metavar="PUBKEY",
        help="the key of the --network (64 hex digits): only coordinators it admitted are worked for",
    )
    run.add_argument(
        "--allow-private-coordinators",
        action="store_true",
        help="contact coordinators announced at loopback, private or link-local addresses (--allow-private does too)",
    )
    run.add_argument(
        "--prefer",
        type=_coordinator_url,
        metavar="URL",
        help="work for this coordinator when it is announced and answers",
    )
    run.add_argument(
        "--dht-listen",
        type=_host_port,
        default=("0.0.0.0", 0),
        metavar="HOST:PORT",
        help="where this peer's DHT node listens (default 0.0.0.0:0)",
    )
    run.add_argument("--data-dir", type=_absolute_path, required=True)
    add_logging_arguments(run)
    run.add_argument("--name", default=None, help="how the coordinator lists this peer")
    run.add_argument("--slots", type=_positive, default=4, help="units run at once (default 4)")
    run.add_argument("--allow-private", action="store_true", help="allow private, loopback and link-local targets")
    run.add_argument(
        "--trust-owner",
        action="append",
        default=[],
        metavar="KEY",
        help="where no sandbox can be built (no bubblewrap, not Linux): run bundles of this owner "
        "(64 hex digits; repeatable; also trusted_owners in the config file); others are refused",
    )
    run.add_argument(
        "--egress-source",
        type=_ip_address,
        metavar="ADDR",
        help="local address workload traffic leaves from (default: the system's choice)",
    )
    run.add_argument(
        "--stop-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM, how long running units may finish before their leases are released",
    )
    run.add_argument(
        "--torrent-listen",
        type=_host_port,
        default=("0.0.0.0", 0),
        metavar="HOST:PORT",
        help="where this peer fetches and seeds bundles (default 0.0.0.0:0)",
    )
    run.add_argument(
        "--public-address",
        type=_public_address,
        metavar="ADDR[:PORT]",
        help="behind NAT: the IP (and the port the NAT forwards to --torrent-listen's) other peers"
        " reach this one's bundle seeding at (default: the address of the route to the network)",
    )
    run.add_argument(
        "--port-mapping",
        action="store_true",
        help="ask the router to forward the torrent port (UPnP, NAT-PMP; off by default): other"
        " peers then fetch bundles from this one at the router's address",
    )
    run.add_argument(
        "--bundle-upload-rate",
        type=_rate,
        metavar="BYTES/S",
        help="cap on seeding bundles to other peers, e.g. 200KB (default: 1MB)",
    )
    run.add_argument(
        "--status-port",
        type=_status_port,
        default=DEFAULT_STATUS_PORT,
        metavar="PORT",
        help=f"serve the peer's status on 127.0.0.1:PORT/status (default {DEFAULT_STATUS_PORT}; 0: any free port; off: not at all)",
    )
    budget = run.add_argument_group(
        "budget",
        f"what the volunteer lends; flags win over the config file (--config, default {default_config_path()})",
    )
    budget.add_argument(
        "--config",
        type=_absolute_path,
        metavar="FILE",
        help="the budget file (TOML: max_down, max_up, cap, max_fetches, active_hours)",
    )
    budget.add_argument("--max-down", metavar="RATE", help="download rate limit, e.g. 1MB/s (default: none)")
    budget.add_argument(
        "--max-up", metavar="RATE", help="upload rate limit, bundle seeding included, e.g. 200KB/s (default: none)"
    )
    budget.add_argument("--daily-cap", metavar="SIZE", help="bytes down and up per day, e.g. 2GB (default: none)")
    budget.add_argument("--cap", metavar="SIZE/PERIOD", help="bytes per day, week or month, e.g. 10GB/week")
    budget.add_argument("--max-fetches", metavar="N", help="concurrent fetches at most (default: none)")
    budget.add_argument(
        "--active-hours",
        action="append",
        metavar="HH:MM-HH:MM",
        help="work only in these hours (local time; repeatable)",
    )
    budget.add_argument(
        "--only-when-idle",
        action="store_true",
        help="work only while nobody uses this computer (X11 idle time, or while the osaas screensaver shows); pause within a second of input",
    )
    budget.add_argument(
        "--idle-after",
        type=_duration,
        default=DEFAULT_IDLE_AFTER,
        metavar="DURATION",
        help=f"with --only-when-idle: input-free time before working, e.g. 90s, 5m (default {DEFAULT_IDLE_AFTER:g} s)",
    )
    run.set_defaults(run=_cmd_peer_run)
    peer_status = peer.add_parser("status", help="what the peer on this machine is doing")
    peer_status.add_argument(
        "--status-port",
        type=_port,
        default=DEFAULT_STATUS_PORT,
        metavar="PORT",
        help=f"the port the peer serves its status on (default {DEFAULT_STATUS_PORT})",
    )
    peer_status.add_argument("--json", action="store_true", help="print the whole status document")
    peer_status.set_defaults(run=_cmd_peer_status)
    peer_page = peer.add_parser("page", help="the address of the peer's local page, with the token that allows changes")
    peer_page.add_argument(
        "--data-dir", type=_absolute_path, required=True, help="the peer's data dir (holds the token)"
    )
    peer_page.add_argument(
        "--status-port",
        type=_port,
        default=DEFAULT_STATUS_PORT,
        metavar="PORT",
        help=f"the port the peer serves its page on (default {DEFAULT_STATUS_PORT})",
    )
    peer_page.set_defaults(run=_cmd_peer_page)


def _cmd_peer_run(args: argparse.Namespace) -> int:
    from peer import work_choice
    from peer.agent import Agent, PeerSettings
    from peer.egress import EgressConfig
    from peer.trust import TrustError, load_trusted_owners, owner_key

    setup_logging_from(args)
    config_path = args.config or default_config_path()
    try:  # whom the volunteer last chose on the page; flags win
        chosen = work_choice.load(config_path.with_name(work_choice.WORK_FILE))
    except work_choice.WorkChoiceError as exc:
        raise UsageError(str(exc)) from exc
    coordinator = args.coordinator or (None if args.bootstrap else chosen.coordinator)
    if coordinator is None and not args.bootstrap:
        raise UsageError("give --bootstrap HOST:PORT (find coordinators in the DHT) or --coordinator URL")
    if args.egress_source:
        family = socket.AF_INET6 if ":" in args.egress_source else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((args.egress_source, 0))
        except OSError as exc:
            raise UsageError(
                f"--egress-source {args.egress_source}: not an address of this machine ({exc.strerror or exc})"
            ) from exc
    try:
        budget = budget_from(
            config_path,
            max_down=args.max_down,
            max_up=args.max_up,
            daily_cap=args.daily_cap,
            cap=args.cap,
            max_fetches=args.max_fetches,
            active_hours=args.active_hours,
        )
    except BudgetError as exc:
        raise UsageError(str(exc)) from exc
    try:
        trusted_owners = load_trusted_owners(config_path)
    except TrustError as exc:
        raise UsageError(str(exc)) from exc
    try:
        trusted_owners |= {owner_key(key) for key in args.trust_owner}
    except TrustError as exc:
        raise UsageError(f"--trust-owner: {exc}") from exc
    network, network_keys = _networks(args, chosen.network)
    settings = PeerSettings(
        budget=budget,
        coordinator=coordinator,
        bootstrap=args.bootstrap,
        network=network,
        network_keys=network_keys,
        allow_private_coordinators=args.allow_private_coordinators,
        prefer=args.prefer or chosen.prefer,
        dht_listen=args.dht_listen,
        data_dir=args.data_dir,
        slots=args.slots,
        drain_grace=max(args.stop_grace, 0.0),
        egress=EgressConfig(allow_private=args.allow_private, source_address=args.egress_source),
        torrent_listen=args.torrent_listen,
        public_address=args.public_address,
        port_mapping=args.port_mapping,
        status_port=args.status_port,
        config_path=config_path,
        idle_after=args.idle_after if args.only_when_idle else None,
        trusted_owners=frozenset(trusted_owners),
        **({"bundle_upload_rate": args.bundle_upload_rate} if args.bundle_upload_rate else {}),
        **({"name": args.name} if args.name else {}),
    )
    try:
        agent = Agent(settings)
    except OSError as exc:
        raise UsageError(f"cannot use data dir {args.data_dir}: {exc.strerror or exc}") from exc
    except IdentityError as exc:
        raise UsageError(str(exc)) from exc
    _run_until_signal(agent.run)
    return EXIT_OK


def _networks(args: argparse.Namespace, chosen: str) -> tuple[str, dict[str, bytes]]:
    """The network to work for, and the keys of the networks this peer knows (name -> key)."""
    from osaas.commands.network import parse_network_key, read_network_file

    keys: dict[str, bytes] = {}
    for path in args.network_file:
        name, key = read_network_file(path)
        if keys.get(name, key) != key:
            raise UsageError(f"{path} gives network {name!r} another key than a --network-file before it")
        keys[name] = key
    network = args.network or (next(iter(keys)) if len(keys) == 1 else chosen)
    if args.network_key is not None:
        try:
            key = parse_network_key(args.network_key)
        except ValueError as exc:
            raise UsageError(f"--network-key: {exc}") from exc
        if keys.get(network, key) != key:
            raise UsageError(f"--network-key differs from the key the network file gives network {network!r}")
        keys[network] = key
    if args.bootstrap and network not in keys:
        raise UsageError(
            f"network {network!r} has no known network key: give --network-file FILE or --network-key KEY"
            " (from the network's operator), so that only coordinators it admitted are trusted"
        )
    return network, keys


def _cmd_peer_status(args: argparse.Namespace) -> int:
    url = f"http://{STATUS_HOST}:{args.status_port}/status"

    async def fetch(session: aiohttp.ClientSession) -> Any:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            response.raise_for_status()
            return await response.json()

    try:
        status = asyncio.run(_with_session(fetch))
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        raise UsageError(
            f"no peer answers on {STATUS_HOST}:{args.status_port} ({type(exc).__name__}); start one with "
            "`osaas peer run --coordinator URL --data-dir DIR` (or give its --status-port)"
        ) from exc
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    try:
        print(status_text(status))
    except (AttributeError, TypeError, ValueError) as exc:
        raise UsageError(f"what answers on {STATUS_HOST}:{args.status_port} is not a peer's status ({exc})") from exc
    return EXIT_OK


def _cmd_peer_page(args: argparse.Namespace) -> int:
    from peer.local_page import load_or_create_token, page_url

    if not args.data_dir.is_dir():
        raise UsageError(f"{args.data_dir} is not a peer's data dir (give the --data-dir of `osaas peer run`)")
    try:
        token = load_or_create_token(args.data_dir)
    except OSError as exc:
        raise UsageError(f"cannot read the page's token in {args.data_dir}: {exc.strerror or exc}") from exc
    print(page_url(args.status_port, token))
    return EXIT_OK
