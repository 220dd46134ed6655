"""`osaas probe`: reachability and latency of URLs from many vantage points, as one command.

With `--coordinator` it submits a probe job to a real network (K vantage points: peers in K
networks) and waits for it. Without, it starts a whole network on this machine as `osaas
check` does (`osaas.check.embedded_coordinator`); every peer of it is this machine, one
vantage point, so it probes from one and says so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from coordinator.url_jobs import DEFAULT_VANTAGE, MAX_VANTAGE
from osaas import owner
from osaas.check import CheckError, embedded_coordinator, embedded_peers, peers_gone, validate_url, watch
from overlay import http
from overlay.identity import Identity
from workloads.builtin import PROBE

ONE_VANTAGE_POINT = (
    "note: probing from one vantage point, this machine (every peer of a network on one machine is in the same"
    " network); --coordinator URL probes from K networks of a real one"
)


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    urls: tuple[str, ...]
    vantage: int = DEFAULT_VANTAGE
    coordinator: str | None = None  # None: a network on this machine
    key: Identity | None = None  # signs the job on a real network
    allow_private: bool = False
    progress: bool = True


@dataclass(frozen=True, slots=True)
class Probed:
    job_id: int
    vantage: int  # vantage points asked for
    columns: list[str]
    rows: list[dict[str, Any]]


async def run_probe(options: ProbeOptions, console: Console) -> Probed:
    seeds = [validate_url(u) for u in options.urls]
    if not 1 <= options.vantage <= MAX_VANTAGE:
        raise CheckError(f"--vantage must be between 1 and {MAX_VANTAGE}")
    async with aiohttp.ClientSession() as session:
        if options.coordinator is not None:
            assert options.key is not None
            return await _probe(session, options.coordinator, options.key, seeds, options.vantage, console, options)
        console.print(ONE_VANTAGE_POINT)
        with tempfile.TemporaryDirectory(prefix="osaas-probe-") as tmp:
            workdir = Path(tmp)
            async with (
                embedded_coordinator(workdir) as network,
                embedded_peers(1, options.allow_private, network, workdir) as peers,
            ):
                return await _probe(
                    session,
                    network.coordinator_url,
                    network.operator,
                    seeds,
                    1,
                    console,
                    options,
                    lambda: peers_gone(peers, workdir),
                )


async def _probe(
    session: aiohttp.ClientSession,
    coordinator: str,
    key: Identity,
    seeds: list[str],
    vantage: int,
    console: Console,
    options: ProbeOptions,
    stopped: Any = lambda: None,
) -> Probed:
    try:
        job_id = await owner.submit(session, coordinator, key, PROBE, {"urls": seeds, "vantage": vantage})
    except http.Rejected as exc:
        raise CheckError(f"the probe was refused: {exc}") from exc
    if options.coordinator is not None:
        console.print(f"probe job {job_id} on {coordinator}: {len(seeds)} URLs from {vantage} vantage points")
    label = f"probing from {vantage} vantage point{'s' if vantage > 1 else ''}"
    # A real network's job may wait minutes for peers of enough networks: ask less often.
    poll = 0.2 if options.coordinator is None else 2.0
    await watch(session, coordinator, key, job_id, label, console, options.progress, stopped, poll)
    columns, rows = await owner.results_with_columns(session, coordinator, key, job_id)
    return Probed(job_id, vantage, columns, rows)


def unreachable(rows: list[dict[str, Any]]) -> bool:
    """Did some vantage point get no answer for some URL?"""
    return any(row.get("status") is None for row in rows)
