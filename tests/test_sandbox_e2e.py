"""A stranger's bundle against a real volunteer: an owner admitted by the operator publishes a
hostile bundle (no capabilities declared) to a real coordinator, and a real peer process runs a
job of it. Each website of the job is one attack on the volunteer's machine (see
tests/peer/workloads/hostile.py). Every attack fails with one clear line in the job's results,
nothing of the volunteer's reaches the coordinator, and the peer, its settings and its other
units are untouched.

Then the same peer without a sandbox (bubblewrap not found): it says so, tells the coordinator
whose bundles it runs, and gets no unit of the stranger's job; the trusted owner's job runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import urllib.parse
from pathlib import Path

import aiohttp
import pytest

from peer.sandbox import SandboxError, detect
from tests.peer.test_sandbox import processes_marked, stage_hostile_bundle
from tests.processes import job_results, job_status, operator_key, start, wait_until_done, wait_until_serving
from tests.sites import RequestLog, free_port, generated_site_app, generated_site_urls, serve
from tests.test_discovery import Processes, osaas_output, processes

pytestmark = pytest.mark.timeout(240)


async def osaas_ok(*args: str) -> str:
    code, out, err = await osaas_output(*args)
    assert code == 0, f"osaas {' '.join(args)} failed: {err}"
    return out


def attack_url(attack: str, target: str) -> str:
    return f"http://{attack.replace('_', '-')}.attack.test/?target={urllib.parse.quote(target, safe='')}"


def fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parts[len(root.parts)] in {"identity.key", "local-page.token", "peer.toml"}
    }


async def serve_with_a_stranger(procs: Processes, tmp_path: Path, url: str, db: Path) -> None:
    """A coordinator at `url` whose operator admitted a stranger, who published the hostile bundle."""
    listen = url.removeprefix("http://")
    await procs.start(
        "coordinator",
        "coordinator",
        "serve",
        "--listen",
        listen,
        "--db",
        str(db),
        "--torrent-listen",
        "127.0.0.1:0",
        "--operator-key",
        operator_key().public_hex,
        "--log-level",
        "debug",  # a line per request: the tests count the peer's lease requests
    )
    await wait_until_serving(url, tmp_path / "coordinator.log")
    await publish_hostile(tmp_path, url, db)


async def publish_hostile(tmp_path: Path, url: str, db: Path) -> str:
    """The stranger's side: a key, a bundle, admission by the operator, publishing."""
    source = stage_hostile_bundle(tmp_path / "hostile-source")
    (source / "bundle.toml").write_text(
        'name = "hostile"\nversion = "1.0"\nentrypoint = ["python3", "-m", "hostile"]\n'
    )
    key = (await osaas_ok("bundle", "keygen", "--out", str(tmp_path / "stranger.key"))).strip()
    await osaas_ok(
        "bundle", "build", str(source), "--key", str(tmp_path / "stranger.key"), "--out", str(tmp_path / "dist")
    )
    await osaas_ok("coordinator", "owner", "add", "stranger", key, "--db", str(db))
    await osaas_ok(
        "bundle", "publish", str(tmp_path / "dist"), "--coordinator", url, "--key", str(tmp_path / "stranger.key")
    )
    return key


