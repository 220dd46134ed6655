"""Link-check job rules, pure: input validation, report parsing, link following."""

from __future__ import annotations

import pytest

from coordinator import linkcheck_jobs as lj
from coordinator.store import InvalidInput
from tests.coordinator.conftest import item


def test_unit_key() -> None:
    assert lj.unit_key("HTTP://ExAmple.COM/a?b#c") == "http://example.com:80"
    assert lj.unit_key("https://example.com:8443/") == "https://example.com:8443"
    assert lj.unit_key("https://[::1]/x") == "https://[::1]:443"
    assert lj.unit_key("http://bücher.de/") == "http://xn--bcher-kva.de:80"
    for other in ("mailto:a@b.c", "ftp://h/", "/relative", "http://h:99999/", "javascript:void(0)", ""):
        assert lj.unit_key(other) == lj.NOT_HTTP_KEY, other


def test_parse_job_input() -> None:
    job = lj.parse_job_input({"urls": ["http://a.test/", "https://b.test/x", "http://a.test/"], "depth": 2})
    assert job == lj.JobInput(urls=("http://a.test/", "https://b.test/x"), depth=2)
    assert job.scope == frozenset({"http://a.test:80", "https://b.test:443"})
    assert lj.parse_job_input({"urls": ["http://a.test/"]}).depth is None
    assert lj.seed_items(job) == [
        lj.NewItem("http://a.test/", "http://a.test:80", 0, True),
        lj.NewItem("https://b.test/x", "https://b.test:443", 0, True),
    ]


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "input must be a map with 'urls' and 'depth'"),
        ({"urls": "http://a.test/"}, "input.urls must be a list of 1..1000 URLs"),
        ({"urls": ["http://a.test/", 3]}, "input.urls[1] is not an absolute http(s) URL of at most 8192 characters"),
        (
            {"urls": ["http://a.test/" + "x" * 8192]},
            "input.urls[0] is not an absolute http(s) URL of at most 8192 characters",
        ),
        ({"urls": ["http://a.test/"], "depth": 1.5}, "input.depth must be an integer 0..1000, or nil for no limit"),
        ({"urls": ["http://a.test/"], "deep": 1}, "input has unknown fields: deep"),
    ],
)
def test_bad_job_input(obj: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        lj.parse_job_input(obj)
    assert str(info.value) == message


def crawled_page(links: list[str]) -> lj.ItemResult:
    return lj.ItemResult("http://a.test/", "ok", 200, "http://a.test/", (), None, tuple(links), True)


def test_linked_items_scope_depth_and_caps() -> None:
    job = lj.JobInput(urls=("http://a.test/",), depth=2)
    page = crawled_page(
        [
            "http://a.test/in",
            "http://b.test/out",
            "mailto:x@a.test",
            "http://a.test/in",
            "",
            "http://a.test/" + "x" * 9000,
        ]
    )
    assert lj.linked_items(page, 1, job) == [
        lj.NewItem("http://a.test/in", "http://a.test:80", 2, True),
        lj.NewItem("http://b.test/out", "http://b.test:80", 2, False),
        lj.NewItem("mailto:x@a.test", "-", 2, False),
    ]
    assert [i.crawl for i in lj.linked_items(page, 2, job)] == [False, False, False]
    many = crawled_page([f"http://a.test/{i}" for i in range(10_005)])
    assert len(lj.linked_items(many, 0, lj.JobInput(("http://a.test/",), None))) == lj.MAX_LINKS_PER_ITEM


def parse_report(payload: object, unit_urls: set[str]) -> list[lj.ItemResult]:
    """As the store takes a report: items parsed first, then checked against the unit."""
    results = lj.parse_items(payload)
    lj.check_unit_items(results, unit_urls)
    return results


def test_parse_report_items() -> None:
    raw = item("http://a.test/", ["http://a.test/b"])
    raw["redirects"] = ["http://a.test/old"]
    raw["error"] = "e" * 5000
    (parsed,) = parse_report({"items": [raw]}, {"http://a.test/"})
    assert parsed == lj.ItemResult(
        url="http://a.test/",
        result="ok",
        status=200,
        final_url="http://a.test/",
        redirects=("http://a.test/old",),
        error="e" * 2000,
        links=("http://a.test/b",),
        crawled=True,
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"items": {}}, "payload must be a map with a list 'items'"),
        ({"items": [1]}, "payload.items[0] must be a map"),
        ({"items": [{**item("http://a.test/"), "status": True}]}, "payload.items[0].status must be int or nil"),
        ({"items": [{**item("http://a.test/"), "status": 1000}]}, "payload.items[0].status must be 0..999 or nil"),
        ({"items": [{**item("http://a.test/"), "final_url": 1}]}, "payload.items[0].final_url must be str or nil"),
        (
            {"items": [{**item("http://a.test/"), "redirects": ["a", None]}]},
            "payload.items[0].redirects must be a list of strings",
        ),
        ({"items": [item("http://x.test/")]}, "payload.items[0].url is not an item of this unit"),
        ({"items": [item("http://a.test/"), item("http://a.test/")]}, "payload.items[1].url is reported twice"),
        ({"items": [{"url": "http://a.test/"}]}, "payload.items[0].result is missing"),
    ],
)
def test_bad_report_payload(payload: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_report(payload, {"http://a.test/"})
    assert str(info.value) == message


def test_unit_payload() -> None:
    assert lj.unit_payload(7, [("http://a.test/", True)]) == {
        "job_id": 7,
        "items": [{"url": "http://a.test/", "crawl": True}],
    }


def test_reported_urls_beyond_the_caps_are_dropped() -> None:
    raw = item("http://a.test/", [])
    raw["final_url"] = "http://a.test/" + "x" * lj.MAX_URL_LENGTH
    raw["redirects"] = [f"http://a.test/{i}" for i in range(1000)] + ["http://a.test/" + "y" * lj.MAX_URL_LENGTH]
    (parsed,) = parse_report({"items": [raw]}, {"http://a.test/"})
    assert parsed.final_url is None
    assert parsed.redirects == tuple(f"http://a.test/{i}" for i in range(lj.MAX_REDIRECTS))
    raw["final_url"], raw["status"] = "http://a.test/", "200"  # a wrong type takes the slow path
    with pytest.raises(lj.InvalidInput):
        parse_report({"items": [raw]}, {"http://a.test/"})
