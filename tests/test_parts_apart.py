"""The parts run apart, as an operator, volunteers and an owner would run them.

Real `osaas coordinator serve` and `osaas peer run` processes; the coordinator (or its store's
process) is killed with SIGKILL mid-job and restarted on the same database; peers are stopped
with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.dashboard import operator_token
from tests.processes import (
    job_results,
    job_results_command,
    job_status,
    job_status_command,
    operator_key,
    osaas,
    start,
    start_coordinator,
    stopped_on_exit,
    wait_until_done,
    wait_until_serving,
)
from tests.sites import RequestLog, free_port, generated_site_app, generated_site_urls, serve

pytestmark = pytest.mark.timeout(240)

PAGES = 80
SIGTERM_PAGES = 15  # each answered in 2 s: a unit is still running when the peer is stopped


def _store_process(coordinator: asyncio.subprocess.Process) -> int:
    """The pid of the coordinator's store process (its spawned child that is not
    multiprocessing's resource tracker)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == coordinator.pid and b"spawn_main" in command and b"resource_tracker" not in command:
            return int(entry.name)
    raise AssertionError(f"coordinator {coordinator.pid} runs no store process")


@pytest.mark.parametrize("killed", ["coordinator", "store process"])
async def test_kill_9_coordinator_mid_job_and_every_url_reported_once(tmp_path: Path, killed: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / "coordinator.sqlite"
    processes: list[asyncio.subprocess.Process] = []
    async with serve(generated_site_app(RequestLog(), pages=PAGES, delay=0.02)) as site, stopped_on_exit(processes):
        operator = operator_key().public_hex
        listen = f"127.0.0.1:{port}"
        serve_args: tuple[str, ...] = (
            "coordinator",
            "serve",
            "--listen",
            listen,
            "--db",
            str(db),
            "--operator-key",
            operator,
        )
        serve_args += ("--host-min-delay", "0.1")  # pacing is not under test here
        coordinator = await start(*serve_args, "--unit-size", "15", log=tmp_path / "coordinator.log")
        processes.append(coordinator)
        await wait_until_serving(url, tmp_path / "coordinator.log")
        for i in range(2):
            processes.append(
                await start(
                    "peer",
                    "run",
                    "--coordinator",
                    url,
                    "--data-dir",
                    str(tmp_path / f"peer-{i}"),
                    "--allow-private",
                    "--slots",
                    "2",
                    log=tmp_path / f"peer-{i}.log",
                )
            )
        code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
        assert code == 0, err
        job_id = int(out)

        while (status := await job_status(url, job_id))["items_done"] < 20:
            assert status["state"] == "running", "the job finished before the coordinator could be killed"
            await asyncio.sleep(0.1)
        if killed == "coordinator":
            coordinator.send_signal(signal.SIGKILL)
            await coordinator.wait()
        else:
            # The coordinator cannot work without its store: it stops, saying why in one line.
            os.kill(_store_process(coordinator), signal.SIGKILL)
            assert await asyncio.wait_for(coordinator.wait(), timeout=30) != 0
            last = (tmp_path / "coordinator.log").read_text().strip().splitlines()[-1]
            assert last == "osaas: error: the store process ended (exit code -9)", last
        await asyncio.sleep(1.0)  # peers finish units meanwhile and must keep their reports
        coordinator = await start(*serve_args, "--unit-size", "15", log=tmp_path / "coordinator.log")
        processes.append(coordinator)
        await wait_until_serving(url, tmp_path / "coordinator.log")

        status = await wait_until_done(url, job_id)
        assert status["state"] == "done", status

        items = await job_results(url, job_id)
        # The owner's commands say the same as the API the other tests ask in-process.
        assert await job_results_command(url, job_id) == items
        assert await job_status_command(url, job_id) == await job_status(url, job_id)
        ok, broken = generated_site_urls(site, PAGES)
        urls = [i["url"] for i in items]
        assert sorted(urls) == sorted(ok | broken)  # every URL, each exactly once
        assert {i["url"] for i in items if i["result"] == "ok"} == ok
        assert {i["url"] for i in items if i["result"] == "broken"} == broken

        # SIGTERM: peers stop cleanly.
        for peer in processes[1:3]:
            peer.send_signal(signal.SIGTERM)
        for peer in processes[1:3]:
            assert await asyncio.wait_for(peer.wait(), timeout=30) == 0


async def test_sigterm_releases_leases_and_another_peer_finishes(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes: list[asyncio.subprocess.Process] = []
    async with (
        serve(generated_site_app(RequestLog(), pages=SIGTERM_PAGES, delay=2.0)) as site,
        stopped_on_exit(processes),
    ):
        # As an operator with a log collector runs it: JSON lines into a rotated file.
        log_file = tmp_path / "coordinator.jsonl"
        await start_coordinator(
            processes, tmp_path, port, "--unit-size", "10", "--log-format", "json", "--log-file", str(log_file)
        )
        first = await start(
            "peer",
            "run",
            "--coordinator",
            url,
            "--data-dir",
            str(tmp_path / "peer-a"),
            "--allow-private",
            "--stop-grace",
            "0.2",
            log=tmp_path / "peer-a.log",
        )
        processes.append(first)
        code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
        job_id = int(out)
        # Units: 1 is "/", 2 is /p/0, 3 holds /p/1../p/3 (2 s each): stop the peer while it runs 3.
        while "unit 3: job" not in (tmp_path / "peer-a.log").read_text():
            await asyncio.sleep(0.1)
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), timeout=40) == 0
        assert "releasing its lease" in (tmp_path / "peer-a.log").read_text()

        second = await start(
            "peer",
            "run",
            "--coordinator",
            url,
            "--data-dir",
            str(tmp_path / "peer-b"),
            "--allow-private",
            log=tmp_path / "peer-b.log",
        )
        processes.append(second)
        status = await wait_until_done(url, job_id, polls=600)
        ok, broken = generated_site_urls(site, SIGTERM_PAGES)
        assert status["state"] == "done" and status["items_done"] == len(ok | broken), status
        await _metrics_and_log_tell_the_same(url, tmp_path / "c.sqlite", log_file)
        await _exported_then_deleted(url, job_id, tmp_path / "export.jsonl", len(ok | broken))


