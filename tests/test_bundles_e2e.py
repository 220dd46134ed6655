"""Bundles end to end, as people use them: an owner makes a key, builds and publishes two
versions of a link-check bundle; the operator admits the owner; four real peer processes
(found through the DHT) fetch the bundle over BitTorrent and run it; the owner rolls out a
broken second version to half of the peers, and the coordinator rolls it back by itself
while the job still completes with every URL checked once.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from coordinator.assignment import hrw_assign
from coordinator.rollout import picks_candidate
from coordinator.url_jobs import unit_key
from osaas import owner
from overlay.identity import Identity
from tests.processes import admitted_network, operator_key
from tests.sites import RequestLog, free_port, generated_site_app, generated_site_urls, serve
from tests.test_discovery import free_udp_port, osaas_output, processes, wait_for
from workloads.builtin import stage_linkcheck

pytestmark = pytest.mark.timeout(300)

PAGES = 60
NAME = "mylinks"
BROKEN = "2.0"


def make_source(root: Path, version: str, *, broken: bool = False) -> Path:
    """The link-check workload under another name; `broken`: a version that exits at once."""
    source = stage_linkcheck(root / f"source-{version}")
    toml = (source / "bundle.toml").read_text()
    toml = "\n".join(
        f'name = "{NAME}"'
        if line.startswith("name =")
        else f'version = "{version}"'
        if line.startswith("version =")
        else line
        for line in toml.splitlines()
    )
    (source / "bundle.toml").write_text(toml + "\n")
    if broken:
        (source / "workloads" / "linkcheck" / "__main__.py").write_text("raise SystemExit(2)\n")
    return source


def identities_split(root: Path, count: int, site: str) -> list[Path]:
    """Data dirs whose peer keys put half of them inside a 50% rollout of the broken version.
    The coordinator gives a host to one peer at a time, its first choice among equal peers, so
    that choice for the site's host is made an inside peer: the broken version gets its trial."""
    while True:
        inside: list[Identity] = []
        outside: list[Identity] = []
        while len(inside) < count // 2 or len(outside) < count - count // 2:
            identity = Identity.generate()
            side = inside if picks_candidate(identity.public_hex, NAME, BROKEN, 50) else outside
            side.append(identity)
        chosen = inside[: count // 2] + outside[: count - count // 2]
        host = unit_key(f"{site}/")
        first_choice = hrw_assign([host], {i.public_hex: 1.0 for i in chosen})[host]
        if first_choice in {i.public_hex for i in chosen[: count // 2]}:
            break
    dirs = []
    for i, identity in enumerate(chosen):
        data_dir = root / f"peer-{i}"
        data_dir.mkdir()
        (data_dir / "identity.key").write_text(bytes(identity.signing_key).hex() + "\n")
        dirs.append(data_dir)
    return dirs


async def osaas_ok(*args: str) -> str:
    code, out, err = await osaas_output(*args)
    assert code == 0, f"osaas {' '.join(args)} failed: {err}"
    return out


async def test_owner_publishes_peers_fetch_and_a_failing_rollout_rolls_back(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_udp_port()}"
    url = f"http://127.0.0.1:{free_port()}"
    db = tmp_path / "coordinator.sqlite"
    async with processes(tmp_path) as procs, serve(generated_site_app(RequestLog(), pages=PAGES, delay=0.1)) as site:
        await procs.start("dht", "dht", "serve", "--listen", bootstrap)
        network_file, certs = await admitted_network(tmp_path, "e2e", db.name)
        await procs.start(
            "coordinator",
            "coordinator",
            "serve",
            "--operator-key",
            operator_key().public_hex,
            "--listen",
            url.removeprefix("http://"),
            "--db",
            str(db),
            "--unit-size",
            "3",
            "--network-cert",
            str(certs[db.name]),
            "--dht-listen",
            f"127.0.0.1:{free_udp_port()}",
            "--bootstrap",
            bootstrap,
            "--torrent-listen",
            "127.0.0.1:0",
        )

        async with aiohttp.ClientSession() as session:

            async def coordinator_up() -> bool:
                try:
                    await owner.bundle_status(session, url, "linkcheck")
                except Exception:
                    return False
                return True

            await wait_for(coordinator_up, "the coordinator to publish its built-in bundle", 600)

            # The owner's side: a key, two builds, publishing before and after admission.
            public_key = (await osaas_ok("bundle", "keygen", "--out", str(tmp_path / "owner.key"))).strip()
            for version in ("1.0", BROKEN):
                source = make_source(tmp_path, version, broken=version == BROKEN)
                out = await osaas_ok(
                    "bundle",
                    "build",
                    str(source),
                    "--key",
                    str(tmp_path / "owner.key"),
                    "--out",
                    str(tmp_path / f"dist-{version}"),
                )
                assert f"built {NAME} {version}" in out
            owner_key = ("--key", str(tmp_path / "owner.key"))
            code, _, err = await osaas_output(
                "bundle", "publish", str(tmp_path / "dist-1.0"), "--coordinator", url, *owner_key
            )
            assert code == 2 and "is not admitted on this coordinator" in err and len(err.strip().splitlines()) == 1
            await osaas_ok("coordinator", "owner", "add", "alice", public_key, "--db", str(db))
            for version in ("1.0", BROKEN):
                await osaas_ok("bundle", "publish", str(tmp_path / f"dist-{version}"), "--coordinator", url, *owner_key)
            status = await owner.bundle_status(session, url, NAME)
            assert (status.stable, status.candidate, status.owner_key) == ("1.0", None, public_key)

            data_dirs = identities_split(tmp_path, 4, site)
            for i, data_dir in enumerate(data_dirs):
                await procs.start(
                    f"peer-{i}",
                    "peer",
                    "run",
                    "--bootstrap",
                    bootstrap,
                    "--network-file",
                    str(network_file),
                    "--dht-listen",
                    "127.0.0.1:0",
                    "--torrent-listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    str(data_dir),
                    "--allow-private",
                    "--slots",
                    "1",
                )
            out = await osaas_ok(
                "bundle",
                "rollout",
                NAME,
                BROKEN,
                "--percent",
                "50",
                "--coordinator",
                url,
                "--key",
                str(tmp_path / "owner.key"),
            )
            assert f"rolling out: {BROKEN} to 50% of peers" in out

            job_id = int(await osaas_ok("job", "submit", f"{site}/", "--coordinator", url, "--bundle", NAME))

            async def job_done() -> bool:
                return (await owner.status(session, url, operator_key(), job_id)).state == "done"

            await wait_for(job_done, "the job to complete", 2000)
            items = await owner.results(session, url, operator_key(), job_id)
            status = json.loads(await osaas_ok("bundle", "status", NAME, "--coordinator", url, "--json"))

    assert status["state"] == "rolled_back"
    assert status["stable"] == "1.0" and status["candidate"] is None
    assert f"rolled back {NAME} {BROKEN}" in status["message"]
    by_version = {v["version"]: v for v in status["versions"]}
    assert by_version[BROKEN]["units_failed"] >= 5
    assert by_version["1.0"]["units_ok"] > 0, status
    assert f"rolled back {NAME} {BROKEN}" in procs.log("coordinator")

    # The rollback cost no URL its check: each one reported once, with its true result.
    ok, broken = generated_site_urls(site, PAGES)
    assert sorted(i["url"] for i in items) == sorted(ok | broken)
    assert {i["url"] for i in items if i["result"] == "broken"} == broken
    assert {i["url"] for i in items if i["result"] == "ok"} == ok

    # Peers ran the bundle from their content-addressed caches; the broken version reached
    # peers inside the rollout only (the first two), and at least one of them before the rollback.
    versions = [{_version_of(d) for d in (data_dir / "bundles" / "unpacked").iterdir()} for data_dir in data_dirs]
    assert any("1.0" in v for v in versions), versions
    assert all(BROKEN not in v for v in versions[2:]), versions
    assert any(BROKEN in v for v in versions[:2]), versions


def _version_of(unpacked: Path) -> str:
    for line in (unpacked / "bundle.toml").read_text().splitlines():
        if line.startswith("version ="):
            return line.split('"')[1]
    raise AssertionError(f"{unpacked} has no version")
