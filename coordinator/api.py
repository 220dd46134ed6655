"""The coordinator's HTTP API: thin aiohttp handlers over a `Store` (`peer_routes`,
`owner_routes`, the edge every request meets in `edge`); here the app is put together and
served.

Every body, in and out, is msgpack. Peer endpoints are signed (the signer's hex public key is
the peer id). Bundle uploads carry the owner's signature in their manifest and rollouts are
signed requests by the bundle's owner key; job endpoints are open until owner admission covers
them too. Every error, including aiohttp's own 404/405/413, leaves as
`overlay.wire.error_body` with one status per cause:

    WireError (bad msgpack, wrong types)   400     UnknownPeer, UnknownOwner, NotOwner   403
    WireError (unsigned, bad signature)    401     NotFound                              404
    InvalidInput                           400     StaleLease, Conflict                  409
    BundleError (a bad upload)             400     body over the route's limit           413
    RateLimited (with Retry-After)         429     Busy, LimitReached                    429

A report batch (`POST /v1/reports/batch`) answers 200 with one verdict per report, in order: a
report refused for its own reasons (stale lease, unknown unit, bad payload) carries that
error's code in its verdict and does not fail the others.

A background task reassigns hosts to peers every `REBALANCE_INTERVAL` seconds (the store's
`rebalance`); registrations and new jobs trigger one at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path

from aiohttp import web
from yarl import URL

from coordinator import dashboard, host_planning, owner_routes, peer_routes
from coordinator.announcer import Announcer
from coordinator.assignment import DEFAULT_EPSILON
from coordinator.edge import (
    ALLOWED_HOSTS,
    BUNDLES,
    CLOCK,
    IDENTITY,
    LEASE_SECONDS,
    LIMITER,
    MAX_UPLOADS_AT_ONCE,
    NONCES,
    STORE,
    UPLOADS,
    AccessLog,
    checked,
    errors,
    reply,
)
from coordinator.host_pacing import DEFAULT_MIN_DELAY
from coordinator.metrics import METRICS, METRICS_ACCESS, Metrics, MetricsAccess, count_requests, serve_metrics
from coordinator.rate_limits import RateLimiter, RateLimits
from coordinator.replays import SeenNonces
from coordinator.roles import Role
from coordinator.seeder import BUILTIN_DIR, BundleSeeder, BundleService
from coordinator.sql import SqlStore
from coordinator.store import (
    DEFAULT_UNIT_SIZE,
    OPERATOR,
    REBALANCE_INTERVAL,
    InvalidInput,
    NotOwner,
    Store,
    StoreError,
)
from coordinator.vantage import VantageRules
from overlay.certificates import Admission
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.wire import (
    MAX_BODY,
)
from workloads import builtin

log = logging.getLogger(__name__)


HEALTH_TIMEOUT = 2.0  # seconds the store has to answer a health check
DEFAULT_KEEP_RESULTS = 30 * 86400.0  # seconds a finished job's results are kept (`--keep-results`)
PURGE_INTERVAL = 60.0  # seconds between looks for results to delete
KEEP_RESULTS = web.AppKey[float | None]("keep_results")
BUILTIN_OWNER = "coordinator"  # the owner name the coordinator's own key is registered under


def make_app(
    store: Store,
    *,
    identity: Identity | None = None,
    lease_seconds: float = 60.0,
    clock: Callable[[], float] = time.time,
    bundles: BundleService | None = None,
    dashboard_access: dashboard.DashboardAccess | None = None,
    allowed_hosts: Collection[str] = (),
    rate_limits: RateLimits | None = None,
    keep_results: float | None = DEFAULT_KEEP_RESULTS,
) -> web.Application:
    """The API over `store`. Without `bundles` the app serves what the store knows of bundles
    but refuses uploads (503), and offers peers no seed address. With `dashboard_access`, the
    operator's dashboard is served under /dashboard/ (coordinator.dashboard). Requests must
    name an IP address, localhost or one of `allowed_hosts` as their host (`request_checks`).
    Register, lease, report and submit are rate limited per key and per address
    (`rate_limits`, default `RateLimits()`). Finished jobs' results are deleted `keep_results`
    seconds after they finished (None: kept for ever)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[count_requests, errors, checked])
    app[ALLOWED_HOSTS] = frozenset(host.lower() for host in allowed_hosts)
    app[STORE] = store
    app[IDENTITY] = identity or Identity.generate()
    app[LEASE_SECONDS] = lease_seconds
    app[CLOCK] = clock
    app[NONCES] = SeenNonces()
    app[LIMITER] = RateLimiter(rate_limits)
    app[UPLOADS] = asyncio.Semaphore(MAX_UPLOADS_AT_ONCE)
    app[KEEP_RESULTS] = keep_results
    app[METRICS] = metrics = Metrics()
    store.observe_calls(metrics.store_call)
    app.cleanup_ctx.append(_open_store)
    if bundles is not None:
        app[BUNDLES] = bundles
        app.on_startup.append(_seed_stored_bundles)
    peer_routes.add_routes(app)
    owner_routes.add_routes(app)
    app.router.add_get("/v1/health", _health)
    if dashboard_access is not None:
        app[METRICS_ACCESS] = MetricsAccess(dashboard_access.operator_token, dashboard_access.public)
        app.router.add_get("/metrics", serve_metrics)
        app.add_subapp(dashboard.PREFIX, dashboard.dashboard_app(store, dashboard_access, clock))
    return app