async def _exported_then_deleted(url: str, job_id: int, export: Path, items: int) -> None:
    """The owner keeps a copy of the job, deletes it, and is told plainly that it is gone."""
    code, _, err = await osaas("job", "export", str(job_id), "--coordinator", url, "--output", str(export))
    assert code == 0, err
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert lines[0]["kind"] == "job" and lines[0]["status"]["state"] == "done"
    assert sum(line["kind"] == "result" for line in lines) == items
    code, out, err = await osaas("job", "delete", str(job_id), "--coordinator", url)
    assert code == 0 and f"job {job_id} " in out and "deleted" in out, (out, err)
    code, out, err = await osaas("job", "results", str(job_id), "--coordinator", url)
    assert code == 2 and f"job {job_id}'s results and logs were deleted on" in err, (out, err)
    assert len(err.strip().splitlines()) == 1


async def _metrics_and_log_tell_the_same(url: str, db: Path, log_file: Path) -> None:
    """/metrics (with the operator's token) counted the released unit and the ones done; the
    log is one JSON object a line, with no line per request (those are DEBUG)."""
    token = operator_token(db)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status == 200
        text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    done = samples[("osaas_units_reported_total", (("outcome", "done"),))]
    assert done >= 3 and samples[("osaas_units_leased_total", ())] > done  # unit 3 was leased twice
    assert samples[("osaas_store_up", ())] == 1
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any("listening on" in line["message"] for line in lines)
    assert not any("/v1/leases" in line["message"] for line in lines)
