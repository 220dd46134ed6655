"""The peers' side of the API: register, lease, renew, release, report (one, a batch, or the
items a running unit streamed), and the hello proof a peer asks of a coordinator it found in
the DHT. Every request but hello is signed; the signer's public key is the peer's id."""

from __future__ import annotations

import logging
from dataclasses import replace

from aiohttp import web

from coordinator.announcer import PEER_ACTIVE_WINDOW, backlog
from coordinator.edge import (
    CLOCK,
    IDENTITY,
    LEASE_SECONDS,
    STORE,
    reply,
    signed_body,
)
from coordinator.metrics import METRICS
from coordinator.rate_limits import Route
from coordinator.store import (
    InvalidInput,
    Store,
    StoreError,
)
from overlay.announcements import NONCE_SIZE, hello_message
from overlay.wire import (
    ANY_WORKLOAD,
    LeaseRef,
    LeaseRequest,
    LeaseResponse,
    RegisterRequest,
    RegisterResponse,
    RenewResponse,
    Report,
    WireError,
    decode,
    parse,
    to_obj,
)
from overlay.wire_reports import MAX_REPORT_BATCH, ItemsReport, ReportBatch, ReportBatchResponse

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0  # seconds a peer waits before asking again when there is no work


async def _register(request: web.Request) -> web.Response:
    peer_id, obj = await signed_body(request, Route.REGISTER)
    message = parse(RegisterRequest, obj)
    store = request.app[STORE]
    workloads = await _runnable(store, message.workloads, message.trusted_owners)
    await store.register_peer(peer_id, replace(message, workloads=workloads), request.app[CLOCK]())
    # Hosts for the newcomer at once; many registering together share one rebalance.
    await store.rebalance(request.app[CLOCK](), only_if_needed=True)
    log.info("peer %s registered as %r with %d slots", peer_id[:12], message.name, message.slots)
    return reply(to_obj(RegisterResponse(peer_id=peer_id, lease_seconds=request.app[LEASE_SECONDS])))


async def _lease(request: web.Request) -> web.Response:
    peer_id, obj = await signed_body(request, Route.LEASE)
    message = parse(LeaseRequest, obj)
    store = request.app[STORE]
    workloads = await _runnable(store, message.workloads, message.trusted_owners)
    # The network a vantage job's unit goes by is the connection's, never the peer's word.
    granted = await store.lease(
        peer_id,
        message.max_units,
        workloads,
        request.app[CLOCK](),
        request.app[LEASE_SECONDS],
        message.usage,
        request.remote,
    )
    request.app[METRICS].leased(len(granted))
    return reply(to_obj(LeaseResponse(leases=granted, retry_after=None if granted else RETRY_AFTER)))


async def _runnable(store: Store, workloads: list[str], trusted_owners: list[bytes] | None) -> list[str]:
    """The bundles a peer runs: those it names, and where it has no sandbox (it sent the owner
    keys it trusts) only those of these owners, so it is never given work it must refuse."""
    if trusted_owners is None:
        return workloads
    owners = {key.hex() for key in trusted_owners}
    names = {bundle.name for bundle in await store.published_bundles() if bundle.owner_key in owners}
    return sorted(names if ANY_WORKLOAD in workloads else names & set(workloads))


async def _renew(request: web.Request) -> web.Response:
    peer_id, obj = await signed_body(request, Route.LEASE)
    ref = parse(LeaseRef, obj)
    expires_at = await request.app[STORE].renew(
        peer_id, ref.unit_id, ref.token, request.app[CLOCK](), request.app[LEASE_SECONDS]
    )
    return reply(to_obj(RenewResponse(expires_at=expires_at)))


async def _release(request: web.Request) -> web.Response:
    peer_id, obj = await signed_body(request, Route.LEASE)
    ref = parse(LeaseRef, obj)
    await request.app[STORE].release(peer_id, ref.unit_id, ref.token, request.app[CLOCK](), ref.unable)
    return reply({})


async def _report(request: web.Request) -> web.Response:
    peer_id, obj = await signed_body(request, Route.REPORT)
    report = parse(Report, obj)
    metrics = request.app[METRICS]
    try:
        response = await request.app[STORE].report(peer_id, report, request.app[CLOCK]())
    except StoreError:
        metrics.reported(report, None)
        raise
    metrics.reported(report, response)
    return reply(to_obj(response))


async def _report_batch(request: web.Request) -> web.Response:
    peer_id, obj = await signed_body(request, Route.REPORT)
    reports = obj.get("reports") if isinstance(obj, dict) else None
    if isinstance(reports, list) and len(reports) > MAX_REPORT_BATCH:
        raise InvalidInput(
            f"a report batch holds at most {MAX_REPORT_BATCH} reports, this one has {len(reports)}; "
            "send the rest in another batch"
        )
    batch = parse(ReportBatch, obj)
    verdicts = await request.app[STORE].report_batch(peer_id, batch.reports, request.app[CLOCK]())
    request.app[METRICS].reported_batch(batch.reports, verdicts)
    return reply(to_obj(ReportBatchResponse(results=verdicts)))


async def _report_items(request: web.Request) -> web.Response:
    """Items a running unit's workload streamed (process API version 2), under its lease."""
    peer_id, obj = await signed_body(request, Route.REPORT)
    report = parse(ItemsReport, obj)
    answer = await request.app[STORE].report_items(peer_id, report, request.app[CLOCK]())
    request.app[METRICS].streamed(answer.taken)
    return reply(to_obj(answer))


async def _hello(request: web.Request) -> web.Response:
    """Sign the caller's nonce: proof that this server holds the key it is announced with."""
    body = decode(await request.read())
    nonce = body.get("nonce") if isinstance(body, dict) else None
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise WireError(f"body must be a map with a {NONCE_SIZE}-byte 'nonce'")
    identity = request.app[IDENTITY]
    store = request.app[STORE]
    now = request.app[CLOCK]()
    return reply(
        {
            "public_key": identity.public_hex,
            "signature": identity.sign(hello_message(nonce)),
            # Live figures: announcements in the DHT are refreshed only every few minutes.
            "load": backlog(await store.list_jobs()),
            "peers": await store.peer_count(now - PEER_ACTIVE_WINDOW),
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/peers/register", _register)
    app.router.add_post("/v1/leases", _lease)
    app.router.add_post("/v1/leases/renew", _renew)
    app.router.add_post("/v1/leases/release", _release)
    app.router.add_post("/v1/reports", _report)
    app.router.add_post("/v1/reports/batch", _report_batch)
    app.router.add_post("/v1/reports/items", _report_items)
    app.router.add_post("/v1/hello", _hello)
