"""Pure: a unit's payload checked, and one probe record made of one fetch's answer.

A record holds what process API version 2 adds to a fetch_result (`FetchDetails`): the
times of each phase, the certificate, the address that answered; and the body's SHA-256 and
length (as far as the peer's body cap let it come: `truncated`). Nothing here trusts the
peer's answer beyond its types: strings are cut to the record caps.
"""

from __future__ import annotations

import hashlib
from typing import Any

from workloads.process_api import FetchResult

MAX_ITEMS = 1000
MAX_URL = 8192
MAX_TEXT = 2000  # an error's characters kept
FIELDS = (
    "url",
    "status",
    "error",
    "address",
    "dns",
    "connect",
    "tls",
    "first_byte",
    "total",
    "tls_version",
    "cert_issuer",
    "cert_expires",
    "location",
    "body_sha256",
    "body_bytes",
    "truncated",
)


class BadPayload(ValueError):
    """The unit's payload is not a probe unit's."""


def unit_urls(payload: Any) -> list[str]:
    """The URLs a probe unit asks for; BadPayload with a one-line reason otherwise."""
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise BadPayload(f"payload.items must be a list of 1..{MAX_ITEMS} items")
    urls = []
    for i, item in enumerate(items):
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not 0 < len(url) <= MAX_URL:
            raise BadPayload(f"payload.items[{i}].url must be a string of 1..{MAX_URL} characters")
        urls.append(url)
    if len(set(urls)) != len(urls):
        raise BadPayload("payload.items names a URL twice")
    return urls


def record(url: str, answer: FetchResult) -> dict[str, Any]:
    """What this vantage point saw of `url`."""
    details = answer.details
    timing = details.timing if details is not None else {}
    tls = details.tls if details is not None else None
    answered = answer.status is not None
    error = None
    if not answered:
        error = f"{answer.error}: {answer.message or ''}".strip(": ")[:MAX_TEXT]
    location = answer.headers.get("location") if answered else None
    return {
        "url": url,
        "status": answer.status,
        "error": error,
        "address": details.address if details is not None else None,
        "dns": timing.get("dns"),
        "connect": timing.get("connect"),
        "tls": timing.get("tls"),
        "first_byte": timing.get("first_byte"),
        "total": timing.get("total"),
        "tls_version": tls["version"][:MAX_TEXT] if tls else None,
        "cert_issuer": tls["issuer"][:MAX_TEXT] if tls else None,
        "cert_expires": tls["not_after"] if tls else None,
        "location": location[:MAX_URL] if location else None,
        "body_sha256": hashlib.sha256(answer.body).hexdigest() if answered else None,
        "body_bytes": len(answer.body) if answered else None,
        "truncated": answer.truncated,
    }
