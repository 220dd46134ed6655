"""Peers that know only DHT bootstrap addresses: they find coordinators, prove their keys,
and move to another coordinator when theirs dies. Real processes, real UDP and HTTP on loopback.

With a store each, jobs live in one coordinator's store: when coordinator A dies mid-job, the
test resubmits the job to coordinator B (see docs/operators.md). With one PostgreSQL database
for both, B finishes A's job. Either way B's report has every URL exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from coordinator.api import make_app
from coordinator.sql import SqlStore
from osaas import owner
from overlay import certificates, records, wire
from overlay.announcements import CoordinatorAnnouncement, coordinators_key
from overlay.dht import DhtNode
from overlay.identity import Identity
from peer.discovery import find_coordinators
from tests import postgres
from tests.processes import admitted_network, operator_key
from tests.sites import RequestLog, free_port, generated_site_app, generated_site_urls, serve

pytestmark = pytest.mark.timeout(240)


def free_udp_port() -> int:
    return free_port(kind=socket.SOCK_DGRAM)


class Processes:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.all: list[asyncio.subprocess.Process] = []

    async def start(self, name: str, *args: str) -> asyncio.subprocess.Process:
        with open(self.tmp_path / f"{name}.log", "ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "osaas", *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.all.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()


@contextlib.asynccontextmanager
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        for p in running.all:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def _true(value: bool) -> bool:
    return value


async def wait_for(predicate, what: str, timeout_steps: int = 600) -> None:
    for _ in range(timeout_steps):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def osaas_output(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "osaas", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None  # communicate() waited for it
    return process.returncode, out.decode(), err.decode()


SITE_PAGES = 60


async def test_peers_find_coordinators_and_fail_over(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """With one PostgreSQL database for both coordinators, the survivor serves the dead one's
    job: it ends without being submitted again, and each seeds the built-in bundles the other
    published. Where no PostgreSQL can start (make test installs it), each has a SQLite file
    of its own: a job lives in one coordinator's, and is submitted again to the other."""
    bootstrap = f"127.0.0.1:{free_udp_port()}"
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in ("a", "b")}
    shared = postgres.why_not() is None
    where: dict[str, tuple[str, ...]] = {}
    if shared:
        database = request.getfixturevalue("pg_cluster").database()
        for name in urls:
            (tmp_path / f"{name}-state").mkdir()
            where[f"{name}.sqlite"] = ("--db", database, "--state-dir", str(tmp_path / f"{name}-state"))
    async with (
        processes(tmp_path) as procs,
        serve(generated_site_app(RequestLog(), pages=SITE_PAGES, delay=0.05)) as site,
    ):
        await procs.start("dht", "dht", "serve", "--listen", bootstrap)
        network_file, certs = await admitted_network(tmp_path, "testnet", "a.sqlite", "b.sqlite", where=where)
        coordinators = {}
        for name, url in urls.items():
            coordinators[name] = await procs.start(
                f"coordinator-{name}",
                "coordinator",
                "serve",
                "--operator-key",
                operator_key().public_hex,
                "--listen",
                url.removeprefix("http://"),
                *(where.get(f"{name}.sqlite") or ("--db", str(tmp_path / f"{name}.sqlite"))),
                "--unit-size",
                "5",
                "--host-min-delay",  # pacing is not under test here
                "0.1",
                "--network-cert",
                str(certs[f"{name}.sqlite"]),
                "--dht-listen",
                f"127.0.0.1:{free_udp_port()}",
                "--bootstrap",
                bootstrap,
            )

        async def both_announced() -> bool:
            code, out, _ = await osaas_output(
                "dht", "lookup", "coordinators", "--network-file", str(network_file), "--bootstrap", bootstrap, "--json"
            )
            return code == 0 and {json.loads(line)["url"] for line in out.splitlines()} == set(urls.values())

        await wait_for(both_announced, "both coordinators to be announced", 300)

        async with aiohttp.ClientSession() as session:
            job_a = await owner.submit(
                session, urls["a"], operator_key(), "linkcheck", {"urls": [f"{site}/"], "depth": None}
            )
            peers = [f"peer-{i}" for i in range(3)]
            status_port = free_port()
            for i, name in enumerate(peers):
                await procs.start(
                    name,
                    "peer",
                    "run",
                    "--bootstrap",
                    bootstrap,
                    "--network-file",
                    str(network_file),
                    "--dht-listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    str(tmp_path / name),
                    "--allow-private",
                    "--slots",
                    "2",
                    "--status-port",
                    str(status_port) if i == 0 else "off",
                )

            def working_for(peer: str) -> list[str]:
                return [name for name, url in urls.items() if f"working for {url}" in procs.log(peer)]

            if shared:  # both have the work: peers choose either, and the one peer-0 chose dies
                await wait_for(lambda: _true(all(working_for(p) for p in peers)), "every peer to find a coordinator")
                (victim,) = working_for("peer-0")[:1]
            else:
                await wait_for(
                    lambda: _true(all("a" in working_for(p) for p in peers)),
                    "every peer to find coordinator A (the one with work)",
                )
                victim = "a"
            survivor = "b" if victim == "a" else "a"

            # Its status (what the screensaver draws) shows its DHT neighbours (kademlia may have
            # dropped the bootstrap node from them by now) and whom it works for.
            async def peer_0_status() -> dict:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{status_port}/status") as response:
                        return await response.json()
                return {}

            async def status_shows_the_network() -> bool:
                status = await peer_0_status()
                return bool((status.get("dht") or {}).get("neighbours")) and status.get("coordinator") in urls.values()

            await wait_for(status_shows_the_network, "peer-0's status to show its DHT neighbours and coordinator")

            async def a_made_progress() -> bool:
                return (await owner.status(session, urls["a"], operator_key(), job_a)).items_done >= 10

            await wait_for(a_made_progress, "progress on coordinator A")
            assert (await owner.status(session, urls["a"], operator_key(), job_a)).state == "running"
            moved = [p for p in peers if victim in working_for(p)]  # its peers, when it died
            coordinators[victim].send_signal(signal.SIGKILL)
            await coordinators[victim].wait()

            if shared:  # B serves A's job, as it served every job
                job_b = job_a
                logs = procs.log("coordinator-a") + procs.log("coordinator-b")
                for name in ("linkcheck", "probe"):
                    assert logs.count(f"bundle {name} ") and f"built-in bundle {name} is published by" in logs
                assert "brought from the store" in logs
            else:
                job_b = await owner.submit(
                    session, urls[survivor], operator_key(), "linkcheck", {"urls": [f"{site}/"], "depth": None}
                )

            async def b_done() -> bool:
                return (await owner.status(session, urls[survivor], operator_key(), job_b)).state == "done"

            await wait_for(b_done, "the job to complete on the coordinator left", 1200)
            items = await owner.results(session, urls[survivor], operator_key(), job_b)
            if "workloads.linkcheck: unit" in procs.log("peer-0"):  # it ran units: it seeds their bundle
                assert {b["name"] for b in (await peer_0_status())["bundles"]} == {"linkcheck"}

        # A clean shutdown withdraws B's announcement; killed A's stays until it expires.
        coordinators[survivor].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(coordinators[survivor].wait(), timeout=30) == 0
        code, out, err = await osaas_output(
            "dht", "lookup", "coordinators", "--network-file", str(network_file), "--bootstrap", bootstrap, "--json"
        )
        assert code == 0, err
        announced = [json.loads(line) for line in out.splitlines()]
        assert [a["url"] for a in announced] == [urls[victim]]
        assert announced[0]["workloads"] == ["linkcheck", "probe"]  # the bundles it has a stable version of

    ok, broken = generated_site_urls(site, SITE_PAGES)
    assert sorted(i["url"] for i in items) == sorted(ok | broken)  # every URL, exactly once
    assert {i["url"] for i in items if i["result"] == "broken"} == broken
    assert moved
    for name in moved:
        log = procs.log(name)
        assert log.rindex(f"working for {urls[survivor]}") > log.index(f"working for {urls[victim]}"), name
        assert f"coordinator {urls[victim]} is not answering" in log or f"coordinator {urls[victim]}" in log


