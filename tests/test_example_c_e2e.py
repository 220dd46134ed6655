"""The process API is not Python's: the C example workload (examples/fingerprint-c), compiled
here with the system's C compiler, built into a signed bundle, published, fetched over
BitTorrent by a real peer and run (in the sandbox where the peer can build one); its records
come back to the owner exactly, the same fields the Python fingerprint of
tests/test_generic_results_e2e.py reports, from a program that imports nothing of ours.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from tests.processes import operator_key, wait_until_done, wait_until_serving
from tests.sites import free_port, serve
from tests.test_discovery import osaas_output, processes

pytestmark = pytest.mark.timeout(240)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fingerprint-c"
PAGES = {"/": b"<html>home</html>", "/a": b"alpha " * 1000, "/b": bytes(range(256)) * 40}


def compiler() -> str:
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        pytest.skip("no C compiler (cc or gcc) on this machine")
    return found


def build_source(into: Path) -> Path:
    """The example's bundle source: its manifest and the program compiled beside it."""
    into.mkdir(parents=True)
    shutil.copy(EXAMPLE / "bundle.toml", into / "bundle.toml")
    command = [compiler(), "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-static"]
    done = subprocess.run(
        [*command, "-o", str(into / "fingerprint"), str(EXAMPLE / "fingerprint.c")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return into


def site_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        if request.path in PAGES:
            return web.Response(body=PAGES[request.path], content_type="application/octet-stream")
        if request.path == "/moved":
            return web.Response(status=301, headers={"Location": "/a"})
        return web.Response(status=404, text="no such page")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


async def osaas_ok(*args: str) -> str:
    code, out, err = await osaas_output(*args)
    assert code == 0, f"osaas {' '.join(args)} failed: {err}"
    return out


async def test_a_workload_in_c_runs_on_a_real_peer_and_its_records_come_back(tmp_path: Path) -> None:
    source = build_source(tmp_path / "fingerprint-c")
    url = f"http://127.0.0.1:{free_port()}"
    db = tmp_path / "coordinator.sqlite"
    async with processes(tmp_path) as procs, serve(site_app()) as site:
        await procs.start(
            "coordinator",
            "coordinator",
            "serve",
            "--listen",
            url.removeprefix("http://"),
            "--db",
            str(db),
            "--torrent-listen",
            "127.0.0.1:0",
            "--host-min-delay",
            "0",
            "--operator-key",
            operator_key().public_hex,
        )
        await wait_until_serving(url, tmp_path / "coordinator.log")
        key_file = tmp_path / "owner.key"
        owner = (await osaas_ok("bundle", "keygen", "--out", str(key_file))).strip()
        await osaas_ok("bundle", "build", str(source), "--key", str(key_file), "--out", str(tmp_path / "dist"))
        await osaas_ok("coordinator", "owner", "add", "c-owner", owner, "--db", str(db))
        await osaas_ok("bundle", "publish", str(tmp_path / "dist"), "--coordinator", url, "--key", str(key_file))

        gone = "http://gone.invalid/"  # a name that never resolves
        urls = [f"{site}/", f"{site}/a", f"{site}/b", f"{site}/missing", f"{site}/moved", gone]
        submitted = ("job", "submit", *urls, "--coordinator", url, "--bundle", "fingerprint-c", "--key", str(key_file))
        job_id = int(await osaas_ok(*submitted))
        await procs.start(
            "peer",
            "peer",
            "run",
            "--coordinator",
            url,
            "--data-dir",
            str(tmp_path / "peer"),
            "--allow-private",
            "--status-port",
            "off",
            "--torrent-listen",
            "127.0.0.1:0",
            "--trust-owner",  # where no sandbox can be built: its owner is trusted here
            owner,
        )
        status = await wait_until_done(url, job_id, key=None)
        assert status["state"] == "done", procs.log("peer")[-3000:]

        owned = ("--coordinator", url, "--key", str(key_file))
        lines = (await osaas_ok("job", "results", str(job_id), "--format", "jsonl", *owned)).splitlines()

    def answered(of: str, code: int, body: bytes) -> dict[str, object]:
        digest = hashlib.sha256(body).hexdigest()
        return {"url": of, "status": code, "length": len(body), "sha256": digest, "truncated": False}

    expected = [answered(of, 200, body) for of, body in zip(urls[:3], PAGES.values(), strict=True)]
    expected.append(answered(urls[3], 404, b"no such page"))
    expected.append(answered(urls[4], 301, b""))  # the peer never follows redirects
    unanswered = {"url": gone, "status": None, "length": None, "sha256": None, "truncated": False}
    records = sorted((json.loads(line) for line in lines), key=lambda record: urls.index(record["url"]))
    assert [{key: record[key] for key in expected[0]} for record in records[:5]] == expected
    assert [record["error"] for record in records[:5]] == [None] * 5
    assert records[5]["error"].startswith("dns")
    assert {key: records[5][key] for key in unanswered} == unanswered
    assert all(record["failed"] is None for record in records)
