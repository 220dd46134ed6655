"""What every request to the coordinator must show before a handler reads it: pure rules.

- **Content type.** Every request with a body is msgpack (`application/msgpack`). A web page
  on another site can send a "simple" cross-site POST without asking first only as
  `text/plain`, form data or a multipart form: refusing those refuses it.
- **Origin.** Browsers name the page that made a request in `Origin`. The API is for
  programs (peers, the `osaas` command), which send none; the only page allowed is the
  coordinator's own (its dashboard).
- **Host.** DNS rebinding points a name the attacker owns at the coordinator's address, so
  the victim's browser treats the coordinator as the attacker's own site; the request then
  names the attacker's host. A request must name an IP address (no rebinding through a
  literal address) or a host the coordinator is known by: its listen and public hosts,
  localhost, and those the operator allows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from typing import NamedTuple
from urllib.parse import urlsplit

MSGPACK = "application/msgpack"
LOCAL_NAMES = frozenset({"localhost"})


class Refusal(NamedTuple):
    status: int
    code: str
    message: str


def host_name(host_header: str) -> str:
    """The host of a Host header, without its port and brackets, lowercase."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check(
    method: str,
    host_header: str | None,
    origin: str | None,
    content_type: str,
    has_body: bool,
    allowed_hosts: Collection[str],
) -> Refusal | None:
    """Why this request is refused before it is read, or None."""
    host = host_name(host_header or "")
    if not host or not (_is_ip(host) or host in LOCAL_NAMES or host in allowed_hosts):
        return Refusal(
            421,
            "unknown_host",
            f"this coordinator is not served as {host or 'a nameless host'!r}; "
            "its operator can allow the name with --allowed-host",
        )
    if origin is not None:
        # The coordinator's own page has the origin the request is addressed to.
        if urlsplit(origin).netloc.lower() != (host_header or "").strip().lower():
            return Refusal(403, "foreign_origin", f"requests from pages of {origin} are not accepted")
    if (has_body or method in ("POST", "PUT", "PATCH")) and content_type != MSGPACK:
        return Refusal(
            415, "unsupported_media_type", f"request bodies must be {MSGPACK}, not {content_type or 'untyped'}"
        )
    return None