async def test_an_announcement_whose_server_holds_another_key_is_never_used(tmp_path: Path) -> None:
    honest, impostor, liar = Identity.generate(), Identity.generate(), Identity.generate()
    network_key = Identity.generate()
    key = coordinators_key("testnet", network_key.public_key)
    async with (
        serve(make_app(SqlStore(tmp_path / "h.sqlite"), identity=honest)) as honest_url,
        serve(make_app(SqlStore(tmp_path / "i.sqlite"), identity=impostor)) as impostor_url,
    ):
        async with DhtNode(("127.0.0.1", 0)) as first, DhtNode(("127.0.0.1", 0), [first.address]) as second:
            now = time.time()
            # `liar` announces a URL whose server holds `impostor`'s key, not `liar`'s.
            for signer, url in ((honest, honest_url), (liar, impostor_url)):
                # Both admitted: the proof, not the certificate, is what stops `liar` here.
                cert = certificates.issue(network_key, signer.public_key, "testnet", "coordinator", now + 600, now)
                announcement = CoordinatorAnnouncement(
                    signer.public_hex, url, "testnet", 3, 0, ("linkcheck",), now, (cert,)
                )
                assert await first.publish(key, records.sign(signer, key, announcement.payload(), now, 60)) >= 1
            assert {r.signer for r in await second.lookup(key)} == {honest.public_key, liar.public_key}
            async with aiohttp.ClientSession() as session:
                found = await find_coordinators(
                    second,
                    session,
                    "testnet",
                    network_key.public_key,
                    workloads=(wire.ANY_WORKLOAD,),
                    allow_private=True,
                )
    assert [c.announcement.url for c in found] == [honest_url]