async def serve(
    host: str,
    port: int,
    db: Path | str,
    *,
    files: Path | None = None,
    identity: Identity | None = None,
    lease_seconds: float = 60.0,
    unit_size: int = DEFAULT_UNIT_SIZE,
    host_min_delay: float = DEFAULT_MIN_DELAY,
    epsilon: float = DEFAULT_EPSILON,
    vantage: VantageRules | None = None,
    rechecks: bool = True,
    ready: Callable[[int], None] | None = None,
    dht: DhtNode | None = None,
    network: str = "public",
    admission: Admission | None = None,
    public_url: str | None = None,
    bundle_dir: Path | None = None,
    torrent_listen: tuple[str, int] | None = None,
    public_address: tuple[str, int | None] | None = None,
    bundle_upload_rate: int | None = None,
    own_origin: bool = True,
    public_dashboard: bool = False,
    allowed_hosts: Collection[str] = (),
    operator_keys: Collection[str] = (),
    rate_limits: RateLimits | None = None,
    keep_results: float | None = DEFAULT_KEEP_RESULTS,
) -> None:
    """Serve the API on host:port (0 picks a free port) until cancelled; with a DHT node and
    the network's certificate of this coordinator (`admission`), announce it in that network
    under `public_url` (default: the address served). Without one, the DHT node still serves
    the bundles' swarms of `network`, but the coordinator is not announced: peers find only
    admitted coordinators.

    `db` is a SQLite file or a PostgreSQL URI; the coordinator's own files are named after
    `files` (default: the SQLite file): bundles are kept in `bundle_dir` (default: ending
    .bundles), seeded from
    `torrent_listen` (default: the HTTP host, any port) at up to `bundle_upload_rate` bytes/s,
    and named to peers at `public_address` when given (behind NAT), by our own origin
    (`overlay.origin`) or, without `own_origin`, by libtorrent.
    `host_min_delay`: the pause, in seconds, every host gets between two units; `epsilon`: how
    far above its capacity-weighted share a peer's load may go (`assignment`); `vantage`: what
    makes peers different vantage points and how long a probe job waits for them; `rechecks`:
    whether answers are checked again by other peers (`coordinator.sql.rechecks`). The dashboard
    needs the token kept with its files unless `public_dashboard`. The built-in bundles (link
    checker, probe) are published at every start, signed by the coordinator's key: the operator
    installed this osaas, so its versions become the stable ones at once.
    """
    identity = identity or Identity.generate()
    if admission is not None:
        network = admission.network
    files = files or Path(db)
    # The first plan settles a moment (host_planning.SETTLE_SECONDS): peers started together all
    # get hosts, not the first to register all of them.
    store = SqlStore(
        db,
        unit_size=unit_size,
        host_min_delay=host_min_delay,
        epsilon=epsilon,
        settle=host_planning.SETTLE_SECONDS,
        vantage=vantage,
        rechecks=rechecks,
        own_process=True,
    )
    # Named after the database, like its .key, .dht and .torrent: two coordinators whose
    # databases share a directory must not share (and race on) one bundle dir.
    bundle_dir = bundle_dir or files.with_suffix(".bundles")
    torrent_host, torrent_port = torrent_listen or (host, 0)
    seeder = BundleSeeder(
        (await _ip_of(torrent_host), torrent_port),
        identity=identity,
        state_dir=files.with_suffix(".torrent"),
        upload_rate=bundle_upload_rate,
        dht=dht,
        network=network,
        announce_host=URL(public_url).host if public_url else None,
        public_address=public_address,
        own_origin=own_origin,
    )
    bundles = BundleService(bundle_dir, seeder)
    async with seeder:
        access = dashboard.DashboardAccess(dashboard.operator_token(files), public=public_dashboard)
        runner = web.AppRunner(
            make_app(
                store,
                identity=identity,
                lease_seconds=lease_seconds,
                bundles=bundles,
                dashboard_access=access,
                allowed_hosts={host, *allowed_hosts, *([URL(public_url).host or ""] if public_url else [])},
                rate_limits=rate_limits,
                keep_results=keep_results,
            ),
            access_log_class=AccessLog,
        )
        await runner.setup()
        announcer = None
        announcing = None
        try:
            await _publish_builtin(store, bundles, identity, bundle_dir / BUILTIN_DIR)
            for key in operator_keys:  # the operator's own keys, named on its command line
                await store.grant(f"operator {key[:12]}", key, Role.OPERATOR, OPERATOR, time.time())
            site = web.TCPSite(runner, host, port)
            await site.start()
            actual_port = runner.addresses[0][1]
            shown_host = f"[{host}]" if ":" in host else host
            url = public_url or f"http://{shown_host}:{actual_port}"
            log.info("coordinator %s… listening on http://%s:%d", identity.public_hex[:12], shown_host, actual_port)
            # Never the token itself: logs are read by more people than the operator.
            log.info(
                "dashboard: %s/dashboard/%s",
                url,
                "" if public_dashboard else " (its address with the token: `osaas coordinator dashboard`)",
            )
            if dht is not None and admission is not None:
                announcer = Announcer(dht, identity, store, url=url, admission=admission)
                announcing = asyncio.create_task(announcer.run())
            elif dht is not None:
                log.info("not announced in the DHT: no network certificate (`osaas network admit`, --network-cert)")
            if ready is not None:
                ready(actual_port)
            syncing = asyncio.create_task(bundles.keep_seeding(store))
            try:
                raise StoreError(await store.failure())
            finally:
                syncing.cancel()
        finally:
            if announcing is not None and announcer is not None:
                announcing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await announcing
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(announcer.withdraw(), timeout=5.0)
            await runner.cleanup()


