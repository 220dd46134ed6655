"""`osaas coordinator serve | key | dashboard | owner add` (and, from `access`, `grant`, `limits`,
`audit`): running a coordinator and saying who may do what on it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import time
from pathlib import Path

from coordinator import vantage
from coordinator.assignment import DEFAULT_EPSILON
from coordinator.host_pacing import DEFAULT_MIN_DELAY
from coordinator.store import DEFAULT_UNIT_SIZE, StoreError
from osaas.commands import access
from osaas.commands._shared import (
    EXIT_OK,
    UsageError,
    _coordinator_url,
    _epsilon,
    _host_delay,
    _host_port,
    _host_port_list,
    _network,
    _positive,
    _public_address,
    _public_key,
    _rate,
    _run_until_signal,
    add_logging_arguments,
    log,
    setup_logging_from,
)
from osaas.commands.coordinator_store import (
    DB_HELP,
    add_db_argument,
    add_state_dir_argument,
    db_location,
    files_base,
    named,
    with_store,
)
from overlay.certificates import Admission, CertificateError, check_admission
from overlay.identity import Identity, IdentityError


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    coordinator = commands.add_parser("coordinator", help="run a coordinator").add_subparsers(metavar="ACTION")
    serve = coordinator.add_parser("serve", help="serve the coordinator API")
    serve.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT")
    add_db_argument(serve, f"{DB_HELP}; a SQLite file is created if missing")
    add_state_dir_argument(serve)
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
    serve.add_argument(
        "--vantage-prefix",
        type=_vantage_prefixes,
        default=(vantage.DEFAULT_PREFIX_V4, vantage.DEFAULT_PREFIX_V6),
        metavar="V4[,V6]",
        help="peers count as different vantage points (probe jobs) when their addresses differ in this IPv4"
        f" (and IPv6) prefix (default {vantage.DEFAULT_PREFIX_V4},{vantage.DEFAULT_PREFIX_V6}; a lab: 32,128)",
    )
    serve.add_argument(
        "--vantage-wait",
        type=_positive_seconds,
        default=vantage.DEFAULT_WAIT,
        metavar="SECONDS",
        help="a probe job with no unit granted this long stops waiting for peers of more networks and says how"
        f" many answered (default {vantage.DEFAULT_WAIT:g})",
    )
    serve.add_argument(
        "--rechecks",
        choices=("on", "off"),
        default="on",
        help="check answers again with other peers, preferably of other networks: every problem (a broken"
        " link, say) and a share of the rest, more for new keys (default on; jobs whose bundle names the"
        " fields answers must agree on)",
    )
    serve.add_argument("--key", type=Path, help="the coordinator's identity key (default: beside --db, ending .key)")
    serve.add_argument(
        "--dht-listen", type=_host_port, metavar="HOST:PORT", help="run a DHT node here and announce this coordinator"
    )
    serve.add_argument(
        "--bootstrap", type=_host_port_list, default=(), metavar="HOST:PORT[,...]", help="DHT nodes to join through"
    )
    serve.add_argument(
        "--network",
        type=_network,
        help="the network whose bundles' swarms to join (default: the --network-cert's, else public)",
    )
    serve.add_argument(
        "--network-cert",
        type=Path,
        metavar="FILE",
        help="the network's certificate of this coordinator's key (`osaas network admit`): with --dht-listen,"
        " the coordinator is announced in that network; without one it is not announced",
    )
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
        "--public-address",
        type=_public_address,
        metavar="ADDR[:PORT]",
        help="the IP (and port, where a NAT forwards another) peers reach bundle seeding at"
        " (default: the --torrent-listen or --public-url host)",
    )
    serve.add_argument(
        "--bundle-upload-rate",
        type=_rate,
        metavar="BYTES/S",
        help="cap on bundle seeding upload, e.g. 2MB (default: none)",
    )
    serve.add_argument(
        "--origin",
        choices=("own", "libtorrent"),
        default="own",
        help="what seeds bundles: own (our seed, which shows each fetcher pieces nobody else was"
        " given, so peers trade the rest; the default) or libtorrent (its super-seeding from 4 MiB)",
    )
    serve.add_argument(
        "--public-dashboard",
        action="store_true",
        help="let anyone who reaches the coordinator see /dashboard/ (default: operator and owner tokens only)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name requests may address the coordinator by, besides IP addresses, localhost and the"
        " --listen and --public-url hosts (repeatable); other names are refused (DNS rebinding)",
    )
    serve.add_argument(
        "--operator-key",
        action="append",
        default=[],
        type=_public_key,
        metavar="PUBKEY",
        help="a key that has the operator role (repeatable), besides the coordinator's own (--key);"
        " the operator signs requests with it from elsewhere (`osaas job list --key`)",
    )
    serve.add_argument(
        "--keep-results",
        type=_keep_days,
        default=30.0,
        metavar="DAYS",
        help="delete a finished job's results and logs this many days after it finished (its status stays;"
        " owners export first with `osaas job export`); `forever` keeps them (default 30)",
    )
    add_logging_arguments(serve)
    serve.set_defaults(run=_cmd_coordinator_serve)
    board = coordinator.add_parser("dashboard", help="the address of the operator's dashboard, with its token")
    add_db_argument(board)
    add_state_dir_argument(board)
    board.add_argument(
        "--url",
        type=_coordinator_url,
        default="http://127.0.0.1:8700",
        metavar="URL",
        help="where the coordinator serves (default http://127.0.0.1:8700)",
    )
    board.add_argument(
        "--owner",
        metavar="NAME",
        help="the address for this key's holder (an owner sees its own jobs, a viewer every job) instead of the operator's",
    )
    board.set_defaults(run=_cmd_coordinator_dashboard)
    key = coordinator.add_parser(
        "key", help="print the coordinator's public key (made if missing), for `osaas network admit`"
    )
    add_db_argument(key)
    add_state_dir_argument(key)
    key.add_argument("--key", type=Path, help="the coordinator's identity key, if not in its state dir")
    key.set_defaults(run=_cmd_coordinator_key)
    migrate = coordinator.add_parser(
        "migrate",
        help="move a coordinator's SQLite database into an empty PostgreSQL one (stop the coordinator first)",
    )
    migrate.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE", help="the SQLite file")
    migrate.add_argument(
        "--to", dest="target", type=_postgres_uri, required=True, metavar="URI", help="postgresql://USER@HOST/DB"
    )
    migrate.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="where the coordinator's own files (key, dashboard token, DHT state, bundles) are copied, for"
        " `serve --state-dir`",
    )
    migrate.set_defaults(run=_cmd_coordinator_migrate)
    owners = coordinator.add_parser("owner", help="bundle owners this coordinator accepts").add_subparsers(
        metavar="ACTION"
    )
    owner_add = owners.add_parser("add", help="accept bundles signed by this owner key")
    owner_add.add_argument("name", metavar="NAME", help="who the owner is, for people")
    owner_add.add_argument(
        "public_key",
        type=_public_key,
        metavar="PUBKEY",
        help="the owner's public key (64 hex digits, printed by `osaas bundle keygen`)",
    )
    add_db_argument(owner_add)
    owner_add.set_defaults(run=access.cmd_grant_add, role="owner")  # `grant add --role owner`
    access.add_commands(coordinator)


def _keep_days(text: str) -> float | None:
    if text == "forever":
        return None
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not 0 < days < 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days above 0, or forever")
    return days


def _coordinator_identity(args: argparse.Namespace) -> Identity:
    """The coordinator's key: `--key`, else in its state dir (made there if missing)."""
    try:
        return Identity.load_or_create(args.key or files_base(args.db, args.state_dir).with_suffix(".key"))
    except (IdentityError, OSError) as exc:
        raise UsageError(f"cannot use the coordinator's key: {exc}") from exc


