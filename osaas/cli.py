"""The `osaas` command: check, demo, coordinator serve/owner add, peer run/status, screensaver
(install), bundle keygen/build/publish/rollout/status, job submit/status/results."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from rich.console import Console

from coordinator.assignment import DEFAULT_EPSILON, MAX_EPSILON
from coordinator.host_pacing import DEFAULT_MIN_DELAY, MAX_MIN_DELAY
from coordinator.store import DEFAULT_UNIT_SIZE, StoreError
from osaas import owner
from osaas.check import CheckError, CheckOptions, run_check, validate_url, write_report
from overlay import http
from overlay.announcements import CoordinatorAnnouncement, valid_network
from overlay.dht import DhtNode
from overlay.identity import Identity, IdentityError
from overlay.torrent import TorrentError
from overlay.wire import to_obj
from peer.budget import BudgetError, budget_from, default_config_path, parse_rate
from peer.idle import DEFAULT_IDLE_AFTER
from peer.status import DEFAULT_STATUS_PORT, STATUS_HOST, status_text
from workloads import linkcheck_report as report
from workloads.bundle import BundleError

_T = TypeVar("_T")

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
log = logging.getLogger("osaas")


class UsageError(Exception):
    """A command line that cannot work: one line for the user, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.run(args)
    except (UsageError, CheckError, http.Rejected, http.Unavailable) as exc:
        print(f"osaas: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("osaas: interrupted", file=sys.stderr)
        return EXIT_ERROR


# ---- argument types ------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8700)")
    return host.strip("[]"), int(port)


def _host_port_list(text: str) -> tuple[tuple[str, int], ...]:
    """HOST:PORT[,HOST:PORT...] with names resolved: DHT nodes are addressed by IP."""
    addresses: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, port = _host_port(part)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise argparse.ArgumentTypeError(f"cannot resolve {host!r}: {exc.strerror}") from None
        ipv4 = [info for info in infos if info[0] == socket.AF_INET]
        addresses.append((str((ipv4 or infos)[0][4][0]), port))
    if not addresses:
        raise argparse.ArgumentTypeError("give at least one HOST:PORT")
    return tuple(addresses)


def _network(text: str) -> str:
    if not valid_network(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a network name (1-64 of a-z, 0-9, '.', '_', '-')")
    return text


def _coordinator_url(text: str) -> str:
    try:
        return validate_url(text).rstrip("/")
    except CheckError as exc:
        raise argparse.ArgumentTypeError(f"--coordinator: {exc}") from None


def _rate(text: str) -> int:
    """Bytes per second from "500000", "200KB", "2MB/s" or "1.5MiB/s"."""
    try:
        return parse_rate(text)
    except BudgetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host_delay(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (e.g. 1 or 0.5)") from None
    if not 0 <= value <= MAX_MIN_DELAY:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} must be 0..{MAX_MIN_DELAY:g} seconds")
    return value


def _epsilon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.25)") from None
    if not 0 < value <= MAX_EPSILON:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0 and at most {MAX_EPSILON:g}")
    return value


def _duration(text: str) -> float:
    """Seconds from "90", "90s", "5m" or "1h"."""
    number, scale = text.strip().lower(), 1.0
    for suffix, factor in (("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if number.endswith(suffix):
            number, scale = number[: -len(suffix)], factor
            break
    try:
        seconds = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 5m or 1h") from None
    if not 0 < seconds <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most a day")
    return seconds


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and 64 <= int(width) <= 16384 and 64 <= int(height) <= 16384):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1280x720 (64..16384 each)")
    return int(width), int(height)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number 0..65535")
    return int(text)


def _status_port(text: str) -> int | None:
    return None if text == "off" else _port(text)


def _ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address like 192.0.2.7 or 2001:db8::7") from None


def _percent(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole percentage 1..100")
    return int(text)


def _bundle_spec(text: str) -> tuple[str, str | None]:
    try:
        return owner.split_bundle(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---- the parser ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osaas", description="Open source as a service: volunteer-run link checking.")
    commands = parser.add_subparsers(metavar="COMMAND")

    check = commands.add_parser("check", help="check the links of a site with an embedded network")
    check.add_argument("urls", nargs="+", metavar="URL")
    check.add_argument("--peers", type=_positive, default=2, help="peer processes to start (default 2)")
    check.add_argument(
        "--depth",
        type=_non_negative,
        default=None,
        help="crawl pages up to N links away from the start URLs (0: the start pages only); links on the last pages crawled are still checked (default: no limit)",
    )
    check.add_argument("--format", choices=report.FORMATS, default="text", dest="fmt")
    check.add_argument("--output", type=Path, help="write the report here instead of standard output")
    check.add_argument("--allow-private", action="store_true", help="allow private, loopback and link-local targets")
    check.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    check.set_defaults(run=_cmd_check)

    demo = commands.add_parser("demo", help="check the sample site shipped with osaas")
    demo.add_argument("--peers", type=_positive, default=3)
    demo.set_defaults(run=_cmd_demo)

    coordinator = commands.add_parser("coordinator", help="run a coordinator").add_subparsers(metavar="ACTION")
    serve = coordinator.add_parser("serve", help="serve the coordinator API")
    serve.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT")
    serve.add_argument("--db", type=Path, required=True, help="SQLite database file (created if missing)")
    serve.add_argument("--lease-seconds", type=float, default=60.0)
    serve.add_argument(
        "--unit-size",
        type=_positive,
        default=DEFAULT_UNIT_SIZE,
        help=f"most URLs per work unit; units are sized to about 30 s of each peer's measured work (default {DEFAULT_UNIT_SIZE})",
    )
    serve.add_argument(
        "--host-min-delay",
        type=_host_delay,
        default=DEFAULT_MIN_DELAY,
        metavar="SECONDS",
        help=f"pause every website gets between two work units, across all peers (default {DEFAULT_MIN_DELAY:g})",
    )
    serve.add_argument(
        "--epsilon",
        type=_epsilon,
        default=DEFAULT_EPSILON,
        metavar="E",
        help=f"how far above its capacity-weighted share of the work a peer's load may go: at most (1+E) times it (default {DEFAULT_EPSILON:g})",
    )
    serve.add_argument("--key", type=Path, help="the coordinator's identity key (default: beside --db, ending .key)")
    serve.add_argument(
        "--dht-listen", type=_host_port, metavar="HOST:PORT", help="run a DHT node here and announce this coordinator"
    )
    serve.add_argument(
        "--bootstrap", type=_host_port_list, default=(), metavar="HOST:PORT[,...]", help="DHT nodes to join through"
    )
    serve.add_argument("--network", type=_network, default="public", help="the network to announce in (default public)")
    serve.add_argument(
        "--public-url",
        type=_coordinator_url,
        metavar="URL",
        help="the URL peers should use (default: the --listen address)",
    )
    serve.add_argument(
        "--torrent-listen",
        type=_host_port,
        metavar="HOST:PORT",
        help="where bundles are seeded over BitTorrent (default: the --listen host, any port)",
    )
    serve.add_argument(
        "--bundle-upload-rate",
        type=_rate,
        metavar="BYTES/S",
        help="cap on bundle seeding upload, e.g. 2MB (default: none)",
    )
    serve.add_argument(
        "--public-dashboard",
        action="store_true",
        help="let anyone who reaches the coordinator see /dashboard/ (default: operator and owner tokens only)",
    )
    serve.set_defaults(run=_cmd_coordinator_serve)
    board = coordinator.add_parser("dashboard", help="the address of the operator's dashboard, with its token")
    board.add_argument(
        "--db", type=Path, required=True, help="the coordinator's SQLite database (the token lies beside it)"
    )
    board.add_argument(
        "--url",
        type=_coordinator_url,
        default="http://127.0.0.1:8700",
        metavar="URL",
        help="where the coordinator serves (default http://127.0.0.1:8700)",
    )
    board.add_argument(
        "--owner", metavar="NAME", help="the address for this bundle owner (owner token) instead of the operator's"
    )
    board.set_defaults(run=_cmd_coordinator_dashboard)
    owners = coordinator.add_parser("owner", help="bundle owners this coordinator accepts").add_subparsers(
        metavar="ACTION"
    )
    owner_add = owners.add_parser("add", help="accept bundles signed by this owner key")
    owner_add.add_argument("name", metavar="NAME", help="who the owner is, for people")
    owner_add.add_argument(
        "public_key", metavar="PUBKEY", help="the owner's public key (64 hex digits, printed by `osaas bundle keygen`)"
    )
    owner_add.add_argument("--db", type=Path, required=True, help="the coordinator's SQLite database")
    owner_add.set_defaults(run=_cmd_owner_add)

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
    run.add_argument("--data-dir", type=Path, required=True)
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
        type=Path,
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
    peer_page.add_argument("--data-dir", type=Path, required=True, help="the peer's data dir (holds the token)")
    peer_page.add_argument(
        "--status-port",
        type=_port,
        default=DEFAULT_STATUS_PORT,
        metavar="PORT",
        help=f"the port the peer serves its page on (default {DEFAULT_STATUS_PORT})",
    )
    peer_page.set_defaults(run=_cmd_peer_page)

    saver = commands.add_parser("screensaver", help="show what the peer on this machine is doing, live")
    saver.add_argument(
        "--status-port",
        type=_port,
        default=DEFAULT_STATUS_PORT,
        metavar="PORT",
        help=f"the port the peer serves its status on (default {DEFAULT_STATUS_PORT})",
    )
    where = saver.add_mutually_exclusive_group()
    where.add_argument("--fullscreen", action="store_true", help="fill the screen; any key or click ends it")
    where.add_argument(
        "-root", "--root", action="store_true", help="draw on the root window (XScreenSaver; $XSCREENSAVER_WINDOW wins)"
    )
    where.add_argument("-window-id", "--window-id", metavar="ID", help="draw into this X window (XScreenSaver)")
    saver.add_argument("--size", type=_size, default=None, metavar="WxH", help="window size (default 1280x720)")
    saver.add_argument("--frames", type=_positive, metavar="N", help="stop after N frames")
    saver.add_argument("--snapshot", type=Path, metavar="PNG", help="save the last frame as a PNG when it stops")
    saver.set_defaults(run=_cmd_screensaver)
    saver_actions = saver.add_subparsers(metavar="ACTION")
    install = saver_actions.add_parser("install", help="print (or add) the XScreenSaver entry for this screensaver")
    install.add_argument("--write", action="store_true", help="add it to the programs of ~/.xscreensaver")
    install.set_defaults(run=_cmd_screensaver_install)

    dht = commands.add_parser("dht", help="DHT nodes and what they know").add_subparsers(metavar="ACTION")
    dht_serve = dht.add_parser("serve", help="run a standalone DHT (bootstrap) node")
    dht_serve.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT")
    dht_serve.add_argument("--bootstrap", type=_host_port_list, default=(), metavar="HOST:PORT[,...]")
    dht_serve.add_argument("--state", type=Path, help="file to keep the known contacts in, for a fast rejoin")
    dht_serve.set_defaults(run=_cmd_dht_serve)
    lookup = dht.add_parser("lookup", help="print what the DHT knows")
    lookup.add_argument("what", choices=["coordinators"])
    lookup.add_argument("--network", type=_network, default="public")
    lookup.add_argument("--bootstrap", type=_host_port_list, required=True, metavar="HOST:PORT[,...]")
    lookup.add_argument("--json", action="store_true")
    lookup.set_defaults(run=_cmd_dht_lookup)

    bundles = commands.add_parser("bundle", help="build, publish and roll out code bundles").add_subparsers(
        metavar="ACTION"
    )
    keygen = bundles.add_parser("keygen", help="create an owner key; prints its public key")
    keygen.add_argument("--out", type=Path, required=True, metavar="KEYFILE")
    keygen.set_defaults(run=_cmd_bundle_keygen)
    build = bundles.add_parser("build", help="build and sign a bundle from a directory with a bundle.toml")
    build.add_argument("source", type=Path, metavar="DIR")
    build.add_argument("--key", type=Path, required=True, metavar="KEYFILE")
    build.add_argument("--out", type=Path, required=True, metavar="OUTDIR")
    build.set_defaults(run=_cmd_bundle_build)
    publish = bundles.add_parser("publish", help="upload a built bundle to a coordinator, which seeds it")
    publish.add_argument("out", type=Path, metavar="OUTDIR")
    publish.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    publish.set_defaults(run=_cmd_bundle_publish)
    rollout = bundles.add_parser("rollout", help="send a version to a share of peers (100 completes the rollout)")
    rollout.add_argument("name", metavar="NAME")
    rollout.add_argument("version", metavar="VERSION")
    rollout.add_argument("--percent", type=_percent, required=True)
    rollout.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    rollout.add_argument("--key", type=Path, required=True, metavar="KEYFILE", help="the bundle owner's key")
    rollout.set_defaults(run=_cmd_bundle_rollout)
    bundle_status = bundles.add_parser("status", help="a bundle's versions, rollout and failure rates")
    bundle_status.add_argument("name", metavar="NAME")
    bundle_status.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    bundle_status.add_argument("--json", action="store_true")
    bundle_status.set_defaults(run=_cmd_bundle_status)

    job = commands.add_parser("job", help="submit and follow jobs").add_subparsers(metavar="ACTION")
    submit = job.add_parser("submit", help="submit a link-check job; prints its id")
    submit.add_argument("urls", nargs="+", metavar="URL")
    submit.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    submit.add_argument(
        "--bundle",
        type=_bundle_spec,
        default=("linkcheck", None),
        metavar="NAME[@VERSION]",
        help="the bundle that runs the job (default linkcheck, following its rollout)",
    )
    submit.add_argument("--depth", type=_non_negative, default=None)
    submit.set_defaults(run=_cmd_job_submit)

    status = job.add_parser("status", help="show a job's progress")
    status.add_argument("job_id", type=_positive, metavar="ID")
    status.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_cmd_job_status)

    results = job.add_parser("results", help="download a job's report")
    results.add_argument("job_id", type=_positive, metavar="ID")
    results.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    results.add_argument("--format", choices=report.FORMATS, default="text", dest="fmt")
    results.add_argument("--output", type=Path)
    results.set_defaults(run=_cmd_job_results)
    return parser


def _setup_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # kademlia logs every RPC at INFO; its warnings are what an operator needs.
    logging.getLogger("kademlia").setLevel(max(level, logging.WARNING))
    # rpcudp logs every unanswered RPC as an ERROR; overlay.dht reports what they amount to.
    logging.getLogger("rpcudp").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)


def _run_until_signal(main_coro: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main_coro(stop)`; SIGTERM and SIGINT set `stop`."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # Windows has no add_signal_handler
                loop.add_signal_handler(sig, stop.set)
        await main_coro(stop)

    asyncio.run(runner())


# ---- commands ------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    _setup_logging(logging.WARNING)
    options = CheckOptions(
        urls=tuple(args.urls),
        peers=args.peers,
        depth=args.depth,
        allow_private=args.allow_private,
        fmt=args.fmt,
        output=args.output,
        progress=not args.no_progress,
    )
    items = asyncio.run(run_check(options, Console(stderr=True)))
    write_report(items, options.fmt, options.output)
    if options.output is not None:
        print(report.summary(items), file=sys.stderr)
    return EXIT_PROBLEMS if report.has_problems(items) else EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from osaas.demo import serve_site

    _setup_logging(logging.WARNING)
    console = Console(stderr=True)

    async def demo() -> list[dict]:
        async with serve_site() as base_url:
            console.print(f"Serving the sample site at {base_url}; checking it with {args.peers} peers.")
            options = CheckOptions(urls=(base_url,), peers=args.peers, allow_private=True)
            return await run_check(options, console)

    items = asyncio.run(demo())
    write_report(items, "text", None)
    return EXIT_OK  # the sample site's broken links are the point of the demo


def _cmd_coordinator_serve(args: argparse.Namespace) -> int:
    from coordinator.api import serve

    _setup_logging(logging.INFO)
    host, port = args.listen
    if not args.db.parent.is_dir():
        raise UsageError(f"cannot open database {args.db}: directory {args.db.parent} does not exist")
    try:
        identity = Identity.load_or_create(args.key or args.db.with_suffix(".key"))
    except (IdentityError, OSError) as exc:
        raise UsageError(f"cannot use the coordinator's key: {exc}") from exc

    async def main_coro(stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            dht = None
            if args.dht_listen:
                dht = await stack.enter_async_context(
                    DhtNode(args.dht_listen, args.bootstrap, state_path=args.db.with_suffix(".dht"))
                )
                log.info("DHT node listening on %s:%d", *dht.address)
            task = asyncio.create_task(
                serve(
                    host,
                    port,
                    args.db,
                    identity=identity,
                    lease_seconds=args.lease_seconds,
                    unit_size=args.unit_size,
                    host_min_delay=args.host_min_delay,
                    epsilon=args.epsilon,
                    dht=dht,
                    network=args.network,
                    public_url=args.public_url,
                    torrent_listen=args.torrent_listen,
                    bundle_upload_rate=args.bundle_upload_rate,
                    public_dashboard=args.public_dashboard,
                )
            )
            await _until_stopped(task, stop)

    try:
        _run_until_signal(main_coro)
    except (StoreError, TorrentError, BundleError) as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
    return EXIT_OK


async def _until_stopped(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Wait for `task` or `stop`; then cancel the task and let it clean up."""
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _cmd_dht_serve(args: argparse.Namespace) -> int:
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
    from peer.discovery import announcements

    _setup_logging(logging.WARNING)
    listen_host = "127.0.0.1" if all(h.startswith("127.") or h == "localhost" for h, _ in args.bootstrap) else "0.0.0.0"

    async def lookup() -> list[CoordinatorAnnouncement]:
        async with DhtNode((listen_host, 0), args.bootstrap) as dht:
            if not dht.neighbours():
                raise UsageError(f"no DHT node answered at {', '.join(f'{h}:{p}' for h, p in args.bootstrap)}")
            return await announcements(dht, args.network)

    found = asyncio.run(lookup())
    now = time.time()
    for a in sorted(found, key=lambda a: a.url):
        if args.json:
            print(json.dumps({"public_key": a.public_key, "issued_at": a.issued_at} | a.payload()))
        else:
            print(
                f"{a.url}  key {a.public_key[:16]}…  load {a.load}  peers {a.peers}  "
                f"workloads {','.join(a.workloads)}  announced {max(0, now - a.issued_at):.0f} s ago"
            )
    if not found and not args.json:
        print(f"no coordinators announced in network {args.network!r}", file=sys.stderr)
    return EXIT_OK


def _cmd_peer_run(args: argparse.Namespace) -> int:
    from peer import work_choice
    from peer.agent import Agent, PeerSettings
    from peer.egress import EgressConfig
    from peer.trust import TrustError, load_trusted_owners, owner_key

    _setup_logging(logging.INFO)
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
    settings = PeerSettings(
        budget=budget,
        coordinator=coordinator,
        bootstrap=args.bootstrap,
        network=args.network or chosen.network,
        prefer=args.prefer or chosen.prefer,
        dht_listen=args.dht_listen,
        data_dir=args.data_dir,
        slots=args.slots,
        drain_grace=max(args.stop_grace, 0.0),
        egress=EgressConfig(allow_private=args.allow_private, source_address=args.egress_source),
        torrent_listen=args.torrent_listen,
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


def _cmd_coordinator_dashboard(args: argparse.Namespace) -> int:
    from coordinator.dashboard import PREFIX, DashboardAccess, operator_token
    from coordinator.sqlite_store import SqliteStore

    if not args.db.exists():
        raise UsageError(f"{args.db} does not exist (give the --db of `osaas coordinator serve`)")
    try:
        access = DashboardAccess(operator_token(args.db))
    except OSError as exc:
        raise UsageError(f"cannot read the dashboard token beside {args.db}: {exc.strerror or exc}") from exc
    token = access.operator_token
    if args.owner is not None:

        async def owners() -> list:
            async with SqliteStore(args.db) as store:
                return await store.owners()

        try:
            found = [o for o in asyncio.run(owners()) if o.name == args.owner]
        except StoreError as exc:
            raise UsageError(str(exc)) from exc
        if not found:
            raise UsageError(f"no owner {args.owner!r} in {args.db}; add one with `osaas coordinator owner add`")
        token = access.owner_token(found[0].public_key)
    print(f"{args.url.rstrip('/')}{PREFIX}/?token={token}")
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


def _cmd_screensaver(args: argparse.Namespace) -> int:
    from screensaver.app import DEFAULT_SIZE, Options, ScreensaverError, run, window_from_environment

    try:
        options = Options(
            status_port=args.status_port,
            fullscreen=args.fullscreen,
            window_id=window_from_environment(args.root, args.window_id),
            size=args.size or DEFAULT_SIZE,
            frames=args.frames,
            snapshot=args.snapshot,
        )
        run(options)
    except ScreensaverError as exc:
        raise UsageError(str(exc)) from exc
    return EXIT_OK


def _cmd_screensaver_install(args: argparse.Namespace) -> int:
    from screensaver.install import InstallError, add_entry, program_path, xscreensaver_entry

    entry = xscreensaver_entry(program_path())
    if not args.write:
        print("Add this line to the `programs:` list of ~/.xscreensaver (or run with --write):")
        print(entry)
        return EXIT_OK
    config = Path.home() / ".xscreensaver"
    try:
        added = add_entry(config, entry)
    except InstallError as exc:
        raise UsageError(str(exc)) from exc
    print(f"added to {config}" if added else f"already in {config}")
    return EXIT_OK


async def _with_session(fn: Callable[[aiohttp.ClientSession], Awaitable[_T]]) -> _T:
    async with aiohttp.ClientSession() as session:
        return await fn(session)


def _cmd_job_submit(args: argparse.Namespace) -> int:
    try:
        urls = [validate_url(u) for u in args.urls]
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    job_input = {"urls": urls, "depth": args.depth}
    name, version = args.bundle
    job_id = asyncio.run(_with_session(lambda s: owner.submit(s, args.coordinator, name, job_input, version)))
    print(job_id)
    return EXIT_OK


def _cmd_owner_add(args: argparse.Namespace) -> int:
    from coordinator.sqlite_store import SqliteStore

    key = args.public_key.strip().lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise UsageError(f"{args.public_key!r} is not a public key (64 hex digits, as `osaas bundle keygen` prints)")
    if not args.db.is_file():
        raise UsageError(f"no coordinator database at {args.db}")

    async def add() -> None:
        async with SqliteStore(args.db) as store:
            await store.add_owner(args.name, key, time.time())

    try:
        asyncio.run(add())
    except StoreError as exc:
        raise UsageError(str(exc)) from exc
    print(f"owner {args.name} ({key[:16]}…) may now publish bundles to this coordinator")
    return EXIT_OK


def _load_key(path: Path) -> Identity:
    try:
        return Identity.load(path)
    except IdentityError as exc:
        raise UsageError(str(exc)) from exc


def _cmd_bundle_keygen(args: argparse.Namespace) -> int:
    if args.out.exists():
        raise UsageError(f"{args.out} already exists; an owner key is never overwritten")
    try:
        identity = Identity.load_or_create(args.out)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(identity.public_hex)
    return EXIT_OK


def _cmd_bundle_build(args: argparse.Namespace) -> int:
    from workloads.bundle import build

    key = _load_key(args.key)
    try:
        built = build(args.source, key, args.out)
    except BundleError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    signed = built.signed
    assert signed.info_hash is not None
    print(
        f"built {signed.manifest.name} {signed.manifest.version}: {len(signed.files)} files, "
        f"{built.archive_path.stat().st_size} bytes, info-hash {signed.info_hash.hex()}"
    )
    print(f"  {built.archive_path}\n  {built.torrent_path}\n  {built.manifest_path}")
    return EXIT_OK


def _cmd_bundle_publish(args: argparse.Namespace) -> int:
    from workloads.bundle import load_built

    try:
        built = load_built(args.out)
    except BundleError as exc:
        raise UsageError(str(exc)) from exc
    status = asyncio.run(_with_session(lambda s: owner.publish(s, args.coordinator, built)))
    print(f"published {built.signed.manifest.name} {built.signed.manifest.version}")
    print(owner.describe(status))
    return EXIT_OK


def _cmd_bundle_rollout(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    status = asyncio.run(
        _with_session(lambda s: owner.rollout(s, args.coordinator, key, args.name, args.version, args.percent))
    )
    print(owner.describe(status))
    return EXIT_OK


def _cmd_bundle_status(args: argparse.Namespace) -> int:
    status = asyncio.run(_with_session(lambda s: owner.bundle_status(s, args.coordinator, args.name)))
    if args.json:
        obj = to_obj(status)
        for version in obj["versions"]:
            version["info_hash"] = version["info_hash"].hex()
        print(json.dumps(obj))
    else:
        print(owner.describe(status))
    return EXIT_OK


def _cmd_job_status(args: argparse.Namespace) -> int:
    status = asyncio.run(_with_session(lambda s: owner.status(s, args.coordinator, args.job_id)))
    if args.json:
        print(json.dumps({f: getattr(status, f) for f in status.__slots__}))
    else:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(status.counts.items()))
        print(
            f"job {status.job_id} ({status.workload}) {status.state}: {status.items_done}/{status.items_total} URLs checked, "
            f"{status.units_done}/{status.units_total} units" + (f"; {counts}" if counts else "")
        )
    return EXIT_OK


def _cmd_job_results(args: argparse.Namespace) -> int:
    items = asyncio.run(_with_session(lambda s: owner.results(s, args.coordinator, args.job_id)))
    try:
        write_report(items, args.fmt, args.output)
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    return EXIT_OK