async def _publish_builtin(store: Store, bundles: BundleService, identity: Identity, work_dir: Path) -> None:
    """Build the built-in bundles (`workloads.builtin.BUILTINS`) and publish them like any
    upload, owned by this coordinator.

    The builds are scratch: publishing keeps its own copy, so `work_dir` is emptied either way.
    """
    now = time.time()
    # The coordinator's own key is the operator's: it signs the built-in bundles, and the
    # operator signs requests with it (`--key` the .key beside the database). Coordinators
    # sharing one database each have a key of their own, under a name of its own.
    mine = identity.public_hex
    try:
        await store.grant(BUILTIN_OWNER, mine, Role.OPERATOR, OPERATOR, now)
    except InvalidInput:  # the name is a sibling coordinator's
        await store.grant(f"{BUILTIN_OWNER} {mine[:12]}", mine, Role.OPERATOR, OPERATOR, now)
    for name in builtin.BUILTINS:
        try:
            built = await asyncio.to_thread(builtin.build_builtin, name, identity, work_dir)
            manifest, archive = await asyncio.to_thread(_read_built, built.manifest_path, built.archive_path)
        finally:
            await asyncio.to_thread(shutil.rmtree, work_dir, True)
        try:
            status = await bundles.publish(store, manifest, archive, now, stable=True)
        except NotOwner:
            # Another coordinator of this database publishes it: its versions are seeded here
            # too (`BundleService.start`), and a second signer may not take the name.
            log.info("built-in bundle %s is published by another coordinator of the same database", name)
            continue
        log.info("built-in bundle %s %s is the stable version", status.name, status.stable)


