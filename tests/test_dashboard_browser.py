"""The operator's dashboard in headless Chromium (Debian's, driven by Playwright) against a
real coordinator and peer: the address `osaas coordinator dashboard` prints lets the operator
in, a job's progress moves on the page by itself, the job's page lists its broken links and
offers the report downloads; without the token the browser sees nothing."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.browser import CHROMIUM_ARGS, chromium_path
from tests.processes import osaas, start_coordinator, start_peer, stopped_on_exit, wait_until_done
from tests.sites import RequestLog, free_port, generated_site_app, generated_site_urls, serve

pytestmark = pytest.mark.timeout(240)


async def test_the_operator_watches_a_job_move_and_reads_its_broken_links(tmp_path: Path) -> None:
    chromium = chromium_path()
    from playwright.async_api import async_playwright, expect

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / "c.sqlite"
    processes: list[asyncio.subprocess.Process] = []
    async with serve(generated_site_app(RequestLog(), pages=60, delay=0.2)) as site, stopped_on_exit(processes):
        # At DEBUG, as an operator looking into a problem runs it: a line per request.
        await start_coordinator(
            processes, tmp_path, port, "--unit-size", "3", "--host-min-delay", "0.1", "--log-level", "debug"
        )
        await start_peer(
            processes,
            url,
            tmp_path / "peer",
            "--name",
            "attic",
            "--status-port",
            "off",
            config=tmp_path / "none.toml",
            log=tmp_path / "peer.log",
        )
        code, out, err = await osaas("job", "submit", f"{site}/", "--coordinator", url)
        assert code == 0, err
        job_id = int(out)
        code, address, err = await osaas("coordinator", "dashboard", "--db", str(db), "--url", url)
        assert code == 0 and "?token=" in address, err

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                stranger = await browser.new_page()
                response = await stranger.goto(f"{url}/dashboard/")
                assert response is not None and response.status == 401

                page = await browser.new_page()
                await page.goto(address.strip())
                assert page.url == f"{url}/dashboard/"  # the token left the address
                job_row = page.locator(f'tr[data-job="{job_id}"]')
                await expect(job_row).to_be_visible(timeout=20_000)
                progress = job_row.locator(".progress")
                await expect(progress).to_have_text(re.compile(r"[1-9]\d*/\d+ URLs"), timeout=30_000)
                first = await progress.text_content()
                await expect(progress).not_to_have_text(first or "", timeout=30_000)  # it moves by itself
                await expect(page.locator("svg.share")).to_contain_text("attic")
                await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

                assert (await wait_until_done(url, job_id))["state"] == "done"
                await page.click(f'tr[data-job="{job_id}"] a')
                await expect(page.locator("h1")).to_have_text(f"Job {job_id}")
                _, broken = generated_site_urls(site, 60)
                problems = page.locator("tr.problem")
                await expect(problems).to_have_count(len(broken), timeout=20_000)
                for link in broken:
                    await expect(page.locator("tr.problem", has_text=link)).to_have_count(1)
                async with page.expect_download() as download_info:
                    await page.click("text=CSV")
                download = await download_info.value
                saved = tmp_path / "job.csv"
                await download.save_as(saved)
                assert all(link in saved.read_text() for link in broken)
            finally:
                await browser.close()
        # The login reached the coordinator's access log, but not its token: tokens never reach a log.
        token = address.strip().rsplit("?token=", 1)[1]
        coordinator_log = (tmp_path / "coordinator.log").read_text()
        assert "GET /dashboard/" in coordinator_log and token not in coordinator_log
