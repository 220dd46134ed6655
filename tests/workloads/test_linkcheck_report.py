from __future__ import annotations

import csv
import io
import json

import pytest

from workloads import linkcheck_report as report

ITEMS = [
    {"url": "http://s/", "result": "ok", "status": 200, "final_url": "http://s/", "redirects": [], "error": None, "referrers": [], "depth": 0},
    {"url": "http://s/a", "result": "broken", "status": 404, "final_url": "http://s/a", "redirects": [], "error": "HTTP 404", "referrers": ["http://s/", "http://s/b"], "depth": 1},
    {"url": "http://s/b", "result": "ok", "status": 200, "final_url": "http://s/b", "redirects": [], "error": None, "referrers": ["http://s/"], "depth": 1},
    {"url": "http://x.invalid/", "result": "error", "status": None, "final_url": None, "redirects": [], "error": "name does not resolve", "referrers": ["http://s/b"], "depth": 2},
    {"url": "http://s/p", "result": "excluded", "status": None, "final_url": None, "redirects": [], "error": "disallowed by robots.txt", "referrers": ["http://s/"], "depth": 1},
    {"url": "http://s/<script>", "result": "broken", "status": 500, "final_url": "http://s/%3Cscript%3E", "redirects": ["http://s/%3Cscript%3E"], "error": "HTTP 500", "referrers": ["http://s/"], "depth": 1},
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
