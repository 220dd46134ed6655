"""The coordinator's HTTP API: thin aiohttp handlers over a `Store`.

Every body, in and out, is msgpack. Peer endpoints are signed (the signer's hex public key is
the peer id); owner endpoints are open until owner admission exists. Every error, including
aiohttp's own 404/405/413, leaves as `overlay.wire.error_body` with one status per cause:

    WireError (bad msgpack, wrong types)   400     UnknownPeer   403
    WireError (unsigned, bad signature)    401     NotFound      404
    InvalidInput                           400     StaleLease    409
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from coordinator.announcer import PEER_ACTIVE_WINDOW, Announcer, backlog
from coordinator.sqlite_store import SqliteStore
from coordinator.store import DEFAULT_UNIT_SIZE, InvalidInput, NotFound, StaleLease, Store, UnknownPeer
from overlay.announcements import NONCE_SIZE, hello_message
from overlay.dht import DhtNode
from overlay.identity import Identity
from overlay.wire import (
    CONTENT_TYPE,
    MAX_BODY,
    JobCreated,
    JobSubmit,
    LeaseRef,
    LeaseRequest,
    LeaseResponse,
    RegisterRequest,
    RegisterResponse,
    RenewResponse,
    Report,
    WireError,
    decode,
    encode,
    error_body,
    parse,
    to_obj,
    verify_request,
)

log = logging.getLogger(__name__)

STORE = web.AppKey("store", Store)
IDENTITY = web.AppKey("identity", Identity)
LEASE_SECONDS = web.AppKey("lease_seconds", float)
CLOCK = web.AppKey("clock", Callable[[], float])

RETRY_AFTER = 1.0  # seconds a peer waits before asking again when there is no work
MAX_RESULTS_PAGE = 5000

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
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors])
    app[STORE] = store
    app[IDENTITY] = identity or Identity.generate()
    app[LEASE_SECONDS] = lease_seconds
    app[CLOCK] = clock
    app.cleanup_ctx.append(_open_store)
    app.router.add_post("/v1/peers/register", _register)
    app.router.add_post("/v1/leases", _lease)
    app.router.add_post("/v1/leases/renew", _renew)
    app.router.add_post("/v1/leases/release", _release)
    app.router.add_post("/v1/reports", _report)
    app.router.add_post("/v1/jobs", _submit_job)
    app.router.add_get("/v1/jobs", _list_jobs)
    # At most 19 digits: an id beyond SQLite's range is simply unknown, never a crash.
    app.router.add_get(r"/v1/jobs/{job_id:\d{1,19}}", _job_status)
    app.router.add_get(r"/v1/jobs/{job_id:\d{1,19}}/results", _job_results)
    app.router.add_get("/v1/health", _health)
    app.router.add_post("/v1/hello", _hello)
    return app


async def serve(
    host: str,
    port: int,
    db_path: Path,
    *,
    identity: Identity | None = None,
    lease_seconds: float = 60.0,
    unit_size: int = DEFAULT_UNIT_SIZE,
    ready: Callable[[int], None] | None = None,
    dht: DhtNode | None = None,
    network: str = "public",
    public_url: str | None = None,
) -> None:
    """Serve the API on host:port (0 picks a free port) until cancelled; with a DHT node,
    announce the coordinator in `network` under `public_url` (default: the address served)."""
    identity = identity or Identity.generate()
    store = SqliteStore(db_path, unit_size=unit_size)
    runner = web.AppRunner(make_app(store, identity=identity, lease_seconds=lease_seconds))
    await runner.setup()
    announcer = None
    announcing = None
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        actual_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        url = public_url or f"http://{shown_host}:{actual_port}"
        log.info("coordinator %s… listening on http://%s:%d", identity.public_hex[:12], shown_host, actual_port)
        if dht is not None:
            announcer = Announcer(dht, identity, store, url=url, network=network)
            announcing = asyncio.create_task(announcer.run())
        if ready is not None:
            ready(actual_port)
        await asyncio.Event().wait()
    finally:
        if announcing is not None and announcer is not None:
            announcing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcing
            with contextlib.suppress(Exception):
                await asyncio.wait_for(announcer.withdraw(), timeout=5.0)
        await runner.cleanup()


async def _open_store(app: web.Application) -> AsyncIterator[None]:
    async with app[STORE]:
        yield


# ---- edge helpers ----------------------------------------------------------------------


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
    except WireError as exc:
        status = 401 if exc.code in ("unsigned", "bad_signature") else 400
        return _error(status, exc.code, str(exc))
    except InvalidInput as exc:
        return _error(400, "invalid_input", str(exc))
    except UnknownPeer as exc:
        return _error(403, "unknown_peer", str(exc))
    except NotFound as exc:
        return _error(404, "not_found", str(exc))
    except StaleLease as exc:
        return _error(409, "stale_lease", str(exc))
    except Exception:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return _error(500, "internal", "internal error; the coordinator logged the details")


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"request body is larger than {MAX_BODY} bytes"
    return exc.reason


async def _signed_body(request: web.Request) -> tuple[str, Any]:
    """The verified signer's peer id and the decoded body. The signature covers the path
    without its query string, as `overlay.http` signs it."""
    body = await request.read()
    peer_id = verify_request(request.headers, request.method, request.rel_url.raw_path, body, request.app[CLOCK]())
    return peer_id, decode(body)


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise InvalidInput(f"query parameter {name} must be an integer {low}..{high}")
    return int(raw)


# ---- peer endpoints --------------------------------------------------------------------


async def _register(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request)
    message = parse(RegisterRequest, obj)
    await request.app[STORE].register_peer(peer_id, message, request.app[CLOCK]())
    log.info("peer %s registered as %r with %d slots", peer_id[:12], message.name, message.slots)
    return _reply(to_obj(RegisterResponse(peer_id=peer_id, lease_seconds=request.app[LEASE_SECONDS])))


async def _lease(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request)
    message = parse(LeaseRequest, obj)
    granted = await request.app[STORE].lease(
        peer_id, message.max_units, message.workloads, request.app[CLOCK](), request.app[LEASE_SECONDS]
    )
    return _reply(to_obj(LeaseResponse(leases=granted, retry_after=None if granted else RETRY_AFTER)))


async def _renew(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request)
    ref = parse(LeaseRef, obj)
    expires_at = await request.app[STORE].renew(
        peer_id, ref.unit_id, ref.token, request.app[CLOCK](), request.app[LEASE_SECONDS]
    )
    return _reply(to_obj(RenewResponse(expires_at=expires_at)))


async def _release(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request)
    ref = parse(LeaseRef, obj)
    await request.app[STORE].release(peer_id, ref.unit_id, ref.token, request.app[CLOCK]())
    return _reply({})


async def _report(request: web.Request) -> web.Response:
    peer_id, obj = await _signed_body(request)
    report = parse(Report, obj)
    response = await request.app[STORE].report(peer_id, report, request.app[CLOCK]())
    return _reply(to_obj(response))


# ---- owner endpoints -------------------------------------------------------------------


async def _submit_job(request: web.Request) -> web.Response:
    submit = parse(JobSubmit, decode(await request.read()))
    job_id = await request.app[STORE].create_job(submit.workload, submit.input, request.app[CLOCK]())
    return _reply(to_obj(JobCreated(job_id=job_id)))


async def _list_jobs(request: web.Request) -> web.Response:
    jobs = await request.app[STORE].list_jobs()
    return _reply({"jobs": [to_obj(job) for job in jobs]})


async def _job_status(request: web.Request) -> web.Response:
    status = await request.app[STORE].job_status(int(request.match_info["job_id"]))
    return _reply(to_obj(status))


async def _job_results(request: web.Request) -> web.Response:
    job_id = int(request.match_info["job_id"])
    offset = _query_int(request, "offset", 0, 0, 2**62)
    limit = _query_int(request, "limit", MAX_RESULTS_PAGE, 1, MAX_RESULTS_PAGE)
    store = request.app[STORE]
    items = await store.job_results(job_id, offset, limit)
    total = (await store.job_status(job_id)).items_total
    return _reply({"items": items, "total": total})


async def _health(request: web.Request) -> web.Response:
    return _reply({"ok": True})


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
