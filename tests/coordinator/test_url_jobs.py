"""Seed-URL job rules, pure: input validation, splitting by website, link following."""

from __future__ import annotations

import pytest

from coordinator import url_jobs as lj
from coordinator.store import InvalidInput


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
    assert lj.seed_items(job, crawl=True) == [
        lj.NewItem("http://a.test/", "http://a.test:80", 0, True),
        lj.NewItem("https://b.test/x", "https://b.test:443", 0, True),
    ]
    assert [seed.crawl for seed in lj.seed_items(job, crawl=False)] == [False, False]


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


def test_linked_items_scope_depth_and_caps() -> None:
    job = lj.JobInput(urls=("http://a.test/",), depth=2)
    page = [
        "http://a.test/in",
        "http://b.test/out",
        "mailto:x@a.test",
        "http://a.test/in",
        "",
        "http://a.test/" + "x" * 9000,
    ]
    assert lj.linked_items(page, 1, job) == [
        lj.NewItem("http://a.test/in", "http://a.test:80", 2, True),
        lj.NewItem("http://b.test/out", "http://b.test:80", 2, False),
        lj.NewItem("mailto:x@a.test", "-", 2, False),
    ]
    assert [i.crawl for i in lj.linked_items(page, 2, job)] == [False, False, False]
    many = [f"http://a.test/{i}" for i in range(10_005)]
    assert len(lj.linked_items(many, 0, lj.JobInput(("http://a.test/",), None))) == lj.MAX_LINKS_PER_ITEM


def test_unit_payload() -> None:
    assert lj.unit_payload(7, [("http://a.test/", True)]) == {
        "job_id": 7,
        "items": [{"url": "http://a.test/", "crawl": True}],
    }
