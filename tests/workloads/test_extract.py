"""Link extraction from HTML: bytes and a content-type in, absolute links out."""

import pytest

from workloads.linkcheck.extract import decode, extract_links, is_html, srcset_urls

PAGE = "http://site.test/dir/page.html"
HTML = "text/html; charset=utf-8"


def links(html: str, content_type: str | None = HTML, page: str = PAGE) -> list[str]:
    return extract_links(html.encode("utf-8"), content_type, page)


def test_every_url_attribute_in_document_order() -> None:
    html = """<html><head><link rel=stylesheet href="s.css"><script src="j.js"></script></head>
    <body><a href="a.html">a</a><map><area href="area.html"></map>
    <img src="i.png" srcset="i2.png 2x"><picture><source srcset="s1.webp 1x" src="s2.webp"></picture>
    <iframe src="frame.html"></iframe><a name="no-href">x</a></body></html>"""
    assert links(html) == [
        "http://site.test/dir/s.css",
        "http://site.test/dir/j.js",
        "http://site.test/dir/a.html",
        "http://site.test/dir/area.html",
        "http://site.test/dir/i.png",
        "http://site.test/dir/i2.png",
        "http://site.test/dir/s1.webp",
        "http://site.test/dir/s2.webp",
        "http://site.test/dir/frame.html",
    ]


def test_relative_forms_resolve_against_the_page() -> None:
    html = '<a href="../up.html"><a href="/root"><a href="//other.test/x"><a href="?q=1"><a href="HTTPS://Other.Test">'
    assert links(html) == [
        "http://site.test/up.html",
        "http://site.test/root",
        "http://other.test/x",
        "http://site.test/dir/page.html?q=1",
        "https://other.test/",
    ]


def test_non_http_base_href_is_ignored() -> None:
    assert links('<base href="mailto:x@site.test"><a href="y">') == ["http://site.test/dir/y"]


def test_first_base_href_wins_and_a_relative_base_resolves_against_the_page() -> None:
    html = '<head><base href="../assets/"><base href="http://ignored.test/"></head><a href="x.png">'
    assert links(html) == ["http://site.test/assets/x.png"]


def test_absolute_base_href() -> None:
    assert links('<base href="https://cdn.test/v2/"><img src="logo.svg">') == ["https://cdn.test/v2/logo.svg"]


def test_srcset_with_descriptors_and_commas_inside_urls() -> None:
    html = '<img srcset="a.png 1x, b,c.png 2x,d.png, e.png (max-width: 1px, x) 3w , f.png">'
    assert links(html) == [
        "http://site.test/dir/a.png",
        "http://site.test/dir/b,c.png",
        "http://site.test/dir/d.png",
        "http://site.test/dir/e.png",
        "http://site.test/dir/f.png",
    ]


def test_srcset_parser_directly() -> None:
    assert srcset_urls("  one.png  ,  two.png 100w,three.png") == ["one.png", "two.png", "three.png"]
    assert srcset_urls(" , ,") == []
    assert srcset_urls("data:image/png;base64,AAAA 1x, real.png 2x") == ["data:image/png;base64,AAAA", "real.png"]


def test_entities_are_decoded_and_whitespace_trimmed() -> None:
    html = '<a href="  /search?a=1&amp;b=2&#38;c=3 \n">x</a><a href="/li\nne\tbreak">y</a>'
    assert links(html) == ["http://site.test/search?a=1&b=2&c=3", "http://site.test/linebreak"]


def test_non_ascii_path_query_and_host_are_encoded() -> None:
    html = '<a href="/ünï/cödé?q=é"><a href="http://bücher.test/straße">'
    assert links(html) == [
        "http://site.test/%C3%BCn%C3%AF/c%C3%B6d%C3%A9?q=%C3%A9",
        "http://xn--bcher-kva.test/stra%C3%9Fe",
    ]


def test_fragments_dropped_and_duplicates_removed_in_order() -> None:
    html = '<a href="b#one"><a href="a"><a href="b#two"><a href="#top"><a href="b"><a href="http://site.test/dir/a">'
    assert links(html) == ["http://site.test/dir/b", "http://site.test/dir/a", "http://site.test/dir/page.html"]


def test_skipped_schemes_and_empty_references() -> None:
    html = """<a href="mailto:x@site.test"><a href="TEL:+1555"><a href="javascript:void(0)">
    <a href=" JavaScript:go()"><img src="data:image/gif;base64,R0lG"><a href=""><a href="   "><a href="ok">"""
    assert links(html) == ["http://site.test/dir/ok"]


def test_other_schemes_are_reported_unchanged() -> None:
    html = '<a href="ftp://files.test/a b.txt#x"><a href="irc://chat.test/room"><a href="news:comp.lang">'
    assert links(html) == ["ftp://files.test/a b.txt#x", "irc://chat.test/room", "news:comp.lang"]


def test_unparsable_reference_is_skipped() -> None:
    assert links('<a href="http://[::1/x"><a href="fine">') == ["http://site.test/dir/fine"]


def test_empty_path_gets_a_slash_so_duplicates_match() -> None:
    assert links('<a href="http://other.test"><a href="http://other.test/"><a href="http://other.test?x=1">') == [
        "http://other.test/",
        "http://other.test/?x=1",
    ]


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "", None, "image/svg+xml"])
def test_non_html_content_is_not_parsed(content_type: str | None) -> None:
    assert links('<a href="x">', content_type) == []


@pytest.mark.parametrize("content_type", ["text/html", "TEXT/HTML; charset=UTF-8", "application/xhtml+xml"])
def test_html_content_types(content_type: str) -> None:
    assert is_html(content_type)
    assert links('<a href="x">', content_type) == ["http://site.test/dir/x"]


def test_charset_from_content_type() -> None:
    body = '<a href="/café">'.encode("latin-1")
    assert extract_links(body, "text/html; charset=ISO-8859-1", PAGE) == ["http://site.test/caf%C3%A9"]


def test_unknown_charset_and_bad_bytes_fall_back_to_utf8_with_replacement() -> None:
    assert decode(b"ok \xff", 'text/html; charset="no-such-codec"') == "ok \ufffd"
    assert extract_links(b'<a href="/a\xff">', "text/html", PAGE) == ["http://site.test/a%EF%BF%BD"]


def test_hostile_markup_does_not_raise() -> None:
    html = "<a href='x'" + "<div>" * 5000 + "<a href=\"\x00\"><img srcset=',,,,'><base href='::::'>"
    assert links(html) == ["http://site.test/dir/x", "http://site.test/dir/%EF%BF%BD"]
    assert extract_links(b"\x00\xff\xfe garbage", "text/html", PAGE) == []
