"""The volunteer's local page on a real (not running) Agent: served on 127.0.0.1 only, to
requests that name it; changes only with the token; a budget is applied and saved, and bad
input gets a one-line error and changes nothing."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from peer.agent import PAUSED_BY_VOLUNTEER, Agent, PeerSettings
from peer.budget import Budget, load_budget, parse_rate
from peer.local_page import TOKEN_FILE, TOKEN_HEADER, load_or_create_token, page_url, serve_local_page
from peer.work_choice import WORK_FILE
from peer.work_choice import load as load_work_choice


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(
        PeerSettings(
            data_dir=tmp_path / "peer",
            coordinator="http://127.0.0.1:9",
            config_path=tmp_path / "peer.toml",
            budget=Budget(max_down=parse_rate("1MB/s")),
        )
    )


@pytest.fixture
async def page(agent: Agent) -> AsyncIterator[tuple[str, str]]:
    token = load_or_create_token(agent.settings.data_dir)
    async with serve_local_page(0, agent, token) as port:
        assert port is not None
        yield f"http://127.0.0.1:{port}", token


async def post(base: str, path: str, token: str | None, body: object = None, **headers: str) -> tuple[int, dict]:
    sent = {**headers, **({TOKEN_HEADER: token} if token is not None else {})}
    async with aiohttp.ClientSession() as session:
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        async with session.post(base + path, data=data, headers=sent) as response:
            return response.status, await response.json()


async def test_the_token_is_made_once_and_only_its_owner_can_read_it(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    assert len(token) >= 32 and load_or_create_token(tmp_path) == token
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600
    assert page_url(8701, token) == f"http://127.0.0.1:8701/#token={token}"


async def test_the_page_and_status_are_served_to_this_server_only(page: tuple[str, str]) -> None:
    base, _ = page
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/") as response:
            assert response.status == 200 and response.content_type == "text/html"
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
            assert "<script src" not in await response.text()  # nothing from elsewhere
        async with session.get(base + "/status") as response:
            assert (await response.json())["state"] == "looking" and response.headers["Cache-Control"] == "no-store"
        async with session.get(base + "/budget") as response:
            assert await response.json() == {
                "max_down": "1MB/s",
                "max_up": "",
                "cap": "",
                "max_fetches": "",
                "active_hours": "",
            }
        # A site whose name was pointed at 127.0.0.1 (DNS rebinding) reads nothing.
        async with session.get(base + "/status", headers={"Host": "attacker.test:80"}) as response:
            assert response.status == 403 and "answers only as 127.0.0.1" in (await response.json())["error"]
    port = int(base.rsplit(":", 1)[1])
    listening = [c for c in _tcp_listeners() if c[1] == port]
    assert listening and all(address == "127.0.0.1" for address, _ in listening)


async def test_pause_and_resume_need_the_token(page: tuple[str, str], agent: Agent) -> None:
    base, token = page
    for wrong in (None, "", token[:-1] + "x"):
        code, answer = await post(base, "/control/pause", wrong)
        assert code == 403 and "token" in answer["error"]
    assert agent.status().state == "looking"
    code, answer = await post(base, "/control/pause", token)
    assert (code, answer) == (200, {"ok": True, "message": "paused"})
    status = agent.status()
    assert (status.state, status.paused, status.resume_at) == ("paused", PAUSED_BY_VOLUNTEER, None)
    assert (await post(base, "/control/resume", token))[0] == 200
    assert agent.status().state == "looking"


async def test_a_budget_is_applied_and_saved_and_bad_forms_change_nothing(page: tuple[str, str], agent: Agent) -> None:
    base, token = page
    config = agent.settings.config_path
    assert config is not None
    form = {
        "max_down": "300KB/s",
        "max_up": "",
        "cap": "2GB/week",
        "max_fetches": "4",
        "active_hours": "08:00-12:00, 13:00-18:00",
    }
    code, answer = await post(base, "/control/budget", token, form)
    assert (code, answer["message"]) == (200, "budget saved")
    budget = agent.allowance.budget
    assert (budget.max_down, budget.max_up, budget.cap_bytes, budget.cap_period, budget.max_fetches) == (
        300_000,
        None,
        2_000_000_000,
        "week",
        4,
    )
    assert budget.active_hours.to_strings() == ["08:00-12:00", "13:00-18:00"]
    assert agent.allowance.down.rate == 300_000
    assert load_budget(config) == budget
    saved = config.read_text()

    bad = [
        ({"max_down": "fast"}, 400, "download limit: 'fast' is not a rate"),
        ({"max_fetches": "0"}, 400, "fetches at once: 0 is not"),
        ({"active_hours": "25:00-26:00"}, 400, "active hours: '25:00-26:00'"),
        ({"max_down": 5}, 400, "must be text"),
        ({"colour": "blue"}, 400, "keys among"),
        ([1, 2], 400, "keys among"),
        ({"cap": "x" * 5000}, 413, "larger than"),
    ]
    for body, status, words in bad:
        code, answer = await post(base, "/control/budget", token, body)
        assert code == status and words in answer["error"] and "\n" not in answer["error"], (body, answer)
    code, answer = await post(base, "/control/budget", token, None, **{})
    assert code == 400
    async with aiohttp.ClientSession() as session:
        for data, content_type, status in (
            (b"\xff{", "application/json", 400),
            (b"max_down=1", "application/x-www-form-urlencoded", 415),
        ):
            async with session.post(
                base + "/control/budget", data=data, headers={TOKEN_HEADER: token, "Content-Type": content_type}
            ) as response:
                assert response.status == status
    assert agent.allowance.budget == budget and config.read_text() == saved


async def test_a_taken_port_leaves_the_peer_without_a_page(agent: Agent) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        async with serve_local_page(taken.getsockname()[1], agent, "t" * 40) as port:
            assert port is None


def _tcp_listeners() -> list[tuple[str, int]]:
    """(address, port) of the IPv4 TCP sockets listening on this machine (/proc/net/tcp)."""
    found = []
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                hex_address, hex_port = local.split(":")
                address = socket.inet_ntoa(bytes.fromhex(hex_address)[::-1])
                found.append((address, int(hex_port, 16)))
    return found


async def test_whom_to_work_for_is_changed_with_the_token_and_kept(page: tuple[str, str], agent: Agent) -> None:
    base, token = page
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/work") as response:
            assert await response.json() == {
                "by_url": True,
                "coordinator": "http://127.0.0.1:9",
                "network": "public",
                "prefer": "",
            }
    assert (await post(base, "/control/work", None, {"coordinator": "http://127.0.0.1:10"}))[0] == 403
    code, answer = await post(base, "/control/work", token, {"network": "lab"})
    assert code == 400 and "works for one coordinator by its URL" in answer["error"]
    code, answer = await post(base, "/control/work", token, {"coordinator": "file:///etc/passwd"})
    assert code == 400 and "not an http(s) URL" in answer["error"]
    assert agent.work_choice.coordinator == "http://127.0.0.1:9"
    code, answer = await post(base, "/control/work", token, {"coordinator": "http://127.0.0.1:10/"})
    assert (code, answer["message"]) == (200, "now working for http://127.0.0.1:10")
    assert agent.work_choice.coordinator == "http://127.0.0.1:10"
    config = agent.settings.config_path
    assert config is not None
    assert load_work_choice(config.with_name(WORK_FILE)).coordinator == "http://127.0.0.1:10"
