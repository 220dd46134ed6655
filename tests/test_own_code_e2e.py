"""An owner's own link checker, run by a real peer with its own signed code: the operator admits
the owner before its coordinator ever served (`coordinator owner add` makes the database); the
owner builds a changed copy of the link checker and publishes it; a volunteer's peer without a
sandbox, trusting that owner, started with a relative --data-dir (its bundles are then under a
relative path), runs the job. Every result says the bundle's code ran, not the link checker
installed beside the peer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.processes import job_results, start, stopped_on_exit, wait_until_done
from tests.sites import RequestLog, coordinator, generated_site_app, generated_site_urls, serve
from tests.test_sandbox_e2e import osaas_ok
from workloads.builtin import stage_linkcheck

pytestmark = pytest.mark.timeout(180)

MARK = "checked by the owner's own code"


def own_linkcheck(root: Path) -> Path:
    """The link checker as a bundle `mylinks` whose every result carries MARK."""
    source = stage_linkcheck(root)
    payload = source / "workloads" / "linkcheck" / "payload.py"
    code = payload.read_text()
    original = '    caps are dropped."""\n'
    assert original in code  # the end of the docstring of `within_caps`, which every record passes
    payload.write_text(code.replace(original, f'{original}    record["error"] = "{MARK}"\n'))
    toml = (source / "bundle.toml").read_text().splitlines()
    toml = [
        'name = "mylinks"' if line.startswith("name =") else 'version = "1.0"' if line.startswith("version =") else line
        for line in toml
    ]
    (source / "bundle.toml").write_text("\n".join(toml) + "\n")
    return source


async def test_a_peer_with_a_relative_data_dir_runs_the_bundles_own_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "c.sqlite"
    owner_key = tmp_path / "owner.key"
    public_key = (await osaas_ok("bundle", "keygen", "--out", str(owner_key))).strip()
    # Before any `serve`: the database is made by the command.
    out = await osaas_ok("coordinator", "owner", "add", "alice", public_key, "--db", str(db))
    assert "alice" in out and "is now owner" in out and db.is_file()
    await osaas_ok(
        "bundle",
        "build",
        str(own_linkcheck(tmp_path / "source")),
        "--key",
        str(owner_key),
        "--out",
        str(tmp_path / "dist"),
    )

    no_bwrap = tmp_path / "bin"  # a PATH without bubblewrap: the peer runs trusted owners' bundles unconfined
    no_bwrap.mkdir()
    for tool in ("prlimit", "setpriv"):
        if found := shutil.which(tool):
            (no_bwrap / tool).symlink_to(found)
    monkeypatch.chdir(tmp_path)  # the peer starts here, given its data dir relative to here
    processes: list = []
    async with (
        coordinator(db) as url,
        serve(generated_site_app(RequestLog(), pages=4)) as site,
        stopped_on_exit(processes),
    ):
        await osaas_ok("bundle", "publish", str(tmp_path / "dist"), "--coordinator", url, "--key", str(owner_key))
        job_id = int(await osaas_ok("job", "submit", f"{site}/", "--coordinator", url, "--bundle", "mylinks"))
        processes.append(
            await start(
                "peer", "run", "--coordinator", url, "--data-dir", "volunteer", "--status-port", "off",
                "--allow-private", "--torrent-listen", "127.0.0.1:0", "--trust-owner", public_key,
                log=tmp_path / "peer.log", env={"PATH": str(no_bwrap)},
            )
        )  # fmt: skip
        status = await wait_until_done(url, job_id)
        assert status["state"] == "done", (tmp_path / "peer.log").read_text()[-3000:]
        items = await job_results(url, job_id)

    ok, broken = generated_site_urls(site, 4)
    assert sorted(item["url"] for item in items) == sorted(ok | broken)
    assert {item["error"] for item in items} == {MARK}, items
    assert {item["url"] for item in items if item["result"] == "ok"} == ok
    assert list((tmp_path / "volunteer" / "bundles" / "unpacked").iterdir())