async def _ip_of(host: str) -> str:
    """libtorrent listens on IP addresses only, so a host name such as localhost is resolved."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


def _read_built(manifest_path: Path, archive_path: Path) -> tuple[bytes, bytes]:
    return manifest_path.read_bytes(), archive_path.read_bytes()


async def _open_store(app: web.Application) -> AsyncIterator[None]:
    async with app[STORE] as store:
        tasks = [
            asyncio.create_task(_keep_hosts_assigned(store, app[CLOCK])),
            asyncio.create_task(_delete_old_results(store, app[CLOCK], app[KEEP_RESULTS])),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _delete_old_results(store: Store, clock: Callable[[], float], keep_seconds: float | None) -> None:
    """Now and then, delete what `retention` says must go (a batch per call, so leases and
    reports come between them)."""
    while True:
        try:
            while await store.purge(clock(), keep_seconds) > 0:
                await asyncio.sleep(0)
        except Exception:  # one failed round must not end the rounds
            log.exception("deleting old results failed; trying again in %.0f s", PURGE_INTERVAL)
        await asyncio.sleep(PURGE_INTERVAL)


async def _keep_hosts_assigned(store: Store, clock: Callable[[], float]) -> None:
    """Reassign hosts now and then: peers come and go, work grows and shrinks."""
    while True:
        await asyncio.sleep(REBALANCE_INTERVAL)
        try:
            await store.rebalance(clock(), paced=True)
        except Exception:  # one failed round must not end the rounds
            log.exception("assigning hosts to peers failed; trying again in %.0f s", REBALANCE_INTERVAL)


# ---- edge helpers ----------------------------------------------------------------------


# ---- peer endpoints --------------------------------------------------------------------


# ---- owner endpoints -------------------------------------------------------------------
#
# Every owner request is signed by the owner's key (the one that signs its bundles), and the
# key's role (`roles`) decides: an owner sees and changes its own jobs, an operator all, a
# viewer reads all.


async def _health(request: web.Request) -> web.Response:
    """Up, and the key signed requests must name as their audience; 503 when the store does not
    answer within HEALTH_TIMEOUT (a load balancer then sends peers to another coordinator)."""
    public_key = request.app[IDENTITY].public_hex
    try:
        await asyncio.wait_for(request.app[STORE].peer_count(), HEALTH_TIMEOUT)
    except Exception as exc:  # whatever the store's trouble, the answer is the same: not healthy
        reason = f"it did not answer within {HEALTH_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else str(exc)
        return reply({"ok": False, "store": f"unreachable: {reason}", "public_key": public_key}, status=503)
    return reply({"ok": True, "store": "ok", "public_key": public_key})


# ---- bundle endpoints ------------------------------------------------------------------


async def _seed_stored_bundles(app: web.Application) -> None:
    await app[BUNDLES].start(app[STORE])
