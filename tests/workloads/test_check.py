"""The per-URL check state machine: FetchResults in, the next request or the verdict out."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workloads.linkcheck.check import (
    Fetch,
    Item,
    LinkCheck,
    Outcome,
    Unfinished,
    Verdict,
    Wait,
    retry_after,
)
from workloads.process_api import FetchResult, ProtocolError

URL = "http://site.test/page"
HTML = {"content-type": "text/html; charset=utf-8"}


def response(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> FetchResult:
    return FetchResult(id=1, url="", status=status, headers=headers or {}, body=body)


def failure(kind: str, message: str | None = None) -> FetchResult:
    return FetchResult(id=1, url="", error=kind, message=message)


def redirect(location: str, status: int = 301) -> FetchResult:
    return response(status, {"location": location})


def head(url: str = URL) -> Fetch:
    return Fetch("HEAD", url, want_body=False)


def get(url: str = URL, want_body: bool = False) -> Fetch:
    return Fetch("GET", url, want_body)


def no_clock() -> float:
    raise AssertionError("the check read the clock")


def check(url: str = URL, crawl: bool = False) -> LinkCheck:
    return LinkCheck(Item(url, crawl), clock=no_clock)


def verdict(
    result: Outcome,
    status: int | None,
    final_url: str | None = URL,
    error: str | None = None,
    redirects: tuple[str, ...] = (),
    links: tuple[str, ...] = (),
    crawled: bool = False,
    url: str = URL,
) -> Verdict:
    return Verdict(url, result, status, final_url, redirects, error, links, crawled)


# ---- HEAD, GET and the final classification ----------------------------------------------


def test_link_is_checked_with_head_first() -> None:
    machine = check()
    assert machine.start() == head()
    assert machine.receive(response(204)) == verdict(Outcome.OK, 204)


@pytest.mark.parametrize("status", [404, 410])
def test_head_404_and_410_are_final(status: int) -> None:
    machine = check()
    machine.start()
    assert machine.receive(response(status)) == verdict(Outcome.BROKEN, status, error=f"HTTP {status}")


def test_head_405_falls_back_to_get() -> None:
    machine = check()
    machine.start()
    assert machine.receive(response(405)) == get()
    assert machine.receive(response(200)) == verdict(Outcome.OK, 200)


@pytest.mark.parametrize(
    ("status", "result", "error"),
    [
        (500, Outcome.BROKEN, "HTTP 500"),
        (403, Outcome.BROKEN, "HTTP 403"),
        (102, Outcome.ERROR, "HTTP 102"),
        (304, Outcome.ERROR, "HTTP 304"),
    ],
)
def test_head_failure_is_confirmed_with_get(status: int, result: Outcome, error: str) -> None:
    machine = check()
    machine.start()
    assert machine.receive(response(status)) == get()
    assert machine.receive(response(status)) == verdict(result, status, error=error)


def test_redirect_status_without_location_is_an_error() -> None:
    machine = check()
    machine.start()
    assert machine.receive(response(302)) == get()
    assert machine.receive(response(302, {"location": "  "})) == verdict(
        Outcome.ERROR, 302, error="HTTP 302 without Location"
    )


def test_item_url_is_sent_in_canonical_form() -> None:
    machine = check("HTTP://Bücher.Test/ü#frag")
    assert machine.start() == head("http://xn--bcher-kva.test/%C3%BC")


def test_verdict_as_a_result_item() -> None:
    machine = check()
    machine.start()
    answer = machine.receive(response(404))
    assert isinstance(answer, Verdict)
    assert answer.to_dict() == {
        "url": URL,
        "result": "broken",
        "status": 404,
        "final_url": URL,
        "redirects": [],
        "error": "HTTP 404",
        "links": [],
        "crawled": False,
    }


# ---- redirects ------------------------------------------------------------------------------


def test_redirect_chain_is_followed_with_the_same_method() -> None:
    machine = check()
    machine.start()
    assert machine.receive(redirect("https://site.test/a")) == head("https://site.test/a")
    assert machine.receive(redirect("b?x=ü#frag", 302)) == head("https://site.test/b?x=%C3%BC")
    assert machine.receive(redirect("//cdn.test/c", 307)) == head("https://cdn.test/c")
    assert machine.receive(response(200)) == verdict(
        Outcome.OK,
        200,
        final_url="https://cdn.test/c",
        redirects=("https://site.test/a", "https://site.test/b?x=%C3%BC", "https://cdn.test/c"),
    )


def test_redirect_to_404() -> None:
    machine = check()
    machine.start()
    assert machine.receive(redirect("/gone", 308)) == head("http://site.test/gone")
    assert machine.receive(response(404)) == verdict(
        Outcome.BROKEN, 404, final_url="http://site.test/gone", error="HTTP 404", redirects=("http://site.test/gone",)
    )


def test_redirect_loop() -> None:
    machine = check()
    machine.start()
    assert machine.receive(redirect("/other", 303)) == head("http://site.test/other")
    assert machine.receive(redirect("/page#again", 302)) == verdict(
        Outcome.ERROR,
        302,
        final_url="http://site.test/other",
        error="redirect loop",
        redirects=("http://site.test/other",),
    )


def test_redirect_to_itself_is_a_loop() -> None:
    machine = check()
    machine.start()
    assert machine.receive(redirect(URL)) == verdict(Outcome.ERROR, 301, error="redirect loop")


def test_ten_redirects_are_followed() -> None:
    machine = check()
    machine.start()
    chain = tuple(f"http://site.test/{n}" for n in range(10))
    for target in chain:
        assert machine.receive(redirect(target)) == head(target)
    assert machine.receive(response(200)) == verdict(Outcome.OK, 200, final_url=chain[-1], redirects=chain)


def test_eleventh_redirect_is_too_many() -> None:
    machine = check()
    machine.start()
    chain = tuple(f"http://site.test/{n}" for n in range(10))
    for target in chain:
        machine.receive(redirect(target))
    assert machine.receive(redirect("http://site.test/10")) == verdict(
        Outcome.ERROR, 301, final_url=chain[-1], error="too many redirects", redirects=chain
    )


def test_unparsable_location_is_an_error() -> None:
    machine = check()
    machine.start()
    assert machine.receive(redirect("http://[::1/x")) == verdict(Outcome.ERROR, 301, error="invalid redirect location")


def test_redirect_to_another_scheme_is_excluded_by_the_peer() -> None:
    machine = check()
    machine.start()
    assert machine.receive(redirect("ftp://files.test/x")) == head("ftp://files.test/x")
    assert machine.receive(failure("invalid_url", "not an http(s) URL")) == verdict(
        Outcome.EXCLUDED,
        None,
        final_url="ftp://files.test/x",
        error="not an http(s) URL",
        redirects=("ftp://files.test/x",),
    )


# ---- 429 / 503 and Retry-After ----------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds() -> None:
    machine = check()
    machine.start()
    assert machine.receive(response(429, {"retry-after": "3"})) == Wait(3.0, head())
    assert machine.receive(response(200)) == verdict(Outcome.OK, 200)


def test_503_retries_exhausted_on_get_is_broken() -> None:
    machine = check(crawl=True)
    assert machine.start() == get(want_body=True)
    for _ in range(3):
        assert machine.receive(response(503)) == Wait(1.0, get(want_body=True))
    assert machine.receive(response(503)) == verdict(Outcome.BROKEN, 503, error="HTTP 503")


def test_429_retries_exhausted_on_head_falls_back_to_get_once() -> None:
    machine = check()
    machine.start()
    for _ in range(3):
        assert machine.receive(response(429, {"retry-after": "0"})) == Wait(0.0, head())
    assert machine.receive(response(429)) == get()
    assert machine.receive(response(429)) == verdict(Outcome.BROKEN, 429, error="HTTP 429")


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, 1.0),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": " 3600 "}, 10.0),
        ({"retry-after": "soon"}, 1.0),
        ({"retry-after": "-5"}, 1.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:05 GMT", "date": "Wed, 21 Oct 2015 07:28:00 GMT"}, 5.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT", "date": "Wed, 21 Oct 2015 07:29:00 GMT"}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 08:28:00 GMT", "date": "Wed, 21 Oct 2015 07:28:00 GMT"}, 10.0),
    ],
)
def test_retry_after_without_reading_the_clock(headers: dict[str, str], seconds: float) -> None:
    assert retry_after(headers, no_clock) == seconds


def test_retry_after_date_without_a_date_header_uses_the_clock() -> None:
    headers = {"retry-after": "Wed, 21 Oct 2015 07:28:02 GMT"}
    assert retry_after(headers, lambda: 1445412480.0) == 2.0  # 07:28:00 GMT


# ---- fetch errors -----------------------------------------------------------------------------


def test_timeouts_are_retried_twice_with_backoff_then_timeout() -> None:
    machine = check()
    machine.start()
    assert machine.receive(failure("timeout")) == Wait(0.5, head())
    assert machine.receive(failure("timeout")) == Wait(1.0, head())
    assert machine.receive(failure("timeout", "read timed out after 10 s")) == verdict(
        Outcome.TIMEOUT, None, error="read timed out after 10 s"
    )


def test_connection_error_then_success() -> None:
    machine = check()
    machine.start()
    assert machine.receive(failure("connection", "connection reset")) == Wait(0.5, head())
    assert machine.receive(response(200)) == verdict(Outcome.OK, 200)


def test_connection_errors_exhausted() -> None:
    machine = check()
    machine.start()
    machine.receive(failure("connection"))
    machine.receive(failure("timeout"))
    assert machine.receive(failure("connection", "connection refused\n  at 10.0.0.1")) == verdict(
        Outcome.ERROR, None, error="connection refused at 10.0.0.1"
    )


def test_dns_failure() -> None:
    machine = check()
    machine.start()
    assert machine.receive(failure("dns", "[Errno -2] Name or service not known")) == verdict(
        Outcome.ERROR, None, error="name does not resolve"
    )


@pytest.mark.parametrize(
    ("kind", "message", "error"),
    [
        ("policy", "address 10.0.0.1 is private", "address 10.0.0.1 is private"),
        ("policy", None, "refused by the address policy"),
        ("robots", "disallowed by robots.txt", "disallowed by robots.txt"),
        ("robots", "", "disallowed by robots.txt"),
    ],
)
def test_policy_and_robots_are_excluded(kind: str, message: str | None, error: str) -> None:
    machine = check()
    machine.start()
    assert machine.receive(failure(kind, message)) == verdict(Outcome.EXCLUDED, None, error=error)


def test_invalid_url_depends_on_the_scheme() -> None:
    ftp = check("ftp://files.test/x")
    assert ftp.start() == head("ftp://files.test/x")
    assert ftp.receive(failure("invalid_url")) == verdict(
        Outcome.EXCLUDED,
        None,
        final_url="ftp://files.test/x",
        error="not a URL the peer can fetch",
        url="ftp://files.test/x",
    )
    broken = check("http://bad host/")
    assert broken.start() == head("http://bad host/")
    assert broken.receive(failure("invalid_url", "bad host name")) == verdict(
        Outcome.ERROR, None, final_url="http://bad host/", error="bad host name", url="http://bad host/"
    )


def test_limit_leaves_the_item_unfinished() -> None:
    machine = check()
    machine.start()
    assert machine.receive(redirect("/next")) == head("http://site.test/next")
    assert machine.receive(failure("limit")) == Unfinished(URL, "fetch allowance used up")


@pytest.mark.parametrize("answer", [FetchResult(id=4, url=URL), failure("gremlins")])
def test_a_peer_answer_outside_the_protocol_is_a_protocol_error(answer: FetchResult) -> None:
    machine = check()
    machine.start()
    with pytest.raises(ProtocolError, match="fetch_result"):
        machine.receive(answer)


def test_misuse_by_the_shell_is_a_bug() -> None:
    machine = check()
    with pytest.raises(RuntimeError, match="no fetch outstanding"):
        machine.receive(response(200))
    machine.start()
    with pytest.raises(RuntimeError, match="called twice"):
        machine.start()
    machine.receive(response(200))
    with pytest.raises(RuntimeError, match="no fetch outstanding"):
        machine.receive(response(200))


# ---- crawling -------------------------------------------------------------------------------

PAGE = b'<a href="/a">a</a> <img src="b.png"> <a href="mailto:x@site.test"> <a href="ftp://f.test/c">'


def test_crawl_extracts_links_of_an_html_page() -> None:
    machine = check(crawl=True)
    assert machine.start() == get(want_body=True)
    assert machine.receive(response(200, HTML, PAGE)) == verdict(
        Outcome.OK, 200, links=("http://site.test/a", "http://site.test/b.png", "ftp://f.test/c"), crawled=True
    )


def test_crawl_parses_a_truncated_body() -> None:
    machine = check(crawl=True)
    machine.start()
    answer = FetchResult(
        id=1, url=URL, status=200, headers=HTML, body=b'<a href="/a">a</a><a href="/tr', truncated=True
    )
    assert machine.receive(answer) == verdict(Outcome.OK, 200, links=("http://site.test/a",), crawled=True)


def test_crawl_follows_same_site_redirects_and_resolves_against_the_final_url() -> None:
    machine = check(crawl=True)
    machine.start()
    assert machine.receive(redirect("/docs/")) == get("http://site.test/docs/", want_body=True)
    assert machine.receive(response(200, HTML, b'<a href="intro">')) == verdict(
        Outcome.OK,
        200,
        final_url="http://site.test/docs/",
        redirects=("http://site.test/docs/",),
        links=("http://site.test/docs/intro",),
        crawled=True,
    )


@pytest.mark.parametrize("target", ["https://site.test/page2", "http://site.test:8080/page", "http://other.test/page"])
def test_page_that_redirects_off_site_is_checked_not_crawled(target: str) -> None:
    machine = check(crawl=True)
    machine.start()
    assert machine.receive(redirect(target)) == get(target, want_body=True)
    assert machine.receive(response(200, HTML, PAGE)) == verdict(Outcome.OK, 200, final_url=target, redirects=(target,))


def test_default_port_is_the_same_site() -> None:
    machine = check(crawl=True)
    machine.start()
    machine.receive(redirect("http://site.test:80/x"))
    answer = machine.receive(response(200, HTML, b'<a href="y">'))
    assert isinstance(answer, Verdict) and answer.links == ("http://site.test/y",)


@pytest.mark.parametrize(
    "answer",
    [
        response(200, {"content-type": "application/pdf"}, PAGE),
        response(200, {}, PAGE),
        response(200, HTML, b""),
    ],
)
def test_no_crawl_without_an_html_body(answer: FetchResult) -> None:
    machine = check(crawl=True)
    machine.start()
    assert machine.receive(answer) == verdict(Outcome.OK, 200)


def test_error_pages_are_not_crawled() -> None:
    machine = check(crawl=True)
    machine.start()
    assert machine.receive(response(404, HTML, PAGE)) == verdict(Outcome.BROKEN, 404, error="HTTP 404")


def test_check_without_crawl_never_extracts() -> None:
    machine = check()
    machine.start()
    assert machine.receive(response(200, HTML, PAGE)) == verdict(Outcome.OK, 200)


# ---- any sequence of answers ends in a verdict --------------------------------------------

_answers = st.one_of(
    st.builds(
        response,
        status=st.sampled_from([100, 200, 204, 301, 302, 303, 304, 307, 308, 404, 405, 410, 429, 500, 503, 999]),
        headers=st.fixed_dictionaries(
            {},
            optional={
                "location": st.sampled_from(["/a", "/b", "http://other.test/", URL, "", "http://[x", "ftp://f.test/"]),
                "retry-after": st.sampled_from(["0", "5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"]),
                "content-type": st.just("text/html"),
            },
        ),
        body=st.sampled_from([b"", b'<a href="/x">']),
    ),
    st.builds(failure, kind=st.sampled_from(["timeout", "connection", "dns", "policy", "robots", "invalid_url"])),
)


@given(crawl=st.booleans(), answers=st.lists(_answers, min_size=17, max_size=17))
def test_every_check_ends_within_17_fetches(crawl: bool, answers: list[FetchResult]) -> None:
    machine = LinkCheck(Item(URL, crawl), clock=lambda: 1445412470.0)
    action: Fetch | Wait | Verdict | Unfinished = machine.start()
    fetches = 1
    for answer in answers:
        action = machine.receive(answer)
        if isinstance(action, Verdict):
            break
        fetches += 1
    assert isinstance(action, Verdict)
    assert fetches <= 17
    assert len(action.redirects) <= 10
    assert not action.crawled or (crawl and action.result is Outcome.OK)
    assert (action.result is Outcome.OK) == (action.status is not None and 200 <= action.status < 300)
