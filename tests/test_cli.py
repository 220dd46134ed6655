"""Bad command lines and unreachable services: one clear line on stderr, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from coordinator.api import make_app
from coordinator.sql import SqlStore
from tests.processes import operator_key
from tests.sites import free_port, serve


def osaas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "osaas", *args], capture_output=True, text=True, timeout=60)


def assert_one_line_error(run: subprocess.CompletedProcess[str], message: str) -> None:
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("osaas: error: ") or "error:" in lines[-1], run.stderr
    assert message in lines[-1], run.stderr
    assert "Traceback" not in run.stderr


def test_coordinator_refuses_a_database_it_cannot_use(tmp_path: Path) -> None:
    not_sqlite = tmp_path / "garbage.sqlite"
    not_sqlite.write_bytes(b"this is not a database" * 100)
    assert_one_line_error(
        osaas("coordinator", "serve", "--listen", "127.0.0.1:0", "--db", str(not_sqlite)), "file is not a database"
    )
    assert not_sqlite.read_bytes() == b"this is not a database" * 100  # nothing lost
    assert_one_line_error(
        osaas("coordinator", "serve", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "no" / "dir.sqlite")),
        "cannot open database",
    )
    assert_one_line_error(osaas("coordinator", "serve", "--listen", "nowhere", "--db", "x"), "is not HOST:PORT")
    for delay, message in (("-1", "must be 0..3600 seconds"), ("nan", "must be 0..3600"), ("soon", "not a number")):
        serve = ("coordinator", "serve", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "c.sqlite"))
        assert_one_line_error(osaas(*serve, "--host-min-delay", delay), message)
    for epsilon, message in (("0", "must be above 0 and at most 10"), ("inf", "at most 10"), ("a lot", "not a number")):
        assert_one_line_error(osaas(*serve, "--epsilon", epsilon), message)


def test_peer_refuses_a_data_dir_or_key_it_cannot_use(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    assert_one_line_error(
        osaas("peer", "run", "--coordinator", "http://127.0.0.1:9", "--data-dir", str(blocker)), "cannot use data dir"
    )
    data_dir = tmp_path / "peer"
    data_dir.mkdir()
    (data_dir / "identity.key").write_text("not a key")
    assert_one_line_error(
        osaas("peer", "run", "--coordinator", "http://127.0.0.1:9", "--data-dir", str(data_dir)), "identity key"
    )
    assert (data_dir / "identity.key").read_text() == "not a key"  # never overwritten
    assert_one_line_error(
        osaas("peer", "run", "--coordinator", "not a url", "--data-dir", str(data_dir)), "--coordinator"
    )


def test_peer_status_without_a_peer(tmp_path: Path) -> None:
    assert_one_line_error(osaas("peer", "status", "--status-port", str(free_port())), "no peer answers on 127.0.0.1:")
    assert_one_line_error(osaas("peer", "status", "--status-port", "70000"), "is not a port number")
    assert_one_line_error(
        osaas("peer", "run", "--coordinator", "http://127.0.0.1:1", "--data-dir", str(tmp_path), "--status-port", "x"),
        "is not a port number",
    )


def test_a_coordinator_on_every_address_must_say_which_one_to_announce(tmp_path: Path) -> None:
    # It used to announce http://0.0.0.0:PORT in the DHT, which no peer can reach.
    run = osaas(
        "coordinator",
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--db",
        str(tmp_path / "c.sqlite"),
        "--dht-listen",
        "127.0.0.1:0",
    )
    assert_one_line_error(run, "give --public-url")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("seed.example:6881", "give an IP address"),
        ("0.0.0.0", "not an address other machines can reach"),
        ("203.0.113.7:0", "the port must be 1-65535"),
        ("[2001:db8::7]6881", "is not ADDR[:PORT]"),
    ],
)
def test_a_public_address_must_be_one_others_can_reach(tmp_path: Path, value: str, message: str) -> None:
    peer = osaas(
        "peer", "run", "--data-dir", str(tmp_path), "--coordinator", "http://127.0.0.1:1", "--public-address", value
    )
    assert_one_line_error(peer, message)
    coordinator = osaas(
        "coordinator", "serve", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "c.sqlite"), "--public-address", value
    )
    assert_one_line_error(coordinator, message)


def test_job_commands_against_no_coordinator_or_unknown_jobs(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(osaas("job", "status", "1", "--coordinator", closed), "cannot reach coordinator")
    assert_one_line_error(osaas("job", "submit", "mailto:x@y", "--coordinator", closed), "not an absolute http(s) URL")
    assert_one_line_error(osaas("job", "status", "0", "--coordinator", closed), "must be at least 1")


def test_dht_commands_without_a_reachable_node() -> None:
    silent = f"127.0.0.1:{free_port()}"
    key = ("--network-key", "ab" * 32)
    assert_one_line_error(osaas("dht", "lookup", "coordinators", *key, "--bootstrap", silent), "no DHT node answered")
    assert_one_line_error(osaas("dht", "lookup", "coordinators", "--bootstrap", silent), "--network-key")
    assert_one_line_error(osaas("dht", "lookup", "coordinators", "--bootstrap", "127.0.0.1"), "is not HOST:PORT")
    assert_one_line_error(
        osaas("dht", "lookup", "coordinators", "--network", "No Such", "--bootstrap", silent), "network name"
    )
    assert_one_line_error(osaas("peer", "run", "--data-dir", "/tmp/x"), "--bootstrap")


async def test_unknown_job_is_a_clear_error(tmp_path: Path) -> None:
    import asyncio

    store = SqlStore(tmp_path / "c.sqlite")
    app: web.Application = make_app(store)
    async with serve(app) as coordinator:
        await store.grant("operator", operator_key().public_hex, "operator", "operator", 0.0)
        run = await asyncio.to_thread(osaas, "job", "status", "42", "--coordinator", coordinator)
        assert_one_line_error(run, "42")
        assert "404" in run.stderr
        run = await asyncio.to_thread(osaas, "job", "results", "42", "--coordinator", coordinator, "--format", "csv")
        assert_one_line_error(run, "404")


@pytest.mark.parametrize("argv", [[], ["job"], ["coordinator"]])
def test_incomplete_commands_print_help_and_exit_2(argv: list[str]) -> None:
    run = osaas(*argv)
    assert run.returncode == 2
    assert "usage:" in (run.stdout + run.stderr)


def test_the_operator_admits_an_owner_before_the_first_serve(tmp_path: Path) -> None:
    key = "ab" * 32
    db = tmp_path / "new.sqlite"
    run = osaas("coordinator", "owner", "add", "alice", key, "--db", str(db))
    assert run.returncode == 0 and "alice (abababababababab…) is now owner" in run.stdout, run.stderr
    assert key in osaas("coordinator", "grant", "list", "--db", str(db)).stdout
    assert_one_line_error(
        osaas("coordinator", "owner", "add", "alice", key, "--db", str(tmp_path / "no" / "c.sqlite")),
        "cannot create database",
    )
    assert_one_line_error(
        osaas("coordinator", "grant", "list", "--db", str(tmp_path / "none.sqlite")), "no coordinator database"
    )
