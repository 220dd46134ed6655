"""The workload runner against real subprocesses: a well-behaved workload and hostile ones."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from aiohttp import web

from peer.egress import Egress, EgressConfig
from peer.platform import ResourceLimits
from peer.runner import WorkloadOutcome, run_workload
from workloads.process_api import ExitCode, FetchError, FetchRequest, FetchResult, Unit, encode_frame

BEHAVE = [sys.executable, str(Path(__file__).parent / "workloads" / "behave.py")]


async def answer_ok(request: FetchRequest) -> FetchResult:
    return FetchResult(id=request.id, url=request.url, status=200, body=b"body of " + request.url.encode())


async def run(mode: str, fetch=answer_ok, tmp_path: Path | None = None, **kwargs) -> WorkloadOutcome:
    payload = {"mode": mode, **kwargs.pop("payload", {})}
    return await run_workload(BEHAVE, Unit(unit_id=42, payload=payload), fetch, workdir_parent=tmp_path, **kwargs)


def assert_failed(outcome: WorkloadOutcome, error: str) -> None:
    assert (outcome.exit_code, outcome.payload, outcome.error) == (ExitCode.FAILED, None, error)


async def test_well_behaved_workload_gets_its_fetches_answered(tmp_path: Path) -> None:
    urls = ["http://a.example/1", "http://a.example/2"]
    outcome = await run("fetch", payload={"urls": urls}, tmp_path=tmp_path)
    assert outcome.exit_code is ExitCode.OK
    assert outcome.error is None
    assert outcome.payload == {
        "unit_id": 42,
        "results": [
            {"id": 1, "url": urls[0], "status": 200, "error": None, "body": "body of " + urls[0]},
            {"id": 2, "url": urls[1], "status": 200, "error": None, "body": "body of " + urls[1]},
        ],
    }
    assert list(tmp_path.iterdir()) == []


async def test_workload_fetches_through_a_real_egress() -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"page {request.match_info['n']}")

    app = web.Application()
    app.router.add_get("/page/{n}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    urls = [f"http://127.0.0.1:{port}/page/1", f"http://127.0.0.1:{port}/page/2", "http://gone.invalid/"]
    try:
        async with Egress(EgressConfig(allow_private=True)) as egress:
            outcome = await run("fetch", fetch=egress.fetch, payload={"urls": urls})
    finally:
        await runner.cleanup()
    assert outcome.exit_code is ExitCode.OK
    assert outcome.payload is not None
    assert [(r["status"], r["error"], r["body"]) for r in outcome.payload["results"]] == [
        (200, None, "page 1"),
        (200, None, "page 2"),
        (None, "dns", ""),
    ]


async def test_fetches_beyond_the_allowance_are_answered_limit() -> None:
    urls = ["http://a.example/1", "http://a.example/2", "http://a.example/3"]
    outcome = await run("fetch", payload={"urls": urls}, max_fetches=2)
    assert outcome.exit_code is ExitCode.OK
    assert outcome.payload is not None
    assert [r["error"] for r in outcome.payload["results"]] == [None, None, FetchError.LIMIT.value]


async def test_without_the_fetch_capability_fetches_are_answered_policy() -> None:
    urls = ["http://a.example/1", "http://a.example/2"]
    outcome = await run("fetch", fetch=None, payload={"urls": urls})
    assert outcome.exit_code is ExitCode.OK
    assert outcome.payload is not None
    assert [(r["status"], r["error"], r["body"]) for r in outcome.payload["results"]] == [
        (None, FetchError.POLICY.value, ""),
        (None, FetchError.POLICY.value, ""),
    ]


async def test_bundle_env_is_added_but_cannot_move_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/volunteer/own/path")
    bundle_root = tmp_path / "bundle"
    env = {"PYTHONPATH": str(bundle_root), "HOME": "/elsewhere"}
    outcome = await run("env", tmp_path=tmp_path, env=env)
    assert outcome.exit_code is ExitCode.OK
    assert outcome.payload is not None
    assert "PYTHONPATH" in outcome.payload["env"]
    assert outcome.payload["home"] == outcome.payload["tmpdir"] == outcome.payload["cwd"]
    assert Path(outcome.payload["cwd"]).parent == tmp_path


@pytest.mark.parametrize(
    ("status", "expected"), [(0, ExitCode.OK), (1, ExitCode.PARTIAL), (2, ExitCode.FAILED), (3, ExitCode.BAD_INPUT)]
)
async def test_result_status_becomes_the_outcome(status: int, expected: ExitCode) -> None:
    outcome = await run("status", payload={"status": status})
    assert (outcome.exit_code, outcome.payload, outcome.error) == (expected, {"said": status}, None)
    assert outcome.stderr_tail == "about to finish\n"


async def test_exit_code_disagreeing_with_result_fails() -> None:
    outcome = await run("status", payload={"status": 0, "exit": 1})
    assert_failed(outcome, "workload's result says OK (0) but it exited with code 1")


async def test_environment_is_scrubbed_and_workdir_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSAAS_TEST_SECRET", "do not leak")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("PYTHONPATH", "/volunteer/own/path")  # names the volunteer's files: not passed on
    for name in ("LC_ALL", "LC_CTYPE"):
        monkeypatch.delenv(name, raising=False)
    outcome = await run("env", tmp_path=tmp_path)
    assert outcome.exit_code is ExitCode.OK
    assert outcome.payload is not None
    assert outcome.payload["env"] == ["HOME", "LANG", "PATH", "TMPDIR"]
    workdir = outcome.payload["cwd"]
    assert outcome.payload["home"] == outcome.payload["tmpdir"] == workdir
    assert Path(workdir).parent == tmp_path
    assert not Path(workdir).exists()


async def test_resource_limits_apply_in_the_workload() -> None:
    limits = ResourceLimits(cpu_seconds=30, memory_bytes=512 * 1024 * 1024, open_files=32)
    outcome = await run("limits", limits=limits)
    assert outcome.payload == {"RLIMIT_CPU": 30, "RLIMIT_AS": 512 * 1024 * 1024, "RLIMIT_NOFILE": 32}


async def test_garbage_on_stdout_fails() -> None:
    outcome = await run("garbage")
    assert_failed(outcome, "workload broke the process API: frame of 1751477356 bytes exceeds the 16777216-byte limit")


async def test_oversized_frame_header_fails() -> None:
    outcome = await run("oversized")
    assert_failed(outcome, "workload broke the process API: frame of 4294967295 bytes exceeds the 16777216-byte limit")


async def test_crash_fails_with_the_log_tail() -> None:
    outcome = await run("crash")
    assert_failed(outcome, "workload exited with code 1 without a result")
    assert outcome.stderr_tail.endswith("RuntimeError: the workload fell over\n")


async def test_exit_without_result_fails() -> None:
    outcome = await run("no_result")
    assert_failed(outcome, "workload exited with code 0 without a result")


async def test_unknown_frame_type_fails() -> None:
    assert_failed(await run("unknown"), "workload sent a frame of unexpected type 'hello'")


async def test_a_version_2_workload_tells_its_progress_and_a_version_1_may_not() -> None:
    said: list[int] = []
    unit = Unit(unit_id=42, payload={"mode": "progress"}, version=2)
    outcome = await run_workload(BEHAVE, unit, answer_ok, progressed=said.append)
    assert (outcome.exit_code, outcome.payload, said) == (ExitCode.OK, {"version": 2}, [1, 2])
    assert_failed(await run("progress"), "workload sent a frame of unexpected type 'progress'")


def streaming(streamed: int, items: int = 3) -> Unit:
    records = [{"url": f"http://a.example/{n}"} for n in range(items)]
    return Unit(unit_id=42, payload={"mode": "stream", "items": records, "streamed": streamed}, version=2)


async def test_a_version_2_workload_streams_items_before_its_result() -> None:
    handed: list[tuple[dict, int]] = []

    async def streamed(record: dict, size: int) -> None:
        handed.append((record, size))

    outcome = await run_workload(BEHAVE, streaming(2), answer_ok, streamed=streamed)
    assert (outcome.exit_code, outcome.payload) == (ExitCode.OK, {"items": [{"url": "http://a.example/2"}]})
    assert [record for record, _ in handed] == [{"url": "http://a.example/0"}, {"url": "http://a.example/1"}]
    assert all(size == len(encode_frame({"type": "item", "record": r})) for r, size in handed)


async def test_streamed_items_go_first_in_the_result_without_anyone_to_hand_them_to() -> None:
    outcome = await run_workload(BEHAVE, streaming(2), answer_ok)
    assert outcome.payload == {"items": [{"url": f"http://a.example/{n}"} for n in range(3)]}


async def test_a_version_1_workload_may_not_stream() -> None:
    unit = Unit(unit_id=42, payload=streaming(1).payload)
    assert_failed(await run_workload(BEHAVE, unit, answer_ok), "workload sent a frame of unexpected type 'item'")


async def test_streaming_more_items_than_the_unit_holds_fails() -> None:
    greedy = streaming(3)
    greedy = Unit(42, {**greedy.payload, "beyond": [{"url": "http://a.example/3"}]}, version=2)
    assert_failed(await run_workload(BEHAVE, greedy, answer_ok), "workload streamed more items than its unit holds (3)")


async def test_streaming_garbage_or_a_huge_item_fails() -> None:
    garbage = Unit(unit_id=42, payload={"mode": "stream_garbage", "items": [{}]}, version=2)
    assert_failed(
        await run_workload(BEHAVE, garbage, answer_ok),
        "workload broke the process API: item frame: field 'record' is missing or has the wrong type",
    )
    huge = Unit(unit_id=42, payload={"mode": "stream_huge", "items": [{}]}, version=2)
    outcome = await run_workload(BEHAVE, huge, answer_ok)
    assert outcome.exit_code is ExitCode.FAILED
    assert outcome.error is not None and outcome.error.startswith("workload streamed an item of 314")
    assert outcome.error.endswith("bytes; at most 2 MiB are allowed")


async def test_reused_fetch_id_fails() -> None:
    assert_failed(await run("reuse_id"), "workload reused fetch id 7")


async def test_writing_after_the_result_fails() -> None:
    assert_failed(await run("after_result"), "workload wrote to stdout after its result")


async def test_fetch_flood_fails() -> None:
    outcome = await run("flood", max_fetches=50)
    assert_failed(outcome, "workload kept fetching after its allowance of 50 fetches was used up")


async def test_stdout_byte_flood_fails() -> None:
    assert_failed(await run("byte_flood"), "workload wrote more than 64 MiB to stdout")


async def test_stdout_ending_inside_a_frame_fails() -> None:
    assert_failed(await run("partial_frame"), "workload's stdout ended inside a frame")


async def test_missing_program_fails_clearly(tmp_path: Path) -> None:
    outcome = await run_workload([str(tmp_path / "nope")], Unit(1, {}), answer_ok, workdir_parent=tmp_path)
    assert outcome.exit_code is ExitCode.FAILED
    assert outcome.error is not None and outcome.error.startswith(f"could not start workload {tmp_path / 'nope'}: ")
    assert list(tmp_path.iterdir()) == []


async def test_hang_is_killed_with_its_whole_process_group() -> None:
    pids: list[int] = []

    async def record(request: FetchRequest) -> FetchResult:
        pids.extend(int(part) for part in request.url.split("/")[-2:])
        return FetchResult(id=request.id, url=request.url, error="dns", message="test")

    outcome = await run("hang", fetch=record, timeout=2)
    assert_failed(outcome, "workload did not finish within 2 s and was killed")
    leader, child = pids
    assert not await _eventually_gone(leader)
    assert not await _eventually_gone(child)
    assert _group_members(leader) == []


async def test_process_that_left_the_group_cannot_hold_the_runner() -> None:
    pids: list[int] = []

    async def record(request: FetchRequest) -> FetchResult:
        pids.extend(int(part) for part in request.url.split("/")[-2:])
        return FetchResult(id=request.id, url=request.url, error="dns", message="test")

    try:
        outcome = await run("escape", fetch=record, timeout=2)
        assert_failed(outcome, "workload did not finish within 2 s and was killed")
        assert not await _eventually_gone(pids[0])
    finally:
        if pids:
            os.kill(pids[1], signal.SIGKILL)


async def test_cancelling_kills_the_workload() -> None:
    started = asyncio.Event()
    pids: list[int] = []

    async def record(request: FetchRequest) -> FetchResult:
        pids.extend(int(part) for part in request.url.split("/")[-2:])
        started.set()
        await asyncio.sleep(60)
        raise AssertionError("never answered")

    task = asyncio.create_task(run("hang", fetch=record))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not await _eventually_gone(pids[0])
    assert not await _eventually_gone(pids[1])


async def _eventually_gone(pid: int) -> bool:
    """False once `pid` is dead (gone or a zombie nobody of ours holds); True if it lives on."""
    for _ in range(500):
        if not _alive(pid):
            return False
        await asyncio.sleep(0.01)
    return True


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _alive(int(entry)):
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def test_units_left_by_a_killed_peer_are_removed_at_the_next_start(tmp_path: Path) -> None:
    from peer.runner import UNIT_DIR_PREFIX, remove_leftovers

    for name in (f"{UNIT_DIR_PREFIX}7-abc", f"{UNIT_DIR_PREFIX}8-def"):
        (tmp_path / name / "deep").mkdir(parents=True)
        (tmp_path / name / "deep" / "file").write_text("left behind")
        (tmp_path / name / "deep").chmod(0o500)  # as a workload may leave it
    (tmp_path / "not-a-unit").mkdir()
    assert remove_leftovers(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["not-a-unit"]
