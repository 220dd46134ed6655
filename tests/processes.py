"""Running `osaas` commands as real subprocesses, the way an operator, volunteers and an owner would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aiohttp

from osaas import owner
from osaas.commands._shared import default_owner_key
from overlay.identity import Identity
from workloads.linkcheck import report as linkcheck_report


async def start(*args: str, log: Path, env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
    """`osaas ARGS` in the background, its output in `log`; `env`: variables to set for it."""
    with open(log, "ab") as f:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "osaas",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=f,
            stderr=f,
            env={**os.environ, **env} if env else None,
        )


async def osaas(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "osaas", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None  # communicate() waited for it
    return process.returncode, out.decode(), err.decode()


async def wait_until_serving(url: str, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/v1/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("coordinator did not start: " + log.read_text()[-2000:])


async def start_coordinator(
    processes: list[asyncio.subprocess.Process],
    workdir: Path,
    port: int,
    *args: str,
    db: str = "c.sqlite",
    log: str = "coordinator.log",
) -> str:
    """`osaas coordinator serve` on 127.0.0.1:`port`, its database and log in `workdir`, with
    more options in `args`; added to `processes` (for `stopped_on_exit`) and serving when this
    returns. Its URL. Without re-checks unless `args` ask for them: a test of something else
    would otherwise fetch every answer of its fresh keys twice (tests/test_liars_e2e.py,
    tests/test_fair_load_e2e.py and the demo run with them)."""
    if "--rechecks" not in args:
        args = (*args, "--rechecks", "off")
    url = f"http://127.0.0.1:{port}"
    listen = f"127.0.0.1:{port}"
    operator = operator_key().public_hex
    processes.append(
        await start(
            "coordinator",
            "serve",
            "--listen",
            listen,
            "--db",
            str(workdir / db),
            "--operator-key",
            operator,
            *args,
            log=workdir / log,
        )
    )
    await wait_until_serving(url, workdir / log)
    return url


async def start_peer(
    processes: list[asyncio.subprocess.Process],
    url: str,
    data_dir: Path,
    *args: str,
    config: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """`osaas peer run` for the coordinator at `url` with its data in `data_dir`, its config
    file `config`, allowed to reach the test's loopback sites (--allow-private), more options
    in `args`; added to `processes` (for `stopped_on_exit`)."""
    peer = await start(
        "peer",
        "run",
        "--coordinator",
        url,
        "--data-dir",
        str(data_dir),
        "--allow-private",
        "--config",
        str(config),
        *args,
        log=log,
        env=env,
    )
    processes.append(peer)
    return peer


def operator_key() -> Identity:
    """The key the tests' `osaas` commands sign with by default (tests/conftest.py made it, in a
    config dir of the test process's own); coordinators the tests start make it an operator."""
    return Identity.load(default_owner_key())


async def job_status(url: str, job_id: int, key: Identity | None = None) -> dict:
    """A job's status as `osaas job status --json` prints it, asked in-process: an `osaas`
    process per poll kept a third of a core busy. `job_status_command` runs the command."""
    async with aiohttp.ClientSession() as session:
        status = await owner.status(session, url, key or operator_key(), job_id)
    return json.loads(json.dumps({name: getattr(status, name) for name in status.__slots__}))


async def job_status_command(url: str, job_id: int) -> dict:
    code, out, err = await osaas("job", "status", str(job_id), "--coordinator", url, "--json")
    assert code == 0, err
    return json.loads(out)


@contextlib.asynccontextmanager
async def stopped_on_exit(processes: list[asyncio.subprocess.Process]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for p in processes:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def wait_until_done(url: str, job_id: int, polls: int = 900, key: Identity | None = None) -> dict:
    """The job's status once it ended (or the last one seen, after `polls` looks 0.2 s apart)."""
    for _ in range(polls):
        status = await job_status(url, job_id, key)
        if status["state"] in ("done", "cancelled"):
            break
        await asyncio.sleep(0.2)
    return status


async def job_results(url: str, job_id: int, key: Identity | None = None) -> list[dict]:
    """A job's results as `osaas job results --format json` prints them, asked in-process;
    `job_results_command` runs the command."""
    async with aiohttp.ClientSession() as session:
        items = await owner.results(session, url, key or operator_key(), job_id)
    return [json.loads(line) for line in linkcheck_report.to_json_lines(linkcheck_report.items(items)).splitlines()]


async def job_results_command(url: str, job_id: int) -> list[dict]:
    """A link-check job's results as `osaas job results --format jsonl` prints them, as the
    link checker's own items (`job_results`)."""
    code, out, err = await osaas("job", "results", str(job_id), "--coordinator", url, "--format", "jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    return [json.loads(line) for line in linkcheck_report.to_json_lines(linkcheck_report.items(rows)).splitlines()]


async def admitted_network(
    workdir: Path, name: str, *dbs: str, where: Mapping[str, Sequence[str]] | None = None
) -> tuple[Path, dict[str, Path]]:
    """A network of the test's own, made with the commands an operator runs: `osaas network
    keygen NAME`, then for each coordinator database in `dbs` (in `workdir`) `osaas coordinator
    key` and `osaas network admit`. The network file (for peers' --network-file and `dht
    lookup`) and each database's certificate (for its `serve --network-cert`). `where`: a
    coordinator's --db and --state-dir arguments, when not its file in `workdir`."""
    network_file, key_file = workdir / f"{name}.network", workdir / f"{name}.key"
    code, _, err = await osaas("network", "keygen", name, "--key", str(key_file), "--out", str(network_file))
    assert code == 0, err
    certificates = {}
    for db in dbs:
        located = (where or {}).get(db) or ("--db", str(workdir / db))
        code, out, err = await osaas("coordinator", "key", *located)
        assert code == 0, err
        cert = workdir / f"{Path(db).stem}.cert"
        code, _, err = await osaas(
            "network", "admit", out.strip(), "--network-file", str(network_file), "--key", str(key_file),
            "--out", str(cert),
        )  # fmt: skip
        assert code == 0, err
        certificates[db] = cert
    return network_file, certificates
