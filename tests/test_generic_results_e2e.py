"""An owner's own service end to end: a page-fingerprint workload written from
docs/workload-api.md alone (per URL: status, body length, SHA-256 of the body), its job model
declared in its manifest, built, signed and published by its owner; a real peer process
fetches it over BitTorrent and runs it; its records come back to the owner exactly, as JSON
Lines and CSV; a unit that keeps crashing is given up on, and its stderr reaches the owner
through `osaas job logs`; a unit whose records break the schema is refused each time, and
counted against the version.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web

from coordinator.url_jobs import unit_key
from tests.owners import osaas_ok, owned_coordinator, owners_peer, publish
from tests.processes import wait_until_done
from tests.sites import free_port, serve
from tests.test_discovery import osaas_output, processes

pytestmark = pytest.mark.timeout(240)

MANIFEST = """\
name = "fingerprint"
version = "1.0.0"
entrypoint = ["python3", "-m", "fingerprint"]
capabilities = ["fetch"]

[job]
input = "urls"
crawl = false

[results.fields]
url = "str"
status = "int?"
length = "int"
sha256 = "str?"
"""

# The workload, as an owner writes it from the process API's page: frames of a 4-byte length
# and a msgpack map on stdin and stdout, stderr its log.
WORKLOAD = """\
import hashlib
import struct
import sys

import msgpack


def read_frame(stream):
    header = stream.read(4)
    if len(header) < 4:
        sys.exit(2)
    (size,) = struct.unpack(">I", header)
    return msgpack.unpackb(stream.read(size), raw=False)


def write_frame(stream, message):
    body = msgpack.packb(message, use_bin_type=True)
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    unit = read_frame(stdin)
    records = []
    for number, item in enumerate(unit["payload"]["items"], 1):
        url = item["url"]
        if url.endswith("/bad"):  # a record that breaks the declared schema: length is no int
            records.append({"url": url, "status": None, "length": "many", "sha256": None})
            continue
        if url.endswith("/crash"):
            print(f"fingerprint: crashing on purpose at {url}", file=sys.stderr)
            write_frame(stdout, {"type": "result", "status": 2, "payload": {}, "error": "crashed on purpose"})
            return 2
        write_frame(stdout, {"type": "fetch", "id": number, "method": "GET", "url": url, "want_body": True})
        answer = read_frame(stdin)
        body = answer["body"]
        records.append(
            {
                "url": url,
                "status": answer["status"],
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest() if answer["status"] is not None else None,
            }
        )
    write_frame(stdout, {"type": "result", "status": 0, "payload": {"items": records}, "error": None})
    return 0


sys.exit(main())
"""

PAGES = {"/": b"<html>home</html>", "/a": b"alpha " * 100, "/b": b"\x00\x01 binary \xff"}


def site_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        if request.path in PAGES:
            return web.Response(body=PAGES[request.path], content_type="application/octet-stream")
        if request.path == "/busy":
            return web.Response(status=429, text="slow down")
        return web.Response(status=404, text="no such page")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


async def test_an_owners_workload_records_come_back_exactly(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    db = tmp_path / "coordinator.sqlite"
    source = tmp_path / "fingerprint-source"
    (source / "fingerprint").mkdir(parents=True)
    (source / "bundle.toml").write_text(MANIFEST)
    (source / "fingerprint" / "__init__.py").write_text("")
    (source / "fingerprint" / "__main__.py").write_text(WORKLOAD)
    async with processes(tmp_path) as procs, serve(site_app()) as site:
        key_file, owner = await owned_coordinator(procs, tmp_path, url, "--host-min-delay", "0")
        await publish(source, key_file, url, tmp_path / "dist")

        # Another host name for the same server: the crashing URL is a unit of its own.
        crash = site.replace("127.0.0.1", "localhost") + "/crash"
        bad = "http://bad.test/bad"  # never fetched: the workload answers it with a wrong record
        urls = [f"{site}/", f"{site}/a", f"{site}/b", f"{site}/missing", f"{site}/busy", crash, bad]
        submitted = ("job", "submit", *urls, "--coordinator", url, "--bundle", "fingerprint", "--key", str(key_file))
        job_id = int(await osaas_ok(*submitted))
        await owners_peer(procs, tmp_path, url, owner)
        status = await wait_until_done(url, job_id, key=None)
        assert status["state"] == "done", procs.log("peer")[-3000:]
        assert status["counts"] == {"done": 5, "error": 2}

        owned = ("--coordinator", url, "--key", str(key_file))
        lines = (await osaas_ok("job", "results", str(job_id), "--format", "jsonl", *owned)).splitlines()
        expected = [
            {
                "url": url_of,
                "status": 200,
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "failed": None,
            }
            for url_of, body in zip(urls[:3], PAGES.values(), strict=True)
        ]
        for answered, status_code, body in ((urls[3], 404, b"no such page"), (urls[4], 429, b"slow down")):
            digest = hashlib.sha256(body).hexdigest()
            expected.append(
                {"url": answered, "status": status_code, "length": len(body), "sha256": digest, "failed": None}
            )
        crashed = "gave up after 5 attempts: crashed on purpose"
        expected.append({"url": crash, "status": None, "length": None, "sha256": None, "failed": crashed})
        refused = "gave up after 5 attempts: report refused: payload.items[0].length must be int"
        expected.append({"url": bad, "status": None, "length": None, "sha256": None, "failed": refused})
        assert [json.loads(line) for line in lines] == expected
        assert list(json.loads(lines[0])) == ["url", "status", "length", "sha256", "failed"]  # the schema's order

        table = await osaas_ok("job", "results", str(job_id), "--format", "csv", *owned)
        rows = list(csv.reader(io.StringIO(table)))
        assert rows[0] == ["url", "status", "length", "sha256", "failed"]
        assert rows[1:] == [
            [e["url"], "" if e["status"] is None else str(e["status"]), "" if e["length"] is None else str(e["length"]),
             e["sha256"] or "", e["failed"] or ""]
            for e in expected
        ]  # fmt: skip

        # Text and HTML are the link checker's: a workload without them gets a clear error.
        code, _, err = await osaas_output("job", "results", str(job_id), "--format", "html", *owned)
        assert (code, err.strip()) == (
            2,
            "osaas: error: the fingerprint workload has no html renderer; choose one of jsonl, csv",
        )

        # The crashing unit's stderr, each attempt's, as the peer captured it.
        logs = await osaas_ok("job", "logs", str(job_id), *owned)
        heads = [line for line in logs.splitlines() if line.startswith("== unit")]
        assert len(heads) == 5 and all("exit 2" in head and head.endswith(": crashed on purpose") for head in heads)
        assert logs.count(f"fingerprint: crashing on purpose at {crash}") == 5

        # The refused reports: the peer was told why, and the version was charged each time
        # (as it was for each crash); the one good unit counted as done.
        assert procs.log("peer").count("refused: report refused: payload.items[0].length must be int") == 5
        bundle = json.loads(await osaas_ok("bundle", "status", "fingerprint", "--coordinator", url, "--json"))
        assert [(v["version"], v["units_ok"], v["units_failed"]) for v in bundle["versions"]] == [("1.0.0", 1, 10)]

        # The 429 reached the coordinator from the peer's count of its fetches' answers, not
        # from the records (whose fields are the workload's): the site's host is backed off.
        with sqlite3.connect(db) as conn:
            (backoff,) = conn.execute("SELECT backoff FROM hosts WHERE key = ?", (unit_key(f"{site}/"),)).fetchone()
        assert backoff > 0
