"""The canonical text of a URL, so that equal links compare equal: pure, no I/O."""

from __future__ import annotations

import re

from yarl import URL

FETCHABLE_SCHEMES = frozenset({"http", "https"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


def scheme_of(reference: str) -> str | None:
    """The lower-case scheme a URL reference starts with, or None for a relative one."""
    match = _SCHEME.match(reference)
    return match.group(1).lower() if match is not None else None


def normalise(url: URL) -> str:
    """An absolute URL without its fragment; for http(s), the path is never empty.

    yarl already lower-cases scheme and host, encodes the host with IDNA, percent-encodes
    non-ASCII path and query, and drops a default port.
    """
    if url.scheme not in FETCHABLE_SCHEMES:
        return str(url.with_fragment(None))
    # Rebuilt because str(URL("http://a.example")) omits the "/" that its path reports.
    return str(
        URL.build(
            scheme=url.scheme,
            authority=url.raw_authority,
            path=url.raw_path or "/",
            query_string=url.raw_query_string,
            encoded=True,
        )
    )


def join(base: str | URL, reference: str) -> str:
    """`reference` resolved against `base`, normalised. Raises ValueError if either does not parse."""
    base_url = base if isinstance(base, URL) else URL(base)
    return normalise(base_url.join(URL(reference)))


def origin(url: str) -> tuple[str, str | None, int | None] | None:
    """(scheme, host, port) with the default port filled in; None if `url` does not parse."""
    try:
        parsed = URL(url)
    except ValueError:
        return None
    return parsed.scheme, parsed.raw_host, parsed.port
