"""What a project owner does against a coordinator: submit a job, watch it, fetch results."""

from __future__ import annotations

from typing import Any

import aiohttp

from overlay import http, wire

RESULTS_PAGE = 5000


async def submit(session: aiohttp.ClientSession, coordinator: str, workload: str, job_input: dict[str, Any]) -> int:
    answer = await http.call(session, "POST", coordinator, "/v1/jobs", wire.JobSubmit(workload, job_input))
    return _parse(wire.JobCreated, answer).job_id


async def status(session: aiohttp.ClientSession, coordinator: str, job_id: int) -> wire.JobStatus:
    return _parse(wire.JobStatus, await http.call(session, "GET", coordinator, f"/v1/jobs/{job_id}"))


async def results(session: aiohttp.ClientSession, coordinator: str, job_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        path = f"/v1/jobs/{job_id}/results?offset={len(items)}&limit={RESULTS_PAGE}"
        answer = await http.call(session, "GET", coordinator, path, timeout=120.0)
        page = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(page, list) or not all(isinstance(i, dict) for i in page):
            raise http.Unavailable("coordinator sent malformed results")
        items.extend(page)
        if len(page) < RESULTS_PAGE:
            return items


def _parse(cls, obj):
    try:
        return wire.parse(cls, obj, "answer")
    except wire.WireError as exc:
        raise http.Unavailable(f"coordinator sent a malformed answer: {exc}") from exc
