"""Re-checks across real hosts: a website on one host of the test's own (tests/netns.py), a
coordinator on a second that counts each address as a network of its own (`--vantage-prefix
32`), two volunteers on two more. Every answer of a fresh key is checked again, by the other
volunteer: each results row says "confirmed" and names the two networks the coordinator saw
the answers come from, and a broken link is broken from both.

Needs root and `ip netns`; skipped otherwise, with the reason shown by pytest -ra.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import netns
from tests.netns import Host, stop
from tests.processes import operator_key

pytestmark = [pytest.mark.timeout(240), pytest.mark.swarm]

PAGE = b'<html><body><a href="ok.html">ok</a> <a href="gone.html">gone</a></body></html>\n'


@pytest.fixture
def four() -> Iterator[list[Host]]:
    if shutil.which("bwrap") is None:
        pytest.skip("peers run workloads in bubblewrap, which is not installed")
    with netns.hosts_or_skip(4) as made:
        yield made


def test_each_answer_is_checked_again_from_the_other_network(four: list[Host], tmp_path: Path) -> None:
    site_host, coordinator_host, *peer_hosts = four
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_bytes(PAGE)
    (tmp_path / "site" / "ok.html").write_bytes(b"<p>fine</p>\n")
    site = f"http://{site_host.ipv4}:8081"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        coordinator = netns.start_vantage_network(
            site_host, coordinator_host, peer_hosts, tmp_path, operator_key().public_hex, processes
        )
        submitted = site_host.osaas("job", "submit", f"{site}/", "--coordinator", coordinator)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        deadline = time.monotonic() + 150
        state = None
        while time.monotonic() < deadline and state != "done":
            shown = site_host.osaas("job", "status", job_id, "--coordinator", coordinator, "--json")
            state = json.loads(shown.stdout)["state"] if shown.returncode == 0 else None
            time.sleep(0.5)
        results = site_host.osaas("job", "results", job_id, "--coordinator", coordinator, "--format", "jsonl")
    finally:
        stop(processes)
    assert state == "done", (tmp_path / "coordinator.log").read_text()[-3000:]
    assert results.returncode == 0, results.stderr
    rows = {row["url"]: row for row in map(json.loads, results.stdout.splitlines())}
    truth = {f"{site}/": "ok", f"{site}/ok.html": "ok", f"{site}/gone.html": "broken"}
    assert {url: row["result"] for url, row in rows.items()} == truth
    networks = sorted(f"{host.ipv4}/32" for host in peer_hosts)
    for url, row in rows.items():
        # Fresh keys are on probation: every answer was checked again, from the other host.
        assert row["verdict"] == "confirmed", row
        assert sorted(answer.split(" from ")[1] for answer in row["answers"]) == networks, row
        assert all(answer.startswith(f"{truth[url]} from ") for answer in row["answers"]), row
