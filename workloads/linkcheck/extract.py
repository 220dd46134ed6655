"""Links out of an HTML page: pure, no I/O.

`extract_links(body, content_type, page_url)` returns absolute URLs in document order,
without duplicates. http(s) links are normalised (fragment dropped, non-ASCII
percent-encoded, IDNA host, empty path made "/"); links with other schemes (ftp:, ...)
are returned as written so the caller can mark them excluded; mailto:, tel:,
javascript:, data: and empty references are skipped, as are references that do not parse.
"""

from __future__ import annotations

import codecs
import logging

from selectolax.lexbor import LexborHTMLParser
from yarl import URL

from workloads.linkcheck.urls import FETCHABLE_SCHEMES, join, scheme_of

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")

# Which attributes of which elements hold URLs; "srcset" holds a candidate list.
_URL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "a": ("href",),
    "area": ("href",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("srcset", "src"),
    "script": ("src",),
    "iframe": ("src",),
}
_SELECTOR = ", ".join(_URL_ATTRIBUTES)
_SKIPPED_SCHEMES = frozenset({"mailto", "tel", "javascript", "data"})
_ASCII_WHITESPACE = " \t\n\r\f"
# The URL standard drops tabs and newlines anywhere in a URL, not only at its ends.
_INNER_WHITESPACE = str.maketrans("", "", "\t\n\r")


def is_html(content_type: str | None) -> bool:
    return media_type(content_type) in HTML_TYPES


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode(body: bytes, content_type: str | None) -> str:
    """Text of `body`: the content-type's charset if it names a known codec, else UTF-8."""
    encoding = _charset(content_type) or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "utf-8"
    return body.decode(encoding, errors="replace")


def extract_links(body: bytes, content_type: str | None, page_url: str) -> list[str]:
    """Links of an HTML page; [] when the content-type is not HTML or `page_url` is unusable."""
    if not is_html(content_type):
        return []
    try:
        page = URL(page_url)
    except ValueError:
        return []
    tree = LexborHTMLParser(decode(body, content_type))
    base = _base_url(tree, page)
    links: dict[str, None] = {}  # an ordered set
    for node in tree.css(_SELECTOR):
        attributes = node.attributes
        for name in _URL_ATTRIBUTES[node.tag or ""]:
            value = attributes.get(name)
            if value is None:
                continue
            references = srcset_urls(value) if name == "srcset" else [value]
            for reference in references:
                link = resolve(reference, base)
                if link is not None:
                    links.setdefault(link)
    return list(links)


def resolve(reference: str, base: URL) -> str | None:
    """`reference` made absolute against `base`; None when it is skipped or does not parse."""
    reference = reference.strip(_ASCII_WHITESPACE).translate(_INNER_WHITESPACE)
    if not reference:
        return None
    scheme = scheme_of(reference)
    if scheme in _SKIPPED_SCHEMES:
        return None
    if scheme is not None and scheme not in FETCHABLE_SCHEMES:
        return reference
    try:
        return join(base, reference)
    except ValueError as exc:
        log.debug("skipping unparsable reference %r: %s", reference, exc)
        return None


def srcset_urls(srcset: str) -> list[str]:
    """The URLs of a srcset candidate list ("a.png 1x, b.png 2x"), after the HTML standard.

    A URL runs to the next whitespace, so URLs may contain commas; a URL ending in commas
    has no descriptors; descriptors run to the next comma outside parentheses.
    """
    urls: list[str] = []
    position, end = 0, len(srcset)
    while True:
        while position < end and (srcset[position] in _ASCII_WHITESPACE or srcset[position] == ","):
            position += 1
        if position >= end:
            return urls
        start = position
        while position < end and srcset[position] not in _ASCII_WHITESPACE:
            position += 1
        url = srcset[start:position]
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            position = _skip_descriptors(srcset, position)
        if url:
            urls.append(url)


def _skip_descriptors(srcset: str, position: int) -> int:
    depth = 0
    while position < len(srcset):
        char = srcset[position]
        position += 1
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif char == "," and not depth:
            break
    return position


def _base_url(tree: LexborHTMLParser, page: URL) -> URL:
    base = tree.css_first("base[href]")
    href = base.attributes.get("href") if base is not None else None
    if not href:
        return page
    href = href.strip(_ASCII_WHITESPACE).translate(_INNER_WHITESPACE)
    try:
        joined = page.join(URL(href))
    except ValueError:
        return page
    return joined if joined.scheme in FETCHABLE_SCHEMES else page


def _charset(content_type: str | None) -> str | None:
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None
