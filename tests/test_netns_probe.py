"""`osaas probe` with three vantage points: a website on one host of the test's own
(tests/netns.py), a coordinator on a second that counts each address as a network of its own
(`--vantage-prefix 32`), three volunteers on three more. Each volunteer's answer comes back
with the network the coordinator saw it in, never one the volunteer named.

Needs root and `ip netns`; skipped otherwise, with the reason shown by pytest -ra.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import netns
from tests.netns import Host, stop
from tests.processes import operator_key

pytestmark = [pytest.mark.timeout(240), pytest.mark.swarm]

PAGE = b"<html><body>probed</body></html>\n"
VANTAGE = 3


@pytest.fixture
def five() -> Iterator[list[Host]]:
    if shutil.which("bwrap") is None:
        pytest.skip("peers run workloads in bubblewrap, which is not installed")
    with netns.hosts_or_skip(2 + VANTAGE) as made:
        yield made


def test_a_url_is_probed_from_three_networks(five: list[Host], tmp_path: Path) -> None:
    site_host, coordinator_host, *peer_hosts = five
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_bytes(PAGE)
    url = f"http://{site_host.ipv4}:8081/"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        coordinator = netns.start_vantage_network(
            site_host, coordinator_host, peer_hosts, tmp_path, operator_key().public_hex, processes
        )
        probed = site_host.osaas(
            "probe", url, "--vantage", str(VANTAGE), "--coordinator", coordinator, "--format", "jsonl",
            "--no-progress", timeout=180,
        )  # fmt: skip
    finally:
        stop(processes)
    assert probed.returncode == 0, probed.stderr[-3000:]
    rows = [json.loads(line) for line in probed.stdout.splitlines()]
    assert [row["url"] for row in rows] == [url] * VANTAGE
    # Each vantage point, named by the address the coordinator saw it connect from.
    assert sorted(row["network"] for row in rows) == sorted(f"{host.ipv4}/32" for host in peer_hosts)
    for row in rows:
        assert (row["status"], row["error"], row["failed"]) == (200, None, None)
        assert row["address"] == site_host.ipv4  # the address that answered
        assert row["body_sha256"] == hashlib.sha256(PAGE).hexdigest() and row["body_bytes"] == len(PAGE)
        assert row["connect"] is not None and row["first_byte"] is not None and row["tls"] is None
