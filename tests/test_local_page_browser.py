"""The volunteer's local page in headless Chromium (Debian's, driven by Playwright) against a
live peer: the page shows the work moving; Pause pauses the real peer and Resume resumes it;
a budget typed into the form is applied and saved, a bad one is refused with its reason; a page
opened without the token can look but not change anything; and the volunteer sends the peer to
another coordinator, which then gets its work done."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from peer.agent import PAUSED_BY_VOLUNTEER
from tests.browser import CHROMIUM_ARGS, chromium_path
from tests.processes import osaas, start_coordinator, start_peer, stopped_on_exit, wait_until_done
from tests.sites import RequestLog, free_port, generated_site_app, serve

pytestmark = pytest.mark.timeout(240)


async def peer_status(port: int) -> dict:
    code, out, err = await osaas("peer", "status", "--status-port", str(port), "--json")
    assert code == 0, err
    return json.loads(out)


async def test_the_volunteer_pauses_resumes_and_sets_a_budget_in_the_browser(tmp_path: Path) -> None:
    chromium = chromium_path()
    from playwright.async_api import async_playwright, expect

    log = RequestLog()
    coordinator_port, other_port, status_port = free_port(), free_port(), free_port()
    url, other = f"http://127.0.0.1:{coordinator_port}", f"http://127.0.0.1:{other_port}"
    config = tmp_path / "peer.toml"
    processes: list[asyncio.subprocess.Process] = []
    async with serve(generated_site_app(log, pages=80, delay=0.2)) as site, stopped_on_exit(processes):
        await start_coordinator(processes, tmp_path, coordinator_port, "--unit-size", "3", "--host-min-delay", "0.1")
        await start_coordinator(
            processes,
            tmp_path,
            other_port,
            "--unit-size",
            "3",
            "--host-min-delay",
            "0.1",
            db="other.sqlite",
            log="other.log",
        )
        await start_peer(
            processes,
            url,
            tmp_path / "peer",
            "--name",
            "study",
            "--status-port",
            str(status_port),
            config=config,
            log=tmp_path / "peer.log",
        )
        code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
        assert code == 0, err
        job_id = int(out)
        for _ in range(100):
            code, page_url, err = await osaas(
                "peer", "page", "--data-dir", str(tmp_path / "peer"), "--status-port", str(status_port)
            )
            if code == 0:
                break
            await asyncio.sleep(0.1)
        assert code == 0, err

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(page_url.strip())
                assert "#token" not in page.url  # the token leaves the address bar at once
                await expect(page.locator("#name")).to_have_text("study", timeout=20_000)
                await expect(page.locator("#state")).to_contain_text("working", timeout=30_000)
                # The work moves on the page.
                before = await page.locator("#totals").text_content()
                await expect(page.locator("#totals")).not_to_have_text(before or "", timeout=30_000)
                # Whether workloads run confined, and what each bundle it runs may do.
                await expect(page.locator("#sandbox")).to_contain_text("workloads run in a sandbox")
                await expect(page.locator("#bundles")).to_contain_text("may fetch web pages through this peer")

                await page.click("#pause")
                await expect(page.locator("#state")).to_have_text("paused", timeout=10_000)
                await expect(page.locator("#why")).to_have_text(PAUSED_BY_VOLUNTEER)
                status = await peer_status(status_port)
                assert (status["state"], status["paused"], status["units"]) == ("paused", PAUSED_BY_VOLUNTEER, [])
                await asyncio.sleep(1.0)  # a fetch under way may end
                while_paused = len(log.requests)
                await asyncio.sleep(2.0)
                assert len(log.requests) == while_paused, "the paused peer fetched"
                assert await page.locator("#pause").is_disabled()

                await page.click("#resume")
                await expect(page.locator("#state")).not_to_have_text("paused", timeout=10_000)
                assert (await peer_status(status_port))["paused"] is None

                await page.fill("#max_down", "300KB/s")
                await page.fill("#max_fetches", "2")
                await page.click("#save")
                await expect(page.locator("#message")).to_have_text("budget saved", timeout=10_000)
                budget = (await peer_status(status_port))["budget"]
                assert (budget["max_down"], budget["max_fetches"]) == (300_000, 2)
                assert 'max_down = "300kB/s"' in config.read_text() and "max_fetches = 2" in config.read_text()
                await expect(page.locator("#max_down")).to_have_value("300kB/s")

                await page.fill("#max_down", "fast")
                await page.click("#save")
                await expect(page.locator("#message.error")).to_contain_text("fast", timeout=10_000)
                assert (await peer_status(status_port))["budget"]["max_down"] == 300_000

                # Without the token the page shows the peer but cannot change it.
                stranger = await browser.new_page()
                await stranger.goto(f"http://127.0.0.1:{status_port}/")
                await expect(stranger.locator("#tokenless")).to_be_visible(timeout=10_000)
                # The page disables its controls once it read the status: wait for it, do not race it.
                for control in ("#pause", "#save", "#switch"):
                    await expect(stranger.locator(control)).to_be_disabled(timeout=10_000)

                # Its job done, the volunteer sends the peer to work for another coordinator.
                assert (await wait_until_done(url, job_id))["state"] == "done"
                # A short job there: the site's last pages (the crawl is the same as above).
                code, out, err = await osaas("job", "submit", f"{site}/p/75", "--coordinator", other)
                assert code == 0, err
                other_job = int(out)
                await expect(page.locator("#coordinator_url")).to_have_value(url)
                await page.fill("#coordinator_url", other)
                await page.click("#switch")
                await expect(page.locator("#message")).to_have_text(f"now working for {other}", timeout=10_000)
                await expect(page.locator("#coordinator")).to_have_text(other, timeout=30_000)
                assert (await wait_until_done(other, other_job))["state"] == "done"
                assert f'coordinator = "{other}"' in (tmp_path / "work.toml").read_text()
            finally:
                await browser.close()
        token = page_url.strip().rsplit("#token=", 1)[1]
        assert token not in (tmp_path / "peer.log").read_text()  # tokens never reach a log
