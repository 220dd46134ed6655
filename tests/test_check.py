"""`osaas check` end to end: a real coordinator, real peer processes, real sites on loopback."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from pathlib import Path

import pytest

from tests.sites import (
    RequestLog,
    free_port,
    generated_site_app,
    generated_site_urls,
    hard_cases_app,
    other_host_app,
    serve,
)

pytestmark = pytest.mark.timeout(180)


async def osaas(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "osaas",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
    )
    out, err = await process.communicate()
    assert process.returncode is not None  # communicate() waited for it
    return process.returncode, out.decode(), err.decode()


def read_json_lines(path: Path) -> dict[str, dict]:
    items = [json.loads(line) for line in path.read_text().splitlines()]
    by_url = {item["url"]: item for item in items}
    assert len(by_url) == len(items), "a URL was reported twice"
    return by_url


async def test_hard_cases_are_classified_exactly(tmp_path: Path) -> None:
    main_log, other_log = RequestLog(), RequestLog()
    closed = free_port()
    async with serve(other_host_app(other_log), host="127.0.0.2") as other:
        async with serve(hard_cases_app(main_log, other, closed)) as base:
            out = tmp_path / "report.jsonl"
            code, _, err = await osaas(
                "check",
                f"{base}/",
                "--peers",
                "2",
                "--format",
                "json",
                "--output",
                str(out),
                "--allow-private",
                "--no-progress",
            )
    assert code == 1, err
    items = read_json_lines(out)
    expected = {
        f"{base}/": ("ok", 200),
        f"{base}/chain/1": ("ok", 200),
        f"{base}/loop/a": ("error", 302),  # the last answer was a redirect back
        f"{base}/to-404": ("broken", 404),
        f"{base}/missing": ("broken", 404),
        f"{base}/gone": ("broken", 410),
        f"{base}/boom": ("broken", 500),
        f"{other}/head-405": ("ok", 200),
        f"{base}/busy-429": ("ok", 200),
        f"{base}/busy-503": ("ok", 200),
        f"{base}/private/secret.html": ("excluded", None),
        f"{base}/base/page.html": ("ok", 200),
        f"{base}/based/target.html": ("ok", 200),
        f"{base}/srcset.html": ("ok", 200),
        f"{base}/img/a.png": ("ok", 200),
        f"{base}/img/missing.png": ("broken", 404),
        f"{base}/q?a=1&b=2": ("ok", 200),
        f"{base}/caf%C3%A9.html": ("ok", 200),
        f"{other}/ok": ("ok", 200),
        f"http://127.0.0.1:{closed}/": ("error", None),
        "http://no-such-host.invalid/": ("error", None),
    }
    assert {url: (i["result"], i["status"]) for url, i in items.items()} == expected

    chain = items[f"{base}/chain/1"]
    assert chain["redirects"] == [f"{base}/chain/2", f"{base}/chain/3"]
    assert chain["final_url"] == f"{base}/chain/3"
    assert items[f"{base}/to-404"]["final_url"] == f"{base}/missing"
    assert "loop" in items[f"{base}/loop/a"]["error"]
    assert "robots" in items[f"{base}/private/secret.html"]["error"]
    assert items[f"{base}/based/target.html"]["referrers"] == [f"{base}/base/page.html"]
    assert items[f"{base}/img/missing.png"]["referrers"] == [f"{base}/srcset.html"]
    assert items[f"{base}/"]["referrers"] == [f"{base}/"]  # through its "#top" link
    assert items[f"{base}/missing"]["referrers"] == [f"{base}/"]
    # robots.txt exclusions are never fetched; other hosts are checked, never crawled.
    assert "/private/secret.html" not in main_log.paths()
    assert "/never-crawled" not in other_log.paths()
    assert ("HEAD", "/head-405") in other_log.requests and ("GET", "/head-405") in other_log.requests


async def test_every_page_of_a_site_reported_once_in_every_format(tmp_path: Path) -> None:
    log = RequestLog()
    async with serve(generated_site_app(log, pages=60)) as base:
        formats = ("json", "csv", "html", "text")

        async def check(fmt: str) -> str:
            out = tmp_path / f"report.{fmt}"
            code, _, err = await osaas(
                "check",
                f"{base}/",
                "--peers",
                "3",
                "--format",
                fmt,
                "--output",
                str(out),
                "--allow-private",
                "--no-progress",
            )
            assert code == 1, err
            return out.read_text()

        # Four checks at once, each its own network: most of a check's time is waiting.
        outputs = dict(zip(formats, await asyncio.gather(*(check(fmt) for fmt in formats)), strict=True))
    ok, broken = generated_site_urls(base, 60)
    items = {json.loads(line)["url"]: json.loads(line) for line in outputs["json"].splitlines()}
    assert len(outputs["json"].splitlines()) == len(ok | broken)
    assert {u for u, i in items.items() if i["result"] == "ok"} == ok
    assert {u for u, i in items.items() if i["result"] == "broken"} == broken
    rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    assert {r["url"] for r in rows if r["result"] == "broken"} == broken
    for url in broken:
        assert url in outputs["html"] and url in outputs["text"]
    assert outputs["text"].startswith(f"Checked {len(ok | broken)} URLs: {len(ok)} ok, {len(broken)} broken")


async def test_depth_limits_the_crawl(tmp_path: Path) -> None:
    async with serve(generated_site_app(RequestLog(), pages=40)) as base:
        out = tmp_path / "r.jsonl"
        code, _, err = await osaas(
            "check",
            f"{base}/",
            "--depth",
            "1",
            "--peers",
            "1",
            "--format",
            "json",
            "--output",
            str(out),
            "--allow-private",
            "--no-progress",
        )
    # Crawled: "/" (depth 0) and /p/0 (depth 1); the links on /p/0 are checked, not crawled.
    assert code == 1, err
    assert set(read_json_lines(out)) == {
        f"{base}/",
        f"{base}/p/0",
        f"{base}/p/1",
        f"{base}/p/2",
        f"{base}/p/3",
        f"{base}/p/40",
    }


async def test_nothing_broken_exits_zero(tmp_path: Path) -> None:
    async with serve(generated_site_app(RequestLog(), pages=5)) as base:
        code, out, err = await osaas("check", f"{base}/p/1", "--depth", "0", "--allow-private", "--no-progress")
    assert code == 0, err
    assert out.startswith("Checked 4 URLs: 4 ok")  # /p/1 and the three pages it links to


@pytest.mark.parametrize(
    "args, message",
    [
        (["not a url"], "not an absolute http(s) URL"),
        (["ftp://example.org/"], "not an absolute http(s) URL"),
        (["http://no-such-host.invalid/"], "cannot check http://no-such-host.invalid/"),
        (["--peers", "0", "http://127.0.0.1/"], "must be at least 1"),
        (["--format", "pdf", "http://127.0.0.1/"], "invalid choice"),
    ],
)
async def test_bad_check_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = await osaas("check", "--no-progress", *args)
    assert code == 2
    assert message in err
    assert out == ""


async def test_unreachable_or_private_seed_exits_2() -> None:
    closed = free_port()
    async with serve(generated_site_app(RequestLog(), pages=3)) as base:
        (code, _, err), (private_code, _, private_err) = await asyncio.gather(
            osaas("check", f"http://127.0.0.1:{closed}/", "--allow-private", "--no-progress"),
            osaas("check", f"{base}/", "--no-progress"),
        )
    assert code == 2
    assert f"cannot check http://127.0.0.1:{closed}/" in err and "refused" in err
    assert private_code == 2
    assert "loopback" in private_err and "--allow-private" in private_err


async def test_demo_runs_and_shows_the_sample_sites_broken_links() -> None:
    code, out, err = await osaas("demo")
    assert code == 0, err
    for expected in (
        "calendar.html",
        "team.html",
        "/gone",
        "/server-error",
        "seed-library.invalid",
        "old-guide.html",
        "nowhere.html",
    ):
        assert expected in out, expected
    assert "members.html" not in out  # excluded by robots.txt, not a broken link
    assert "/old-page\n" not in out  # links are listed under the page served, not the redirect to it


async def test_probe_on_this_machine_is_one_vantage_point_and_says_so() -> None:
    closed = free_port()
    async with serve(other_host_app(RequestLog())) as base:
        code, out, err = await osaas(
            "probe", f"{base}/ok", f"http://127.0.0.1:{closed}/", "--allow-private", "--no-progress"
        )
        many, _, refused = await osaas("probe", f"{base}/ok", "--vantage", "3")
    assert code == 1, err  # a URL no vantage point reached
    assert "probing from one vantage point, this machine" in err
    lines = out.splitlines()
    assert lines[0] == f"{base}/ok: 1 of 1 vantage points answered"
    assert lines[1].startswith("  from 127.0.0.0/16: HTTP 200, dns/connect/tls/first byte/total -/")
    assert lines[2] == f"http://127.0.0.1:{closed}/: 0 of 1 vantage points answered"
    assert lines[3] == (
        f"  from 127.0.0.0/16: error: connection: could not connect to 127.0.0.1:{closed}: Connection refused"
    )
    assert (many, refused.strip()) == (
        2,
        "osaas: error: --vantage 3 needs --coordinator: a network on this machine is one vantage point",
    )
