"""Client side of the wire: one msgpack request to a coordinator, errors translated once.

Every caller above (peer agent, owner commands) sees only two failures:
    Unavailable  the coordinator could not answer now (down, 429, 503, 5xx): retry later
    Rejected     the coordinator answered 4xx: retrying the same request will not help
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from overlay import wire
from overlay.errors import OsaasError
from overlay.identity import Identity

_RETRYABLE = {429, 500, 502, 503, 504}


class Unavailable(OsaasError):
    http_status = 503
    code = "unavailable"

    """The coordinator is unreachable or asked us to come back later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(OsaasError):
    """The coordinator refused the request (4xx); `code` is its machine-readable reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status = status
        self.code = code


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None if absent or a date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


async def call(
    session: aiohttp.ClientSession,
    method: str,
    base_url: str,
    path: str,
    message: Any = None,
    *,
    identity: Identity | None = None,
    timeout: float = 30.0,
) -> Any:
    """Send `message` (a wire dataclass, a plain object or None) and return the decoded answer."""
    if message is None:
        body = b""
    elif isinstance(message, dict):
        body = wire.encode(message)
    else:
        body = wire.encode(wire.to_obj(message))
    headers = {"Content-Type": wire.CONTENT_TYPE}
    if identity is not None:
        request_path = path.split("?", 1)[0]
        headers |= wire.sign_request(identity, method, request_path, body, time.time())
    url = base_url.rstrip("/") + path
    try:
        async with session.request(
            method, url, data=body or None, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            data = await response.read()
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise Unavailable(f"cannot reach coordinator at {base_url}: {exc or type(exc).__name__}") from exc
    if status in _RETRYABLE:
        raise Unavailable(f"coordinator answered HTTP {status}", retry_after)
    try:
        decoded = wire.decode(data) if data else {}
    except wire.WireError as exc:
        raise Unavailable(f"coordinator sent an unreadable answer (HTTP {status})") from exc
    if status >= 400:
        error = decoded.get("error") if isinstance(decoded, dict) else None
        if isinstance(error, dict):
            raise Rejected(status, str(error.get("code", "error")), str(error.get("message", "")))
        raise Rejected(status, "error", f"coordinator answered HTTP {status}")
    return decoded
