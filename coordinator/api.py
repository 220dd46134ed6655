"""The coordinator's HTTP API: thin aiohttp handlers over a `Store`.

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
import hashlib
import ipaddress
import logging
import math
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from coordinator import dashboard, request_checks, roles
from coordinator.announcer import PEER_ACTIVE_WINDOW, Announcer, backlog
from coordinator.assignment import DEFAULT_EPSILON
from coordinator.host_pacing import DEFAULT_MIN_DELAY
from coordinator.rate_limits import RateLimiter, RateLimits, Route
from coordinator.replays import SeenNonces
from coordinator.roles import AccessRefused, Action, Role
from coordinator.seeder import BUILTIN_DIR, BundleSeeder, BundleService
from coordinator.sqlite import SqliteStore
from coordinator.store import (
    DEFAULT_UNIT_SIZE,
    OPERATOR,
    REBALANCE_INTERVAL,
    InvalidInput,
    Store,
    StoreError,
)
from overlay.announcements import NONCE_SIZE, hello_message
from overlay.certificates import Admission
from overlay.dht import DhtNode
from overlay.errors import OsaasError
from overlay.identity import Identity
from overlay.wire import (
    ANY_WORKLOAD,
    CONTENT_TYPE,
    MAX_BODY,
    MAX_REPORT_BATCH,
    BundleInfo,
    BundlePublish,
    JobCreated,
    JobStatus,
    JobSubmit,
    LeaseRef,
    LeaseRequest,
    LeaseResponse,
    RegisterRequest,
    RegisterResponse,
    RenewResponse,
    Report,
    ReportBatch,
    ReportBatchResponse,
    RolloutRequest,
    WireError,
    decode,
    encode,
    error_body,
    parse,
    signed_by,
    to_obj,
    verify_digest,
    verify_request,
)
from workloads import builtin
from workloads.bundle import MAX_MANIFEST_BYTES, MAX_TOTAL_BYTES

log = logging.getLogger(__name__)

STORE = web.AppKey("store", Store)
IDENTITY = web.AppKey("identity", Identity)
LEASE_SECONDS = web.AppKey("lease_seconds", float)
CLOCK = web.AppKey[Callable[[], float]]("clock")
ALLOWED_HOSTS = web.AppKey[frozenset[str]]("allowed_hosts")
NONCES = web.AppKey("nonces", SeenNonces)
LIMITER = web.AppKey("limiter", RateLimiter)
UPLOADS = web.AppKey("uploads", asyncio.Semaphore)
MAX_UPLOADS_AT_ONCE = 2  # bundle uploads checked at once: each may hold an archive in memory
BUNDLES = web.AppKey("bundles", BundleService)

RETRY_AFTER = 1.0  # seconds a peer waits before asking again when there is no work
MAX_RESULTS_PAGE = 5000
# A bundle upload: the largest archive and manifest a peer would accept, plus msgpack framing.
MAX_BUNDLE_UPLOAD = MAX_TOTAL_BYTES + MAX_MANIFEST_BYTES + 64 * 1024
BUILTIN_OWNER = "coordinator"  # the owner name the coordinator's own key is registered under

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
) -> web.Application:
    """The API over `store`. Without `bundles` the app serves what the store knows of bundles
    but refuses uploads (503), and offers peers no seed address. With `dashboard_access`, the
    operator's dashboard is served under /dashboard/ (coordinator.dashboard). Requests must
    name an IP address, localhost or one of `allowed_hosts` as their host (`request_checks`).
    Register, lease, report and submit are rate limited per key and per address
    (`rate_limits`, default `RateLimits()`)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors, _checked])
    app[ALLOWED_HOSTS] = frozenset(host.lower() for host in allowed_hosts)
    app[STORE] = store
    app[IDENTITY] = identity or Identity.generate()
    app[LEASE_SECONDS] = lease_seconds
    app[CLOCK] = clock
    app[NONCES] = SeenNonces()
    app[LIMITER] = RateLimiter(rate_limits)
    app[UPLOADS] = asyncio.Semaphore(MAX_UPLOADS_AT_ONCE)
    app.cleanup_ctx.append(_open_store)
    if bundles is not None:
        app[BUNDLES] = bundles
        app.on_startup.append(_seed_stored_bundles)
    app.router.add_post("/v1/peers/register", _register)
    app.router.add_post("/v1/leases", _lease)
    app.router.add_post("/v1/leases/renew", _renew)
    app.router.add_post("/v1/leases/release", _release)
    app.router.add_post("/v1/reports", _report)
    app.router.add_post("/v1/reports/batch", _report_batch)
    app.router.add_post("/v1/jobs", _submit_job)
    app.router.add_get("/v1/jobs", _list_jobs)
    # At most 19 ASCII digits: an id beyond SQLite's range is simply unknown, never a crash.
    app.router.add_get(r"/v1/jobs/{job_id:[0-9]{1,19}}", _job_status)
    app.router.add_get(r"/v1/jobs/{job_id:[0-9]{1,19}}/results", _job_results)
    app.router.add_post(r"/v1/jobs/{job_id:[0-9]{1,19}}/cancel", _cancel_job)
    app.router.add_get("/v1/health", _health)
    app.router.add_post("/v1/hello", _hello)
    app.router.add_post("/v1/bundles", _publish_bundle)
    app.router.add_get("/v1/bundles", _list_bundles)
    app.router.add_get("/v1/bundles/{name}", _bundle_status)
    app.router.add_post("/v1/bundles/{name}/rollout", _rollout)
    app.router.add_get("/v1/bundles/{name}/{version}", _bundle_info)
    if dashboard_access is not None:
        app.add_subapp(dashboard.PREFIX, dashboard.dashboard_app(store, dashboard_access, clock))
    return app


