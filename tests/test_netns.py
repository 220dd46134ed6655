"""The whole network across hosts of its own: a DHT bootstrap node and a website on one host,
a coordinator on a second, a peer on a third, each in a network namespace with its own address
on a bridge (veth pairs), so nothing relies on loopback. The peer is given only the bootstrap
address; it finds the coordinator through the DHT and checks the site.

Needs root and `ip netns`; skipped otherwise, with the reason shown by pytest -ra.
Addresses are those of the test's own namespaces (10.231.0.0/24), created and removed here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.site import build_site
from tests import netns
from tests.netns import REPO, SUBNET4, Host, stop, wait_for
from tests.processes import operator_key

pytestmark = pytest.mark.timeout(180)

SUBNET = SUBNET4
PAGES = 40


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    """Three namespaces on one bridge: host i has address 10.231.0.(i+1)."""
    with netns.hosts_or_skip(3) as made:
        yield made


def test_peer_in_its_own_namespace_finds_the_coordinator_and_checks_a_site(hosts: list[Host], tmp_path: Path) -> None:
    h1, h2, h3 = hosts
    bootstrap, coordinator = f"{SUBNET}.1:4000", f"http://{SUBNET}.2:8700"
    site = f"http://{SUBNET}.1:8080"
    # The network's operator (on the coordinator's host): a network key, and the coordinator admitted.
    network_file, network_key, cert = tmp_path / "nsnet.network", tmp_path / "nsnet.key", tmp_path / "c.cert"
    steps = [
        ("network", "keygen", "nsnet", "--key", str(network_key), "--out", str(network_file)),
        ("coordinator", "key", "--db", str(tmp_path / "c.sqlite")),
    ]
    made = [h2.osaas(*step) for step in steps]
    assert all(run.returncode == 0 for run in made), [run.stderr for run in made]
    admit = ("network", "admit", made[1].stdout.strip(), "--network-file", str(network_file), "--key", str(network_key))
    admitted = h2.osaas(*admit, "--out", str(cert))
    assert admitted.returncode == 0, admitted.stderr
    processes = [
        h1.python("-m", "osaas", "dht", "serve", "--listen", bootstrap, log=tmp_path / "dht.log"),
        h1.python(
            "-m",
            "bench.site",
            "--pages",
            str(PAGES),
            "--host",
            f"{SUBNET}.1",
            "--port",
            "8080",
            log=tmp_path / "site.log",
        ),
        h2.python(
            "-m",
            "osaas",
            "coordinator",
            "serve",
            "--listen",
            f"{SUBNET}.2:8700",
            "--db",
            str(tmp_path / "c.sqlite"),
            "--dht-listen",
            f"{SUBNET}.2:4000",
            "--bootstrap",
            bootstrap,
            "--network-cert",
            str(cert),
            "--operator-key",
            operator_key().public_hex,
            log=tmp_path / "coordinator.log",
        ),
    ]
    try:

        def announced() -> bool:
            run = h3.osaas(
                "dht",
                "lookup",
                "coordinators",
                "--network-file",
                str(network_file),
                "--bootstrap",
                bootstrap,
                "--json",
            )
            return run.returncode == 0 and [json.loads(line)["url"] for line in run.stdout.splitlines()] == [
                coordinator
            ]

        wait_for(announced, "the coordinator's announcement to reach the third host")
        processes.append(
            h3.python(
                "-m",
                "osaas",
                "peer",
                "run",
                "--bootstrap",
                bootstrap,
                "--network-file",
                str(network_file),
                "--dht-listen",
                f"{SUBNET}.3:0",
                "--data-dir",
                str(tmp_path / "peer"),
                "--allow-private",
                log=tmp_path / "peer.log",
            )
        )
        submitted = h2.osaas("job", "submit", f"{site}/", "--coordinator", coordinator)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()

        def done() -> bool:
            run = h2.osaas("job", "status", job_id, "--coordinator", coordinator, "--json")
            return run.returncode == 0 and json.loads(run.stdout)["state"] == "done"

        wait_for(done, "the job to finish", 120)
        results = h2.osaas("job", "results", job_id, "--coordinator", coordinator, "--format", "json")
        items = [json.loads(line) for line in results.stdout.splitlines()]
    finally:
        stop(processes)

    assert f"working for {coordinator}" in (tmp_path / "peer.log").read_text()
    expected_broken = build_site(PAGES).broken_urls(site)
    assert len({i["url"] for i in items}) == len(items)
    assert {i["url"] for i in items if i["result"] == "broken"} == expected_broken
    assert all(i["result"] == "ok" for i in items if i["url"] not in expected_broken)


_EVERY_ADDRESS = """
import asyncio, socket, sys, tempfile
from pathlib import Path
from overlay.torrent import TorrentSession

async def main():
    async with TorrentSession(("0.0.0.0", 0), state_dir=Path(tempfile.mkdtemp())) as session:
        port = session.listen_port
        for address in sys.argv[1:]:
            with socket.create_connection((address, port), timeout=5):
                print(address, port, "reachable", flush=True)

asyncio.run(main())
"""


def test_a_torrent_session_on_every_interface_is_reachable_on_the_port_it_reports(hosts: list[Host]) -> None:
    # Bound to 0.0.0.0 with port 0, libtorrent used to open one socket per interface, each on a
    # random port of its own: the port advertised was the loopback socket's, unreachable from
    # other hosts, so peers could not upload to each other across real hosts. And it listened on
    # IPv4 only: a peer on the default 0.0.0.0 could not reach an IPv6 seed, nor be reached.
    h1 = hosts[0]
    run = subprocess.run(
        [*h1.command(sys.executable), "-c", _EVERY_ADDRESS, "127.0.0.1", h1.ipv4, "::1", h1.ipv6],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert [line.split()[0] for line in run.stdout.splitlines()] == ["127.0.0.1", h1.ipv4, "::1", h1.ipv6]


_PORT_MAPPING = """
import asyncio, sys, tempfile
from pathlib import Path
from overlay.torrent import TorrentSession

async def main():
    async with TorrentSession(("0.0.0.0", 0), state_dir=Path(tempfile.mkdtemp())) as default:
        print("default", default.port_mapping_enabled)
    async with TorrentSession(("0.0.0.0", 0), state_dir=Path(tempfile.mkdtemp()), port_mapping=True) as asked:
        print("asked", asked.port_mapping_enabled, asked.mapped_port)

asyncio.run(main())
"""


def test_port_mapping_is_off_unless_the_volunteer_asks(hosts: list[Host]) -> None:
    # In a namespace of the test's own: the router search (UPnP, NAT-PMP) must not leave it.
    run = subprocess.run(
        [*hosts[0].command(sys.executable), "-c", _PORT_MAPPING], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\n")[:2] == ["default False", "asked True None"]  # no router on this bridge
