"""The owners' side of the API: jobs (submit, list, status, results with their columns, the
failed units' logs, cancel) and bundles
(publish, roll out; listed and described to anyone: bundles are public code).

Every owner request is signed by the owner's key (the one that signs its bundles), and the
key's role (`roles`) decides: an owner sees and changes its own jobs, an operator all, a
viewer reads all."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from typing import BinaryIO

from aiohttp import web

from coordinator import roles
from coordinator.edge import (
    BUNDLES,
    CLOCK,
    IDENTITY,
    NONCES,
    STORE,
    UPLOADS,
    allow,
    error,
    owner_request,
    query_int,
    reply,
    role_of,
)
from coordinator.rate_limits import Route
from coordinator.roles import Action
from overlay.wire import (
    BundleInfo,
    BundlePublish,
    JobCreated,
    JobStatus,
    JobSubmit,
    RolloutRequest,
    WireError,
    decode,
    parse,
    signed_by,
    to_obj,
    verify_digest,
)
from workloads.bundle import MAX_MANIFEST_BYTES, MAX_TOTAL_BYTES

log = logging.getLogger(__name__)

MAX_RESULTS_PAGE = 5000


# A bundle upload: the largest archive and manifest a peer would accept, plus msgpack framing.
MAX_BUNDLE_UPLOAD = MAX_TOTAL_BYTES + MAX_MANIFEST_BYTES + 64 * 1024


async def _own_job(request: web.Request, action: Action) -> tuple[str, JobStatus]:
    """The signer and the job the path names, if the signer's role may `action` on it."""
    signer, role, _ = await owner_request(request, action)
    status = await request.app[STORE].job_status(int(request.match_info["job_id"]))
    allow(signer, role, action, own=status.owner == signer)
    return signer, status


async def _submit_job(request: web.Request) -> web.Response:
    signer, _, obj = await owner_request(request, Action.SUBMIT_JOB, Route.SUBMIT)
    submit = parse(JobSubmit, obj)
    store = request.app[STORE]
    job_id = await store.create_job(submit.workload, submit.input, request.app[CLOCK](), submit.version, signer)
    await store.rebalance(request.app[CLOCK](), only_if_needed=True, paced=True)
    return reply(to_obj(JobCreated(job_id=job_id)))


async def _cancel_job(request: web.Request) -> web.Response:
    signer, status = await _own_job(request, Action.CANCEL_JOB)
    cancelled = await request.app[STORE].cancel_job(status.job_id, signer, request.app[CLOCK]())
    return reply(to_obj(cancelled))


async def _delete_job(request: web.Request) -> web.Response:
    signer, status = await _own_job(request, Action.DELETE_JOB)
    deleted = await request.app[STORE].delete_job(status.job_id, signer, request.app[CLOCK]())
    return reply(to_obj(deleted))


async def _list_jobs(request: web.Request) -> web.Response:
    signer, role, _ = await owner_request(request, Action.LIST_JOBS)
    jobs = await request.app[STORE].list_jobs(None if roles.sees_everything(role) else signer)
    return reply({"jobs": [to_obj(job) for job in jobs]})


async def _job_status(request: web.Request) -> web.Response:
    _, status = await _own_job(request, Action.READ_JOB)
    return reply(to_obj(status))


async def _job_results(request: web.Request) -> web.Response:
    _, status = await _own_job(request, Action.READ_JOB)
    offset = query_int(request, "offset", 0, 0, 2**62)
    limit = query_int(request, "limit", MAX_RESULTS_PAGE, 1, MAX_RESULTS_PAGE)
    store = request.app[STORE]
    items = await store.job_results(status.job_id, offset, limit)
    columns = await store.job_columns(status.job_id)
    return reply({"items": items, "total": status.items_total, "columns": columns})


async def _job_logs(request: web.Request) -> web.Response:
    _, status = await _own_job(request, Action.READ_JOB)
    logs = await request.app[STORE].job_logs(status.job_id)
    return reply({"logs": [to_obj(entry) for entry in logs]})


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
    allow(signer, await role_of(request, signer), Action.PUBLISH_BUNDLE)
    bundles = request.app.get(BUNDLES)
    if bundles is None:
        return error(503, "no_bundles", "this coordinator does not accept bundle uploads")
    store = request.app[STORE]
    limit = min(MAX_BUNDLE_UPLOAD, (await store.limits_of(signer)).bundle_bytes + MAX_MANIFEST_BYTES + 64 * 1024)
    async with request.app[UPLOADS]:
        with tempfile.TemporaryFile() as spool:
            digest = await _stream_upload(request, limit, spool)
            if digest is None:
                return error(413, "body_too_large", f"bundle upload is larger than this key's limit of {limit} bytes")
            signed = verify_digest(request.headers, request.method, request.rel_url.raw_path, digest, now, audience)
            if not request.app[NONCES].first_time(signed.signer, signed.nonce, signed.sent_at, now):
                raise WireError("this signed request was already taken (a replay)", "replayed")
            spool.seek(0)
            upload = parse(BundlePublish, decode(await asyncio.to_thread(spool.read)))
        status = await bundles.publish(store, upload.manifest, upload.archive, now, uploader=signer)
    return reply(to_obj(status))


async def _list_bundles(request: web.Request) -> web.Response:
    bundles = await request.app[STORE].list_bundles()
    return reply({"bundles": [to_obj(b) for b in bundles]})


async def _bundle_status(request: web.Request) -> web.Response:
    status = await request.app[STORE].bundle_status(request.match_info["name"])
    return reply(to_obj(status))


async def _bundle_info(request: web.Request) -> web.Response:
    published = await request.app[STORE].bundle_info(request.match_info["name"], request.match_info["version"])
    bundles = request.app.get(BUNDLES)
    seeds = [] if bundles is None or request.url.host is None else bundles.seeds(request.url.host)
    info = BundleInfo(published.name, published.version, published.info_hash, published.manifest, seeds)
    return reply(to_obj(info))


async def _rollout(request: web.Request) -> web.Response:
    """The owner moves a version's rollout; signed, so only the name's owner key can (the
    store's rule), and only while the key has a role that publishes."""
    signer, _, obj = await owner_request(request, Action.ROLL_OUT)
    message = parse(RolloutRequest, obj)
    status = await request.app[STORE].set_rollout(
        request.match_info["name"], message.version, message.percent, signer, request.app[CLOCK](), message.force
    )
    return reply(to_obj(status))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/jobs", _submit_job)
    app.router.add_get("/v1/jobs", _list_jobs)
    # At most 19 ASCII digits: an id beyond SQLite's range is simply unknown, never a crash.
    app.router.add_get(r"/v1/jobs/{job_id:[0-9]{1,19}}", _job_status)
    app.router.add_get(r"/v1/jobs/{job_id:[0-9]{1,19}}/results", _job_results)
    app.router.add_get(r"/v1/jobs/{job_id:[0-9]{1,19}}/logs", _job_logs)
    app.router.add_post(r"/v1/jobs/{job_id:[0-9]{1,19}}/cancel", _cancel_job)
    app.router.add_post(r"/v1/jobs/{job_id:[0-9]{1,19}}/delete", _delete_job)
    app.router.add_post("/v1/bundles", _publish_bundle)
    app.router.add_get("/v1/bundles", _list_bundles)
    app.router.add_get("/v1/bundles/{name}", _bundle_status)
    app.router.add_post("/v1/bundles/{name}/rollout", _rollout)
    app.router.add_get("/v1/bundles/{name}/{version}", _bundle_info)