async def serve(
    host: str,
    port: int,
    db_path: Path,
    *,
    identity: Identity | None = None,
    lease_seconds: float = 60.0,
    unit_size: int = DEFAULT_UNIT_SIZE,
    host_min_delay: float = DEFAULT_MIN_DELAY,
    epsilon: float = DEFAULT_EPSILON,
    ready: Callable[[int], None] | None = None,
    dht: DhtNode | None = None,
    network: str = "public",
    admission: Admission | None = None,
    public_url: str | None = None,
    bundle_dir: Path | None = None,
    torrent_listen: tuple[str, int] | None = None,
    bundle_upload_rate: int | None = None,
    public_dashboard: bool = False,
    allowed_hosts: Collection[str] = (),
    operator_keys: Collection[str] = (),
    rate_limits: RateLimits | None = None,
) -> None:
    """Serve the API on host:port (0 picks a free port) until cancelled; with a DHT node and
    the network's certificate of this coordinator (`admission`), announce it in that network
    under `public_url` (default: the address served). Without one, the DHT node still serves
    the bundles' swarms of `network`, but the coordinator is not announced: peers find only
    admitted coordinators.

    Bundles are kept in `bundle_dir` (default: beside the database, ending .bundles), seeded from
    `torrent_listen` (default: the HTTP host, any port) at up to `bundle_upload_rate` bytes/s.
    `host_min_delay`: the pause, in seconds, every host gets between two units; `epsilon`: how
    far above its capacity-weighted share a peer's load may go (`assignment`). The dashboard
    needs the token kept beside the database unless `public_dashboard`. The built-in link-check bundle
    is published at every start, signed by the coordinator's key: the operator installed this
    osaas, so its link-check version becomes the stable one at once.
    """
    identity = identity or Identity.generate()
    if admission is not None:
        network = admission.network
    store = SqliteStore(db_path, unit_size=unit_size, host_min_delay=host_min_delay, epsilon=epsilon, own_process=True)
    # Named after the database, like its .key, .dht and .torrent: two coordinators whose
    # databases share a directory must not share (and race on) one bundle dir.
    bundle_dir = bundle_dir or db_path.with_suffix(".bundles")
    torrent_host, torrent_port = torrent_listen or (host, 0)
    seeder = BundleSeeder(
        (await _ip_of(torrent_host), torrent_port),
        identity=identity,
        state_dir=db_path.with_suffix(".torrent"),
        upload_rate=bundle_upload_rate,
        dht=dht,
        network=network,
        announce_host=URL(public_url).host if public_url else None,
    )
    bundles = BundleService(bundle_dir, seeder)
    async with seeder:
        access = dashboard.DashboardAccess(dashboard.operator_token(db_path), public=public_dashboard)
        runner = web.AppRunner(
            make_app(
                store,
                identity=identity,
                lease_seconds=lease_seconds,
                bundles=bundles,
                dashboard_access=access,
                allowed_hosts={host, *allowed_hosts, *([URL(public_url).host or ""] if public_url else [])},
                rate_limits=rate_limits,
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
            raise StoreError(await store.failure())
        finally:
            if announcing is not None and announcer is not None:
                announcing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await announcing
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(announcer.withdraw(), timeout=5.0)
            await runner.cleanup()


async def _publish_builtin(store: Store, bundles: BundleService, identity: Identity, work_dir: Path) -> None:
    """Build the link-check bundle and publish it like any upload, owned by this coordinator.

    The build is scratch: publishing keeps its own copy, so `work_dir` is emptied either way.
    """
    try:
        built = await asyncio.to_thread(builtin.build_linkcheck, identity, work_dir)
        manifest, archive = await asyncio.to_thread(_read_built, built.manifest_path, built.archive_path)
    finally:
        await asyncio.to_thread(shutil.rmtree, work_dir, True)
    now = time.time()
    # The coordinator's own key is the operator's: it signs the built-in bundle, and the
    # operator signs requests with it (`--key` the .key beside the database).
    await store.grant(BUILTIN_OWNER, identity.public_hex, Role.OPERATOR, OPERATOR, now)
    status = await bundles.publish(store, manifest, archive, now, stable=True)
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
        rebalancing = asyncio.create_task(_keep_hosts_assigned(store, app[CLOCK]))
        try:
            yield
        finally:
            rebalancing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rebalancing


async def _keep_hosts_assigned(store: Store, clock: Callable[[], float]) -> None:
    """Reassign hosts now and then: peers come and go, work grows and shrinks."""
    while True:
        await asyncio.sleep(REBALANCE_INTERVAL)
        try:
            await store.rebalance(clock(), paced=True)
        except Exception:  # one failed round must not end the rounds
            log.exception("assigning hosts to peers failed; trying again in %.0f s", REBALANCE_INTERVAL)


# ---- edge helpers ----------------------------------------------------------------------


class AccessLog(AbstractAccessLogger):
    """One line per request without its query string: a dashboard login carries its token
    there (`?token=`), and tokens never reach a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %d %.3fs",
            request.remote,
            request.method,
            request.rel_url.path,
            response.status,
            response.body_length,
            time,
        )


def _reply(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode(obj), status=status, content_type=CONTENT_TYPE)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(body=error_body(code, message), status=status, content_type=CONTENT_TYPE)


@web.middleware
async def _errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), _http_message(request, exc))
    except OsaasError as exc:  # the tree says what each kind becomes (overlay.errors)
        response = _error(exc.http_status, exc.code, str(exc))
        if exc.retry_after is not None:
            response.headers[hdrs.RETRY_AFTER] = str(max(1, math.ceil(exc.retry_after)))
        return response
    except Exception:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return _error(500, "internal", "internal error; the coordinator logged the details")


@web.middleware
async def _checked(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Refuse what `request_checks` refuses before the handler reads a byte of it."""
    allowed: frozenset[str] = request.config_dict[ALLOWED_HOSTS]
    refusal = request_checks.check(
        request.method,
        request.headers.get(hdrs.HOST),
        request.headers.get(hdrs.ORIGIN),
        request.content_type if hdrs.CONTENT_TYPE in request.headers else "",
        request.body_exists,
        allowed,
    )
    if refusal is not None:
        return _error(*refusal)
    return await handler(request)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"request body is larger than {MAX_BODY} bytes"
    return exc.reason


async def _signed_body(request: web.Request, route: Route | None = None) -> tuple[str, Any]:
    """The verified signer's key (a peer's id) and the decoded body. The headers are checked
    before the body is read (signed, for this coordinator, in the clock window); the signature
    covers method, path without its query string (as `overlay.http` signs it), this
    coordinator's key, the time, a nonce and the body; a nonce is taken once.

    On a rate-limited `route` the client's address is charged first and a key without requests
    left is refused before its body is read; the key is charged once its signature is good
    (`rate_limits`: so that forged headers cannot spend another key's requests)."""
    now = request.app[CLOCK]()
    audience = request.app[IDENTITY].public_hex
    limiter = request.app[LIMITER]
    if route is not None:
        limiter.admit_address(route, request.remote, now)
    claimed = signed_by(request.headers, audience, now)
    if route is not None:
        limiter.check_key(route, claimed.signer, now)
    body = await request.read()
    signed = verify_request(request.headers, request.method, request.rel_url.raw_path, body, now, audience)
    if route is not None:
        limiter.admit_key(route, signed.signer, now)
    if not request.app[NONCES].first_time(signed.signer, signed.nonce, signed.sent_at, now):
        raise WireError("this signed request was already taken (a replay)", "replayed")
    return signed.signer, decode(body) if body else None


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not low <= int(raw) <= high:
        raise InvalidInput(f"query parameter {name} must be an integer {low}..{high}")
    return int(raw)


# ---- peer endpoints --------------------------------------------------------------------


async def _register(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request, Route.REGISTER)
    message = parse(RegisterRequest, obj)
    store = request.app[STORE]
    workloads = await _runnable(store, message.workloads, message.trusted_owners)
    await store.register_peer(peer_id, replace(message, workloads=workloads), request.app[CLOCK]())
    # Hosts for the newcomer at once; many registering together share one rebalance.
    await store.rebalance(request.app[CLOCK](), only_if_needed=True)
    log.info("peer %s registered as %r with %d slots", peer_id[:12], message.name, message.slots)
    return _reply(to_obj(RegisterResponse(peer_id=peer_id, lease_seconds=request.app[LEASE_SECONDS])))


async def _lease(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request, Route.LEASE)
    message = parse(LeaseRequest, obj)
    store = request.app[STORE]
    workloads = await _runnable(store, message.workloads, message.trusted_owners)
    granted = await store.lease(
        peer_id, message.max_units, workloads, request.app[CLOCK](), request.app[LEASE_SECONDS], message.usage
    )
    return _reply(to_obj(LeaseResponse(leases=granted, retry_after=None if granted else RETRY_AFTER)))


async def _runnable(store: Store, workloads: list[str], trusted_owners: list[bytes] | None) -> list[str]:
    """The bundles a peer runs: those it names, and where it has no sandbox (it sent the owner
    keys it trusts) only those of these owners, so it is never given work it must refuse."""
    if trusted_owners is None:
        return workloads
    owners = {key.hex() for key in trusted_owners}
    names = {bundle.name for bundle in await store.published_bundles() if bundle.owner_key in owners}
    return sorted(names if ANY_WORKLOAD in workloads else names & set(workloads))


async def _renew(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request, Route.LEASE)
    ref = parse(LeaseRef, obj)
    expires_at = await request.app[STORE].renew(
        peer_id, ref.unit_id, ref.token, request.app[CLOCK](), request.app[LEASE_SECONDS]
    )
    return _reply(to_obj(RenewResponse(expires_at=expires_at)))


async def _release(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request, Route.LEASE)
    ref = parse(LeaseRef, obj)
    await request.app[STORE].release(peer_id, ref.unit_id, ref.token, request.app[CLOCK]())
    return _reply({})


async def _report(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request, Route.REPORT)
    report = parse(Report, obj)
    response = await request.app[STORE].report(peer_id, report, request.app[CLOCK]())
    return _reply(to_obj(response))


async def _report_batch(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request, Route.REPORT)
    reports = obj.get("reports") if isinstance(obj, dict) else None
    if isinstance(reports, list) and len(reports) > MAX_REPORT_BATCH:
        raise InvalidInput(
            f"a report batch holds at most {MAX_REPORT_BATCH} reports, this one has {len(reports)}; "
            "send the rest in another batch"
        )
    batch = parse(ReportBatch, obj)
    verdicts = await request.app[STORE].report_batch(peer_id, batch.reports, request.app[CLOCK]())
    return _reply(to_obj(ReportBatchResponse(results=verdicts)))


# ---- owner endpoints -------------------------------------------------------------------
#
# Every owner request is signed by the owner's key (the one that signs its bundles), and the
# key's role (`roles`) decides: an owner sees and changes its own jobs, an operator all, a
# viewer reads all.


async def _owner_request(
    request: web.Request, action: Action, route: Route | None = None
) -> tuple[str, Role | None, Any]:
    """The signer, its role and the decoded body (None without one), refused unless the role
    may `action` at all (on something of its own). `route`: its rate limit, if it has one."""
    signer, body = await _signed_body(request, route)
    role = await _role(request, signer)
    _allow(signer, role, action)
    return signer, role, body


async def _role(request: web.Request, signer: str) -> Role | None:
    found = await request.app[STORE].role_of(signer)
    return None if found is None else Role(found)


def _allow(signer: str, role: Role | None, action: Action, own: bool = True) -> None:
    refusal = roles.refusal(signer, role, action, own)
    if refusal is not None:
        raise AccessRefused(refusal)


async def _own_job(request: web.Request, action: Action) -> tuple[str, JobStatus]:
    """The signer and the job the path names, if the signer's role may `action` on it."""
    signer, role, _ = await _owner_request(request, action)
    status = await request.app[STORE].job_status(int(request.match_info["job_id"]))
    _allow(signer, role, action, own=status.owner == signer)
    return signer, status


async def _submit_job(request: web.Request) -> web.Response:
    signer, _, obj = await _owner_request(request, Action.SUBMIT_JOB, Route.SUBMIT)
    submit = parse(JobSubmit, obj)
    store = request.app[STORE]
    job_id = await store.create_job(submit.workload, submit.input, request.app[CLOCK](), submit.version, signer)
    await store.rebalance(request.app[CLOCK](), only_if_needed=True, paced=True)
    return _reply(to_obj(JobCreated(job_id=job_id)))


async def _cancel_job(request: web.Request) -> web.Response:
    signer, status = await _own_job(request, Action.CANCEL_JOB)
    cancelled = await request.app[STORE].cancel_job(status.job_id, signer, request.app[CLOCK]())
    return _reply(to_obj(cancelled))


async def _list_jobs(request: web.Request) -> web.Response:
    signer, role, _ = await _owner_request(request, Action.LIST_JOBS)
    jobs = await request.app[STORE].list_jobs(None if roles.sees_everything(role) else signer)
    return _reply({"jobs": [to_obj(job) for job in jobs]})


async def _job_status(request: web.Request) -> web.Response:
    _, status = await _own_job(request, Action.READ_JOB)
    return _reply(to_obj(status))


async def _job_results(request: web.Request) -> web.Response:
    _, status = await _own_job(request, Action.READ_JOB)
    offset = _query_int(request, "offset", 0, 0, 2**62)
    limit = _query_int(request, "limit", MAX_RESULTS_PAGE, 1, MAX_RESULTS_PAGE)
    items = await request.app[STORE].job_results(status.job_id, offset, limit)
    return _reply({"items": items, "total": status.items_total})


async def _health(request: web.Request) -> web.Response:
    """Up, and the key signed requests must name as their audience."""
    return _reply({"ok": True, "public_key": request.app[IDENTITY].public_hex})


async def _hello(request: web.Request) -> web.Response:
    """Sign the caller's nonce: proof that this server holds the key it is announced with."""
    body = decode(await request.read())
    nonce = body.get("nonce") if isinstance(body, dict) else None
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise WireError(f"body must be a map with a {NONCE_SIZE}-byte 'nonce'")
    identity = request.app[IDENTITY]
    store = request.app[STORE]
    now = request.app[CLOCK]()
    return _reply(
        {
            "public_key": identity.public_hex,
            "signature": identity.sign(hello_message(nonce)),
            # Live figures: announcements in the DHT are refreshed only every few minutes.
            "load": backlog(await store.list_jobs()),
            "peers": await store.peer_count(now - PEER_ACTIVE_WINDOW),
        }
    )


# ---- bundle endpoints ------------------------------------------------------------------


async def _seed_stored_bundles(app: web.Application) -> None:
    await app[BUNDLES].start(app[STORE])


async def _stream_upload(request: web.Request, limit: int, into: BinaryIO) -> str | None:
    """Write the body into `into` as it arrives; its sha256 (hex), or None past `limit` bytes.
    Read by hand because bundle uploads may be far larger than the app's `client_max_size`,
    which holds for every other route; never held whole in memory while it arrives."""
    if request.content_length is not None and request.content_length > limit:
        return None
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > limit:
            return None
        digest.update(chunk)
        await asyncio.to_thread(into.write, chunk)
    return digest.hexdigest()


async def _publish_bundle(request: web.Request) -> web.Response:
    """An owner's upload: who sends it is known from the headers before a byte of the body is
    read (signed for this coordinator, in the clock window, a key with a role that publishes),
    so a stranger's upload costs nothing; the body then streams to a temp file, capped at the
    owner's bundle size limit, and the signature is checked against its hash."""
    now = request.app[CLOCK]()
    audience = request.app[IDENTITY].public_hex
    signer = signed_by(request.headers, audience, now).signer
    _allow(signer, await _role(request, signer), Action.PUBLISH_BUNDLE)
    bundles = request.app.get(BUNDLES)
    if bundles is None:
        return _error(503, "no_bundles", "this coordinator does not accept bundle uploads")
    store = request.app[STORE]
    limit = min(MAX_BUNDLE_UPLOAD, (await store.limits_of(signer)).bundle_bytes + MAX_MANIFEST_BYTES + 64 * 1024)
    async with request.app[UPLOADS]:
        with tempfile.TemporaryFile() as spool:
            digest = await _stream_upload(request, limit, spool)
            if digest is None:
                return _error(413, "body_too_large", f"bundle upload is larger than this key's limit of {limit} bytes")
            signed = verify_digest(request.headers, request.method, request.rel_url.raw_path, digest, now, audience)
            if not request.app[NONCES].first_time(signed.signer, signed.nonce, signed.sent_at, now):
                raise WireError("this signed request was already taken (a replay)", "replayed")
            spool.seek(0)
            upload = parse(BundlePublish, decode(await asyncio.to_thread(spool.read)))
        status = await bundles.publish(store, upload.manifest, upload.archive, now, uploader=signer)
    return _reply(to_obj(status))


async def _list_bundles(request: web.Request) -> web.Response:
    bundles = await request.app[STORE].list_bundles()
    return _reply({"bundles": [to_obj(b) for b in bundles]})


async def _bundle_status(request: web.Request) -> web.Response:
    status = await request.app[STORE].bundle_status(request.match_info["name"])
    return _reply(to_obj(status))


async def _bundle_info(request: web.Request) -> web.Response:
    published = await request.app[STORE].bundle_info(request.match_info["name"], request.match_info["version"])
    bundles = request.app.get(BUNDLES)
    seeds = [] if bundles is None or request.url.host is None else bundles.seeds(request.url.host)
    info = BundleInfo(published.name, published.version, published.info_hash, published.manifest, seeds)
    return _reply(to_obj(info))


async def _rollout(request: web.Request) -> web.Response:
    """The owner moves a version's rollout; signed, so only the name's owner key can (the
    store's rule), and only while the key has a role that publishes."""
    signer, _, obj = await _owner_request(request, Action.ROLL_OUT)
    message = parse(RolloutRequest, obj)
    status = await request.app[STORE].set_rollout(
        request.match_info["name"], message.version, message.percent, signer, request.app[CLOCK]()
    )
    return _reply(to_obj(status))
