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

from tests.owners import osaas_ok, owned_coordinator, owners_peer, publish
from tests.processes import wait_until_done
from tests.sites import free_port, serve
from tests.test_discovery import processes

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


async def test_a_workload_in_c_runs_on_a_real_peer_and_its_records_come_back(tmp_path: Path) -> None:
    source = build_source(tmp_path / "fingerprint-c")
    url = f"http://127.0.0.1:{free_port()}"
    async with processes(tmp_path) as procs, serve(site_app()) as site:
        key_file, owner = await owned_coordinator(procs, tmp_path, url, "--host-min-delay", "0")
        await publish(source, key_file, url, tmp_path / "dist")

        gone = "http://gone.invalid/"  # a name that never resolves
        urls = [f"{site}/", f"{site}/a", f"{site}/b", f"{site}/missing", f"{site}/moved", gone]
        submitted = ("job", "submit", *urls, "--coordinator", url, "--bundle", "fingerprint-c", "--key", str(key_file))
        job_id = int(await osaas_ok(*submitted))
        await owners_peer(procs, tmp_path, url, owner)
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
