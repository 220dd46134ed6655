"""An owner's side of the end-to-end tests: a coordinator process that admitted the owner's key,
and the owner's commands (`osaas_ok`, `publish`), as tests/test_*_e2e.py use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.processes import operator_key, wait_until_serving
from tests.test_discovery import osaas_output


async def osaas_ok(*args: str) -> str:
    code, out, err = await osaas_output(*args)
    assert code == 0, f"osaas {' '.join(args)} failed: {err}"
    return out


async def owned_coordinator(procs: Any, tmp_path: Path, url: str, *options: str) -> tuple[Path, str]:
    """Start a coordinator serving at `url` (database and log in tmp_path; `options` added to
    `coordinator serve`) that admitted a new owner key; that key's file and public key."""
    db = tmp_path / "coordinator.sqlite"
    listen = url.removeprefix("http://")
    await procs.start(
        "coordinator",
        *("coordinator", "serve", "--listen", listen, "--db", str(db), "--torrent-listen", "127.0.0.1:0"),
        *("--operator-key", operator_key().public_hex, *options),
    )
    await wait_until_serving(url, tmp_path / "coordinator.log")
    key_file = tmp_path / "owner.key"
    owner = (await osaas_ok("bundle", "keygen", "--out", str(key_file))).strip()
    await osaas_ok("coordinator", "owner", "add", "owner", owner, "--db", str(db))
    return key_file, owner


async def publish(source: Path, key_file: Path, url: str, dist: Path) -> None:
    """Build the bundle in `source` into `dist`, signed with `key_file`, and publish it at `url`."""
    await osaas_ok("bundle", "build", str(source), "--key", str(key_file), "--out", str(dist))
    await osaas_ok("bundle", "publish", str(dist), "--coordinator", url, "--key", str(key_file))


async def owners_peer(procs: Any, tmp_path: Path, url: str, owner: str) -> None:
    """Start a volunteer's peer (`procs` log "peer") working for `url` that runs `owner`'s
    bundles, in the sandbox where it can build one, else unconfined (it trusts that owner)."""
    await procs.start(
        "peer",
        *("peer", "run", "--coordinator", url, "--data-dir", str(tmp_path / "peer"), "--allow-private"),
        *("--status-port", "off", "--torrent-listen", "127.0.0.1:0", "--trust-owner", owner),
    )
