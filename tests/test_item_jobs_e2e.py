"""Jobs of items and records end to end: two small Python workloads written from
docs/workload-api.md (one upper-cases items, one counts the words of records' text), built,
signed and published by their owner; `osaas job submit --items-file` and `--records-file`
send their input; a real peer process fetches the bundles over BitTorrent and runs them; the
records come back to the owner exactly, as JSON Lines, in the order given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.owners import osaas_ok, owned_coordinator, owners_peer, publish
from tests.processes import wait_until_done
from tests.sites import free_port
from tests.test_discovery import osaas_output, processes

pytestmark = pytest.mark.timeout(180)

UPPER_MANIFEST = """\
name = "upper"
version = "1.0.0"
entrypoint = ["python3", "-m", "upper"]

[job]
input = "items"
partition = "count"

[results.fields]
item = "str"
upper = "str"
length = "int"
"""

WORDS_MANIFEST = """\
name = "words"
version = "1.0.0"
entrypoint = ["python3", "-m", "words"]

[job]
input = "records"
partition = "count"

[results.fields]
item = "str"
words = "int"
title = "str?"
"""

# Frames of a 4-byte length and a msgpack map on stdin and stdout, as the process API's page
# says; `answer(entry)` is each workload's own.
FRAMES = """\
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


def main(answer):
    unit = read_frame(sys.stdin.buffer)
    records = [answer(entry) for entry in unit["payload"]["items"]]
    write_frame(sys.stdout.buffer, {"type": "result", "status": 0, "payload": {"items": records}, "error": None})
    return 0
"""

UPPER = """\
import sys

from upper.frames import main

sys.exit(main(lambda e: {"item": e["item"], "upper": e["item"].upper(), "length": len(e["item"])}))
"""

WORDS = """\
import sys

from words.frames import main

sys.exit(main(lambda e: {"item": e["item"], "words": len(e["record"].get("text", "").split()),
                         "title": e["record"].get("title")}))
"""


def stage(root: Path, name: str, manifest: str, main: str) -> Path:
    source = root / f"{name}-source"
    (source / name).mkdir(parents=True)
    (source / "bundle.toml").write_text(manifest)
    (source / name / "__init__.py").write_text("")
    (source / name / "frames.py").write_text(FRAMES)
    (source / name / "__main__.py").write_text(main)
    return source


async def test_items_and_records_come_back_exactly(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    items = [f"item number {n}, ünïcode" for n in range(60)]
    records: list[dict[str, Any]] = [{"title": f"t{n}", "text": "one two three " * n} for n in range(45)]
    records.append({"text": "", "x": [1, {}]})
    (tmp_path / "items.txt").write_text("\n".join(items) + "\n")
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    async with processes(tmp_path) as procs:
        key_file, owner = await owned_coordinator(procs, tmp_path, url)
        owned = ("--coordinator", url, "--key", str(key_file))
        for name, manifest, main in (("upper", UPPER_MANIFEST, UPPER), ("words", WORDS_MANIFEST, WORDS)):
            await publish(stage(tmp_path, name, manifest, main), key_file, url, tmp_path / f"{name}-dist")

        # Bad input is refused in one line before anything is sent.
        code, _, err = await osaas_output(
            "job", "submit", "--bundle", "words", "--records-file", str(tmp_path / "items.txt"), *owned
        )
        assert (code, err) == (
            2,
            f"osaas: error: {tmp_path / 'items.txt'}:1: not JSON (Expecting value: line 1 column 1 (char 0))\n",
        )
        code, _, err = await osaas_output(
            "job", "submit", "--bundle", "upper", "--items-file", str(tmp_path / "items.txt"), "http://a.test/", *owned
        )
        assert (code, err) == (2, "osaas: error: give either URLs or a file of items or records, not both\n")
        # A file of the other kind reaches the coordinator, which says what the bundle takes.
        code, _, err = await osaas_output(
            "job", "submit", "--bundle", "upper", "--records-file", str(tmp_path / "records.jsonl"), *owned
        )
        assert code != 0 and "input must be a map with 'items' only (this bundle's jobs take items)" in err

        upper_job = int(
            await osaas_ok("job", "submit", "--bundle", "upper", "--items-file", str(tmp_path / "items.txt"), *owned)
        )
        words_job = int(
            await osaas_ok(
                "job", "submit", "--bundle", "words", "--records-file", str(tmp_path / "records.jsonl"), *owned
            )
        )
        await owners_peer(procs, tmp_path, url, owner)
        for job_id in (upper_job, words_job):
            status = await wait_until_done(url, job_id, key=None)
            assert status["state"] == "done", procs.log("peer")[-3000:]

        lines = (await osaas_ok("job", "results", str(upper_job), "--format", "jsonl", *owned)).splitlines()
        assert [json.loads(line) for line in lines] == [
            {"item": item, "upper": item.upper(), "length": len(item), "failed": None} for item in items
        ]
        lines = (await osaas_ok("job", "results", str(words_job), "--format", "jsonl", *owned)).splitlines()
        assert [json.loads(line) for line in lines] == [
            {"item": str(n), "words": len(r["text"].split()), "title": r.get("title"), "failed": None}
            for n, r in enumerate(records, 1)
        ]