def _cmd_coordinator_serve(args: argparse.Namespace) -> int:
    from coordinator.api import serve
    from overlay.dht import DhtNode
    from overlay.torrent import TorrentError
    from workloads.bundle import BundleError

    setup_logging_from(args)
    host, port = args.listen
    if args.dht_listen and not args.public_url and host in ("0.0.0.0", "::"):
        # It would announce http://0.0.0.0:PORT: no peer can reach that.
        raise UsageError(
            f"listening on every address ({host}), the coordinator cannot tell which one reaches it:"
            " give --public-url (the address peers should use) to announce it in the DHT"
        )
    files = files_base(args.db, args.state_dir)
    identity = _coordinator_identity(args)

    admission = _admission(args, identity)
    network = admission.network if admission is not None else args.network or "public"

    async def main_coro(stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            dht = None
            if args.dht_listen:
                dht = await stack.enter_async_context(
                    DhtNode(args.dht_listen, args.bootstrap, state_path=files.with_suffix(".dht"))
                )
                log.info("DHT node listening on %s:%d", *dht.address)
            task = asyncio.create_task(
                serve(
                    host,
                    port,
                    args.db,
                    files=files,
                    identity=identity,
                    lease_seconds=args.lease_seconds,
                    unit_size=args.unit_size,
                    host_min_delay=args.host_min_delay,
                    epsilon=args.epsilon,
                    vantage=vantage.VantageRules(args.vantage_prefix[0], args.vantage_prefix[1], args.vantage_wait),
                    rechecks=args.rechecks == "on",
                    dht=dht,
                    network=network,
                    admission=admission,
                    public_url=args.public_url,
                    torrent_listen=args.torrent_listen,
                    public_address=args.public_address,
                    bundle_upload_rate=args.bundle_upload_rate,
                    own_origin=args.origin == "own",
                    public_dashboard=args.public_dashboard,
                    allowed_hosts=args.allowed_host,
                    operator_keys=args.operator_key,
                    keep_results=None if args.keep_results is None else args.keep_results * 86400,
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


def _admission(args: argparse.Namespace, identity: Identity) -> Admission | None:
    """The certificate given with --network-cert, checked against this coordinator: one line if
    it cannot be used, a warning when it expires within a week."""
    from osaas.commands.network import read_certificate_file

    if args.network_cert is None:
        return None
    admission = read_certificate_file(args.network_cert)
    if args.network is not None and args.network != admission.network:
        raise UsageError(f"{args.network_cert} is for network {admission.network!r}, not --network {args.network}")
    if admission.subject != identity.public_key:
        raise UsageError(
            f"{args.network_cert} admits key {admission.subject.hex()[:16]}…, not this coordinator's"
            f" {identity.public_hex[:16]}… (give its --key, or admit {identity.public_hex})"
        )
    try:
        check_admission(admission, time.time())
    except CertificateError as exc:
        raise UsageError(f"{args.network_cert}: {exc}") from exc
    if admission.expires_at - time.time() < 7 * 86400:
        log.warning("%s expires within a week: have the network admit this coordinator again", args.network_cert)
    return admission


async def _until_stopped(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Wait for `task` or `stop`; then cancel the task and let it clean up."""
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _postgres_uri(text: str) -> str:
    if not isinstance(db_location(text), str):
        raise argparse.ArgumentTypeError(f"{text!r} is not a PostgreSQL URI (postgresql://USER@HOST/DB)")
    return text


def _cmd_coordinator_migrate(args: argparse.Namespace) -> int:
    from coordinator.seeder import BundleService
    from coordinator.sql.moving import move

    if not args.source.is_file():
        raise UsageError(f"no coordinator database at {args.source}")
    target = files_base(args.target, args.state_dir)
    files = _files_beside(args.source, target)
    if taken := [str(there) for there in files.values() if there.exists()]:
        raise UsageError(f"{', '.join(taken)} already there: give an empty --state-dir")
    try:
        moved = move(str(args.source), args.target)
    except StoreError as exc:
        raise UsageError(str(exc)) from exc
    for here, there in files.items():
        if here.is_dir():
            shutil.copytree(here, there, symlinks=True)
        elif here.exists():
            shutil.copy2(here, there)
    # A file kept no archives (its one coordinator had them on disk): the database keeps them
    # for every coordinator that will share it.
    archives = with_store(args.target, BundleService(target.with_suffix(".bundles")).share_archives)
    print(f"moved {moved.summary()} from {args.source} to {named(args.target)}")
    print(
        f"copied {len([h for h in files if h.exists()])} of its own files to {args.state_dir}, {archives} bundle archives"
    )
    print(f"serve it with: osaas coordinator serve --db URI --state-dir {args.state_dir} ...")
    return EXIT_OK


def _files_beside(db: Path, target: Path) -> dict[Path, Path]:
    """A SQLite coordinator's own files (named after its database) and where they go when its
    files are named after `target` instead."""
    from coordinator.dashboard import TOKEN_SUFFIX

    pairs = {db.with_suffix(suffix): target.with_suffix(suffix) for suffix in (".key", ".bundles", ".dht", ".torrent")}
    pairs[db.with_name(db.name + TOKEN_SUFFIX)] = target.with_name(target.name + TOKEN_SUFFIX)
    return pairs


def _cmd_coordinator_key(args: argparse.Namespace) -> int:
    identity = _coordinator_identity(args)
    print(identity.public_hex)
    return EXIT_OK


def _cmd_coordinator_dashboard(args: argparse.Namespace) -> int:
    from coordinator.dashboard import PREFIX, DashboardAccess, operator_token

    if isinstance(args.db, Path) and not args.db.exists():
        raise UsageError(f"{args.db} does not exist (give the --db of `osaas coordinator serve`)")
    files = files_base(args.db, args.state_dir)
    try:
        access = DashboardAccess(operator_token(files))
    except OSError as exc:
        raise UsageError(f"cannot read the dashboard token in {files.parent}: {exc.strerror or exc}") from exc
    token = access.operator_token
    if args.owner is not None:
        found = [g for g in with_store(args.db, lambda store: store.grants()) if g.name == args.owner]
        if not found:
            raise UsageError(
                f"no key named {args.owner!r} in {named(args.db)}; add one with `osaas coordinator grant add`"
            )
        token = access.owner_token(found[0].public_key)
    print(f"{args.url.rstrip('/')}{PREFIX}/?token={token}")
    return EXIT_OK


def _vantage_prefixes(text: str) -> tuple[int, int]:
    """`--vantage-prefix V4[,V6]`: the prefix lengths that make a network."""
    v4_text, _, v6_text = text.partition(",")
    try:
        v4 = int(v4_text)
        v6 = int(v6_text) if v6_text else vantage.DEFAULT_PREFIX_V6
        vantage.VantageRules(v4, v6)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an IPv4 prefix 8..32 and optionally an IPv6 one 16..128, e.g. 24 or 32,128"
        ) from None
    return v4, v6


def _positive_seconds(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("s"))
        vantage.VantageRules(wait=value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds above 0, at most a week") from None
    return value
