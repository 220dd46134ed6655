"""The screensaver against a live peer: real coordinator and `osaas peer run` processes check a
local site, then `osaas screensaver` (SDL's offscreen driver) paints the peer's status and saves
a frame. The frame is not blank, and its figures are the ones the peer's status gives: the same
scene painted here from the status document matches it pixel for pixel where nothing moves."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pygame

from screensaver.app import ScreensaverError, status_url, window_from_environment
from screensaver.draw import Painter
from screensaver.view import scene_of
from tests.processes import (
    job_results,
    osaas,
    start_coordinator,
    start_peer,
    stopped_on_exit,
    wait_until_done,
)
from tests.sites import RequestLog, free_port, generated_site_app, serve
from tests.xdisplay import root_window_rgb, xvfb

pytestmark = pytest.mark.timeout(240)

SIZE = (960, 540)


async def screensaver(port: int, shot: Path, frames: int = 15) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "osaas",
        "screensaver",
        "--status-port",
        str(port),
        "--size",
        f"{SIZE[0]}x{SIZE[1]}",
        "--frames",
        str(frames),
        "--snapshot",
        str(shot),
        env={**os.environ, "SDL_VIDEODRIVER": "dummy"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()


def painted(document: dict | None, port: int) -> pygame.Surface:
    surface = pygame.Surface(SIZE)
    Painter(SIZE).draw(surface, scene_of(document, status_url(port)), 0.0)
    return surface


def same_pixels(a: pygame.Surface, b: pygame.Surface, area: pygame.Rect) -> bool:
    return pygame.image.tobytes(a.subsurface(area), "RGB") == pygame.image.tobytes(b.subsurface(area), "RGB")


def colours(surface: pygame.Surface) -> int:
    raw = pygame.image.tobytes(surface, "RGB")
    return len({raw[i : i + 3] for i in range(0, len(raw), 3 * 7)})


async def test_the_screensaver_paints_what_the_live_peer_reports(tmp_path: Path) -> None:
    coordinator_port, status_port = free_port(), free_port()
    url = f"http://127.0.0.1:{coordinator_port}"
    processes: list[asyncio.subprocess.Process] = []
    async with serve(generated_site_app(RequestLog(), pages=30)) as site, stopped_on_exit(processes):
        await start_coordinator(processes, tmp_path, coordinator_port, "--unit-size", "5")
        await start_peer(
            processes,
            url,
            tmp_path / "peer",
            "--name",
            "living-room",
            "--max-down",
            "5MB/s",
            "--status-port",
            str(status_port),
            config=tmp_path / "none.toml",
            log=tmp_path / "peer.log",
        )
        code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
        assert code == 0, err
        job_id = int(out)
        assert (await wait_until_done(url, job_id))["state"] == "done"
        results = await job_results(url, job_id)

        code, out, err = await osaas("peer", "status", "--status-port", str(status_port), "--json")
        assert code == 0, err
        document = json.loads(out)
        scene = scene_of(document, status_url(status_port))
        # The one peer checked every URL: its counts are the job's.
        assert scene.ok == sum(1 for r in results if r["result"] == "ok") > 0
        assert scene.broken == sum(1 for r in results if r["result"] == "broken") > 0
        assert scene.name == "living-room" and scene.coordinator == url
        assert {line.url for line in scene.checked} <= {r["url"] for r in results}
        # It was given its coordinator (no DHT), and it seeds the link-check bundle it ran.
        assert scene.neighbours is None and [s.label.split()[0] for s in scene.swarms] == ["linkcheck"]

        shot = tmp_path / "frame.png"
        await screensaver(status_port, shot)
        frame = pygame.image.load(str(shot))
        assert frame.get_size() == SIZE
        assert colours(frame) > 50  # text, gauges and a gradient, not a blank screen
        # The header (name, state) and the counters do not move: they match the scene of the
        # status document, painted here.
        u = Painter(SIZE).unit
        header = pygame.Rect(0, 0, SIZE[0], u * 7)
        counters = pygame.Rect(SIZE[0] * 55 // 100, u * 7, SIZE[0] * 45 // 100, u * 7)
        expected = painted(document, status_port)
        assert same_pixels(frame, expected, header) and same_pixels(frame, expected, counters)
        assert not same_pixels(frame, painted(None, status_port), counters)

    # With the peer gone, the screensaver says so, and how to start one.
    gone = tmp_path / "gone.png"
    await screensaver(status_port, gone, frames=3)
    assert same_pixels(pygame.image.load(str(gone)), painted(None, status_port), pygame.Rect((0, 0), SIZE))


async def test_as_an_xscreensaver_hack_it_draws_on_the_root_window(tmp_path: Path) -> None:
    with xvfb((640, 400)) as display:
        runtime = tmp_path / "run"
        mark = runtime / "osaas" / "screensaver-showing"
        env = {k: v for k, v in os.environ.items() if k != "SDL_VIDEODRIVER"} | {
            "DISPLAY": display,
            "XDG_RUNTIME_DIR": str(runtime),
        }
        port = free_port()  # no peer there: the scene does not move
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "osaas",
            "screensaver",
            "-root",
            "--status-port",
            str(port),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            expected = pygame.Surface((640, 400))
            Painter((640, 400)).draw(expected, scene_of(None, status_url(port)), 0.0)
            wanted = pygame.image.tobytes(expected, "RGB")
            for _ in range(100):
                assert process.returncode is None, (await process.stderr.read()).decode()  # type: ignore[union-attr]
                size, shown = root_window_rgb(display)
                if shown == wanted:
                    break
                await asyncio.sleep(0.2)
            assert size == (640, 400) and shown == wanted
            assert mark.exists()  # a hack tells a peer run --only-when-idle that nobody is there
        finally:
            process.terminate()
            await process.wait()
        assert process.returncode == 0 and not mark.exists()


def test_the_window_to_draw_into_comes_from_the_flag_or_xscreensaver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XSCREENSAVER_WINDOW", raising=False)
    assert window_from_environment(False, None) is None
    assert window_from_environment(False, "0x1a00007") == 0x1A00007
    monkeypatch.setenv("XSCREENSAVER_WINDOW", "27262983")
    assert window_from_environment(True, None) == 27262983
    with pytest.raises(ScreensaverError, match="not a number"):
        window_from_environment(False, "window")
