"""What a project owner does against a coordinator: publish and roll out bundles, submit a job,
watch it, cancel it, fetch results. Every request is signed with the owner's key: the
coordinator knows the key's role (`coordinator.roles`) and each job's owner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

from overlay import http, wire
from overlay.identity import Identity

if TYPE_CHECKING:  # the bundle module pulls in libtorrent: a type is all that is needed here
    from workloads.bundle import BuiltBundle

RESULTS_PAGE = 5000
# A page of 5,000 results with long URLs and redirect chains can pass http's usual 16 MiB cap;
# the owner asked for them from a coordinator it chose, so the cap here is only against a flood.
RESULTS_PAGE_MAX_BYTES = 256 * 2**20
# An upload of up to 200 MB at a slow link's pace.
PUBLISH_TIMEOUT = 900.0


async def submit(
    session: aiohttp.ClientSession,
    coordinator: str,
    key: Identity,
    workload: str,
    job_input: dict[str, Any],
    version: str | None = None,
) -> int:
    message = wire.JobSubmit(workload, job_input, version)
    answer = await http.call(session, "POST", coordinator, "/v1/jobs", message, identity=key)
    return _parse(wire.JobCreated, answer).job_id


async def cancel(session: aiohttp.ClientSession, coordinator: str, key: Identity, job_id: int) -> wire.JobStatus:
    answer = await http.call(session, "POST", coordinator, f"/v1/jobs/{job_id}/cancel", identity=key)
    return _parse(wire.JobStatus, answer)


async def delete(session: aiohttp.ClientSession, coordinator: str, key: Identity, job_id: int) -> wire.JobStatus:
    answer = await http.call(session, "POST", coordinator, f"/v1/jobs/{job_id}/delete", identity=key)
    return _parse(wire.JobStatus, answer)


async def jobs(session: aiohttp.ClientSession, coordinator: str, key: Identity) -> list[wire.JobStatus]:
    """The key's jobs (every job, for an operator or a viewer)."""
    answer = await http.call(session, "GET", coordinator, "/v1/jobs", identity=key)
    listed = answer.get("jobs") if isinstance(answer, dict) else None
    if not isinstance(listed, list):
        raise http.Unavailable("coordinator sent a malformed job list")
    return [_parse(wire.JobStatus, job) for job in listed]


def split_bundle(text: str) -> tuple[str, str | None]:
    """ "NAME" or "NAME@VERSION" as (name, version or None)."""
    name, sep, version = text.partition("@")
    if not name or (sep and not version):
        raise ValueError(f"{text!r} is not NAME or NAME@VERSION")
    return name, version or None


async def publish(
    session: aiohttp.ClientSession, coordinator: str, key: Identity, built: BuiltBundle
) -> wire.BundleStatus:
    """Upload a built bundle, signed with the key that signed it; the coordinator checks it as
    a peer would before seeding it."""
    message = wire.BundlePublish(built.manifest_path.read_bytes(), built.archive_path.read_bytes())
    await http.call(session, "POST", coordinator, "/v1/bundles", message, identity=key, timeout=PUBLISH_TIMEOUT)
    return await bundle_status(session, coordinator, built.signed.manifest.name)


async def rollout(
    session: aiohttp.ClientSession,
    coordinator: str,
    key: Identity,
    name: str,
    version: str,
    percent: int,
    force: bool = False,
) -> wire.BundleStatus:
    """Send `version` of bundle `name` to `percent` of peers; signed with the owner's key.
    `force`: even a version the coordinator rolled back."""
    message = wire.RolloutRequest(version=version, percent=percent, force=force)
    answer = await http.call(session, "POST", coordinator, f"/v1/bundles/{name}/rollout", message, identity=key)
    return _parse(wire.BundleStatus, answer)


async def bundle_status(session: aiohttp.ClientSession, coordinator: str, name: str) -> wire.BundleStatus:
    return _parse(wire.BundleStatus, await http.call(session, "GET", coordinator, f"/v1/bundles/{name}"))


def describe(status: wire.BundleStatus) -> str:
    """A bundle's rollout state and per-version failure rates, for people."""
    lines = [f"bundle {status.name} (owner {status.owner_key[:16]}…): {status.state}"]
    lines.append(f"  stable: {status.stable or '-'}")
    if status.candidate:
        lines.append(f"  rolling out: {status.candidate} to {status.percent}% of peers")
    if status.message:
        lines.append(f"  {status.message}")
    for v in status.versions:
        finished = v.units_ok + v.units_failed
        rate = f"{100 * v.units_failed / finished:.0f}% failed" if finished else "no units yet"
        mark = ", rolled back" if v.rolled_back else ""
        lines.append(
            f"  {v.version}: {v.units_ok} ok, {v.units_failed} failed ({rate}{mark}), info-hash {v.info_hash.hex()}"
        )
    return "\n".join(lines)


async def status(session: aiohttp.ClientSession, coordinator: str, key: Identity, job_id: int) -> wire.JobStatus:
    return _parse(wire.JobStatus, await http.call(session, "GET", coordinator, f"/v1/jobs/{job_id}", identity=key))


async def results(session: aiohttp.ClientSession, coordinator: str, key: Identity, job_id: int) -> list[dict[str, Any]]:
    """Every results row of the job (`results_with_columns` without the columns)."""
    return (await results_with_columns(session, coordinator, key, job_id))[1]


async def results_with_columns(
    session: aiohttp.ClientSession, coordinator: str, key: Identity, job_id: int
) -> tuple[list[str], list[dict[str, Any]]]:
    """The job's results columns (its workload's job model) and every row, page by page."""
    items: list[dict[str, Any]] = []
    while True:
        path = f"/v1/jobs/{job_id}/results?offset={len(items)}&limit={RESULTS_PAGE}"
        answer = await http.call(
            session, "GET", coordinator, path, identity=key, timeout=120.0, max_bytes=RESULTS_PAGE_MAX_BYTES
        )
        page = answer.get("items") if isinstance(answer, dict) else None
        columns = answer.get("columns") if isinstance(answer, dict) else None
        if not isinstance(page, list) or not all(isinstance(i, dict) for i in page):
            raise http.Unavailable("coordinator sent malformed results")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise http.Unavailable("coordinator sent results without their columns (an older coordinator?)")
        items.extend(page)
        if len(page) < RESULTS_PAGE:
            return columns, items


async def logs(session: aiohttp.ClientSession, coordinator: str, key: Identity, job_id: int) -> list[wire.UnitLog]:
    """The stderr tails of the job's failed units, as their peers captured them."""
    answer = await http.call(session, "GET", coordinator, f"/v1/jobs/{job_id}/logs", identity=key)
    entries = answer.get("logs") if isinstance(answer, dict) else None
    if not isinstance(entries, list):
        raise http.Unavailable("coordinator sent malformed logs")
    return [_parse(wire.UnitLog, entry) for entry in entries]


def _parse(cls, obj):
    try:
        return wire.parse(cls, obj, "answer")
    except wire.WireError as exc:
        raise http.Unavailable(f"coordinator sent a malformed answer: {exc}") from exc
