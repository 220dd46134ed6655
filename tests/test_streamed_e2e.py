"""Items streamed end to end (process API version 2): a workload written from
docs/workload-api.md sends each item's record as an `item` frame as soon as it is done; a real
peer process hands them to a real coordinator while the unit runs. The owner sees a running
unit's results before it ends (the unit waits at a gate the test opens only once it saw
them), and a unit that crashes mid-way keeps what it streamed: only the rest is leased again.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from osaas import owner as owner_calls
from tests.owners import osaas_ok, owned_coordinator, owners_peer, publish
from tests.processes import job_status, operator_key, wait_until_done
from tests.sites import free_port, serve
from tests.test_discovery import processes, wait_for

pytestmark = pytest.mark.timeout(180)

MANIFEST = """\
name = "shout"
version = "1.0.0"
entrypoint = ["python3", "-m", "shout"]
api_version = 2
capabilities = ["fetch"]

[job]
input = "items"
partition = "count"

[results.fields]
item = "str"
upper = "str"
"""

# Each item's record goes out as it is done. An item that is a URL is a gate: the workload asks
# for it until it answers 200. "boom" crashes the unit, unless it is the unit's first item (so
# the unit made of what the crash left goes through). "bad" gets a record its schema refuses.
SHOUT = """\
import struct
import sys
import time

import msgpack


def read_frame():
    header = sys.stdin.buffer.read(4)
    if len(header) < 4:
        sys.exit(2)
    (size,) = struct.unpack(">I", header)
    return msgpack.unpackb(sys.stdin.buffer.read(size), raw=False)


def write_frame(message):
    body = msgpack.packb(message, use_bin_type=True)
    sys.stdout.buffer.write(struct.pack(">I", len(body)) + body)
    sys.stdout.buffer.flush()


unit = read_frame()
if unit["version"] != 2:
    sys.exit(2)
fetches = 0
for index, entry in enumerate(unit["payload"]["items"]):
    item = entry["item"]
    if item == "boom" and index > 0:
        print("boom: falling over mid-unit", file=sys.stderr)
        sys.exit(2)
    while item.startswith("http://"):
        fetches += 1
        write_frame({"type": "fetch", "id": fetches, "method": "GET", "url": item, "want_body": False})
        if read_frame()["status"] == 200:
            break
        time.sleep(0.2)
    write_frame({"type": "item", "record": {"item": item, "upper": 7 if item == "bad" else item.upper()}})
write_frame({"type": "result", "status": 0, "payload": {"items": []}, "error": None})
sys.exit(0)
"""


def stage(root: Path) -> Path:
    source = root / "shout-source"
    (source / "shout").mkdir(parents=True)
    (source / "bundle.toml").write_text(MANIFEST)
    (source / "shout" / "__init__.py").write_text("")
    (source / "shout" / "__main__.py").write_text(SHOUT)
    return source


async def rows(url: str, job_id: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        return await owner_calls.results(session, url, operator_key(), job_id)


async def test_a_running_units_items_reach_the_owner_and_a_crash_keeps_them(tmp_path: Path) -> None:
    opened = asyncio.Event()

    async def gate(_: web.Request) -> web.Response:
        return web.Response(status=200 if opened.is_set() else 404)

    app = web.Application()

    async def shut(_: web.Request) -> web.Response:
        return web.Response(status=404)  # a gate that never opens

    app.router.add_get("/gate", gate)
    app.router.add_get("/shut", shut)
    url = f"http://127.0.0.1:{free_port()}"
    async with serve(app) as site, processes(tmp_path) as procs:
        key_file, owner = await owned_coordinator(procs, tmp_path, url)
        owned = ("--coordinator", url, "--key", str(key_file))
        await publish(stage(tmp_path), key_file, url, tmp_path / "shout-dist")
        gated = ["one", "two", f"{site}/gate", "three"]
        crashing = ["a", "b", "boom", "c"]
        bad = ["bad", f"{site}/shut"]
        for name, items in (("gated", gated), ("crashing", crashing), ("bad", bad)):
            (tmp_path / f"{name}.txt").write_text("\n".join(items) + "\n")
        gated_job, crashing_job, bad_job = [
            int(
                await osaas_ok("job", "submit", "--bundle", "shout", "--items-file", str(tmp_path / f"{n}.txt"), *owned)
            )
            for n in ("gated", "crashing", "bad")
        ]
        await owners_peer(procs, tmp_path, url, owner)

        # The gated unit is still running: its first two items are the owner's already.
        async def two_streamed() -> bool:
            return [row["upper"] for row in await rows(url, gated_job)] == ["ONE", "TWO", None, None]

        await wait_for(two_streamed, "the gated unit's first items", timeout_steps=1200)
        status = await job_status(url, gated_job)
        assert (status["state"], status["items_done"], status["units_done"]) == ("running", 2, 0)
        opened.set()

        for job_id in (gated_job, crashing_job, bad_job):
            status = await wait_until_done(url, job_id, key=None)
            assert status["state"] == "done", procs.log("peer")[-3000:]
        status = await job_status(url, crashing_job)
        assert (status["items_done"], status["items_total"], status["counts"]) == (4, 4, {"done": 4})
        for job_id, items in ((gated_job, gated), (crashing_job, crashing)):
            lines = (await osaas_ok("job", "results", str(job_id), "--format", "jsonl", *owned)).splitlines()
            assert [json.loads(line) for line in lines] == [
                {"item": item, "upper": item.upper(), "failed": None} for item in items
            ]
        # A streamed record its schema refuses ends its running unit, the workload's failure
        # each time, until the unit's attempts are used up.
        lines = (await osaas_ok("job", "results", str(bad_job), "--format", "jsonl", *owned)).splitlines()
        refused = "gave up after 5 attempts: report refused: payload.items[0].upper must be str"
        assert [json.loads(line) for line in lines] == [
            {"item": item, "upper": None, "failed": refused} for item in bad
        ]
        assert "streamed items refused: report refused: payload.items[0].upper must be str" in procs.log("peer")
        # The crash was a failed unit, its log kept; the unit left of it ran only what it had not done.
        logs = await osaas_ok("job", "logs", str(crashing_job), *owned)
        assert "workload exited with code 2 without a result" in logs
        assert "boom: falling over mid-unit" in logs
