"""Owners as people use them, through the `osaas` command: a key of their own, admitted by the
operator on the coordinator's host, signing every request; each sees and changes only its own
jobs, and every change is in the audit log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.sites import coordinator


def osaas(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None if config is None else {**os.environ, "XDG_CONFIG_HOME": str(config)}
    return subprocess.run([sys.executable, "-m", "osaas", *args], capture_output=True, text=True, timeout=60, env=env)


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr
    return run.stdout


def refused(run: subprocess.CompletedProcess[str], message: str) -> None:
    assert run.returncode == 2, run.stdout
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("osaas: error: ") and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr


async def test_owners_sign_with_their_key_and_see_only_their_own_jobs(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    async with coordinator(db) as url:

        def run(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
            return osaas(*args, config=config)

        # No key yet: one line saying how to get one.
        refused(await asyncio.to_thread(run, "job", "list", "--coordinator", url, config=alice), "osaas bundle keygen")
        alice_key = ok(await asyncio.to_thread(run, "bundle", "keygen", config=alice)).strip()
        bob_key = ok(await asyncio.to_thread(run, "bundle", "keygen", config=bob)).strip()
        assert (alice / "osaas" / "owner.key").exists()

        # A key the operator did not admit gets nothing.
        submit = ("job", "submit", "http://a.test/", "--coordinator", url)
        refused(await asyncio.to_thread(run, *submit, config=alice), "is not admitted on this coordinator")

        for name, key in (("alice", alice_key), ("bob", bob_key)):
            out = ok(await asyncio.to_thread(run, "coordinator", "grant", "add", name, key, "--db", str(db)))
            assert f"{name} ({key[:16]}…) is now owner" in out
        listed = ok(await asyncio.to_thread(run, "coordinator", "grant", "list", "--db", str(db)))
        assert alice_key in listed and bob_key in listed and "operator" in listed

        job_id = ok(await asyncio.to_thread(run, *submit, config=alice)).strip()
        mine = ok(await asyncio.to_thread(run, "job", "list", "--coordinator", url, "--json", config=alice))
        assert [json.loads(line)["job_id"] for line in mine.splitlines()] == [int(job_id)]
        assert ok(await asyncio.to_thread(run, "job", "list", "--coordinator", url, config=bob)) == ""
        for action in ("status", "results", "cancel"):
            refused(
                await asyncio.to_thread(run, "job", action, job_id, "--coordinator", url, config=bob), "it is not yours"
            )
        out = ok(await asyncio.to_thread(run, "job", "cancel", job_id, "--coordinator", url, config=alice))
        assert f"job {job_id} (linkcheck) cancelled" in out

        # The operator limits bob; his refusal names the limit.
        ok(
            await asyncio.to_thread(
                run, "coordinator", "limits", "set", bob_key, "--urls-per-job", "1", "--db", str(db)
            )
        )
        two = ("job", "submit", "http://a.test/1", "http://a.test/2", "--coordinator", url)
        refused(await asyncio.to_thread(run, *two, config=bob), "limit reached: 1 URLs per job")

        ok(await asyncio.to_thread(run, "coordinator", "grant", "remove", bob_key, "--db", str(db)))
        refused(await asyncio.to_thread(run, "job", "list", "--coordinator", url, config=bob), "not admitted")

    audit = ok(await asyncio.to_thread(osaas, "coordinator", "audit", "--db", str(db)))
    for line in ("grant", "submit", "cancel", "limits", "revoke"):
        assert line in audit
    assert f"{alice_key[:16]}…" in audit