async def test_a_strangers_bundle_cannot_touch_the_volunteer(tmp_path: Path) -> None:
    try:
        detect()
    except SandboxError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    url = f"http://127.0.0.1:{free_port()}"
    db = tmp_path / "coordinator.sqlite"
    data = tmp_path / "volunteer"
    data.mkdir()
    (data / "peer.toml").write_text('max_down = "1MB/s"\n')
    status_port = free_port()
    async with processes(tmp_path) as procs:
        await serve_with_a_stranger(procs, tmp_path, url, db)
        peer = await procs.start(
            "peer",
            "peer",
            "run",
            "--coordinator",
            url,
            "--data-dir",
            str(data),
            "--slots",
            "2",
            "--config",
            str(data / "peer.toml"),
            "--status-port",
            str(status_port),
            "--torrent-listen",
            "127.0.0.1:0",
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{status_port}/status") as response:
                        document = await response.json()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the peer's page did not start: " + procs.log("peer")[-2000:])
        assert document["sandboxed"] is True and "sandbox (bubblewrap)" in document["sandbox"]
        token = (data / "local-page.token").read_text().strip()
        before = fingerprint(data)
        key_hex = (data / "identity.key").read_text().strip()
        mark = f"osaas-e2e-orphan-{os.getpid()}"
        attacks = {
            "read": str(data / "identity.key"),
            "escape_upwards": str(data / "local-page.token"),
            "listing": str(data),
            "connect": f"127.0.0.1:{status_port}",
            "change_budget": f"127.0.0.1:{status_port}|{token}",
            "orphan": mark,
            "fork": "500",
        }
        expected = {
            "read": "FileNotFoundError",
            "escape_upwards": "FileNotFoundError",
            "listing": "FileNotFoundError",
            "connect": "ConnectionRefusedError",
            "change_budget": "Connection refused",
            "orphan": "orphan left behind",
            "fork": "Resource temporarily unavailable",
        }
        urls = {attack_url(name, target): name for name, target in attacks.items()}
        job_id = int(await osaas_ok("job", "submit", *urls, "--coordinator", url, "--bundle", "hostile"))
        status = await wait_until_done(url, job_id)
        assert status["state"] == "done", (status, procs.log("peer")[-3000:])
        items = await job_results(url, job_id)

        def attack_of(item: dict) -> str:
            return urllib.parse.urlsplit(item["url"]).hostname.split(".")[0].replace("-", "_")

        assert sorted(attack_of(item) for item in items) == sorted(attacks)
        for item in items:
            name = attack_of(item)
            assert item["result"] == "error", item
            assert item["error"].startswith(f"workload refused the input: attack {name} failed: "), item
            assert expected[name] in item["error"], item
            assert "\n" not in item["error"]
        said = json.dumps([(item["error"], item["final_url"], item["redirects"]) for item in items])
        assert key_hex not in said and token not in said  # (the token is in a URL: the test put it there)

        # The volunteer's peer, settings and page are as they were, and nothing outlived its unit.
        assert peer.returncode is None
        assert fingerprint(data) == before
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{status_port}/status") as response:
                document = await response.json()
        assert document["budget"]["max_down"] == 1_000_000
        assert document["totals"]["units_done"] + document["totals"]["units_failed"] == len(attacks)
        assert [b["capabilities"] for b in document["bundles"] if b["name"] == "hostile"] == [[]]
        assert processes_marked(mark) == []
        assert not list((data / "work").iterdir())


async def test_without_a_sandbox_only_trusted_owners_bundles_run(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    db = tmp_path / "coordinator.sqlite"
    data = tmp_path / "volunteer"
    no_bwrap = tmp_path / "bin"  # a PATH without bubblewrap: no sandbox can be built
    no_bwrap.mkdir()
    for tool in ("prlimit", "setpriv"):
        if found := shutil.which(tool):
            (no_bwrap / tool).symlink_to(found)
    async with processes(tmp_path) as procs, serve(generated_site_app(RequestLog(), pages=6)) as site:
        await serve_with_a_stranger(procs, tmp_path, url, db)
        # The volunteer trusts the operator's own link checker: its owner key is public.
        linkcheck = json.loads(await osaas_ok("bundle", "status", "linkcheck", "--coordinator", url, "--json"))
        trusted_job = int(await osaas_ok("job", "submit", f"{site}/", "--coordinator", url))
        peer = await start(
            "peer",
            "run",
            "--coordinator",
            url,
            "--data-dir",
            str(data),
            "--status-port",
            "off",
            "--allow-private",
            "--torrent-listen",
            "127.0.0.1:0",
            "--trust-owner",
            linkcheck["owner_key"],
            log=tmp_path / "peer.log",
            env={"PATH": str(no_bwrap)},
        )
        procs.all.append(peer)
        status = await wait_until_done(url, trusted_job)
        assert status["state"] == "done", procs.log("peer")[-3000:]
        ok, broken = generated_site_urls(site, 6)
        items = await job_results(url, trusted_job)
        assert {i["url"] for i in items if i["result"] == "broken"} == broken
        assert {i["url"] for i in items if i["result"] == "ok"} == ok
        line = next(line for line in procs.log("peer").splitlines() if "no sandbox" in line)
        assert "bwrap (bubblewrap) is not installed" in line and "1 owner key(s) you trust" in line

        # The stranger's job: the peer keeps asking for work, and is never given a unit of it.
        stranger_job = int(
            await osaas_ok(
                "job",
                "submit",
                attack_url("read", str(data / "identity.key")),
                "--coordinator",
                url,
                "--bundle",
                "hostile",
            )
        )
        asked = procs.log("coordinator").count("POST /v1/lease")
        for _ in range(300):
            if procs.log("coordinator").count("POST /v1/lease") >= asked + 3:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the peer stopped asking for work")
        stranger = await job_status(url, stranger_job)
        assert stranger["state"] == "running" and stranger["units_done"] == 0, stranger
        assert "given back" not in procs.log("peer")  # never even leased to it
        assert peer.returncode is None
