"""Client side of the wire: one msgpack request to a coordinator, errors translated once.

Every caller above (peer agent, owner commands) sees only two failures:
    Unavailable  the coordinator could not answer now (down, 429, 503, 5xx), or sent an answer
                 over `max_bytes` or one we cannot read: retry later (elsewhere)
    Rejected     the coordinator answered 4xx: retrying the same request will not help

An answer is read with a cap (`MAX_ANSWER_BYTES` unless the caller says otherwise): one that
says it is larger is refused before any of it is read, one that grows larger while it arrives
is cut off there. Answers are asked for and read uncompressed, so the cap is what memory holds.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from overlay import wire
from overlay.errors import OsaasError
from overlay.identity import Identity

_RETRYABLE = {429, 500, 502, 503, 504}
MAX_ANSWER_BYTES = 16 * 2**20  # a page of results is the largest answer we expect: ~1/4 of this
_CHUNK = 2**16


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


# The key each coordinator signs as, by base URL: what signed requests to it name as their
# audience. Learned from GET /v1/health and forgotten when a coordinator says it is not the
# one named (it came back with another key); bounded, oldest forgotten first.
_audiences: dict[str, str] = {}
_AUDIENCES_KEPT = 64


async def coordinator_key(session: aiohttp.ClientSession, base_url: str, *, timeout: float = 30.0) -> str:
    """The public key (hex) of the coordinator at `base_url`, as its health check says."""
    known = _audiences.get(base_url)
    if known is not None:
        return known
    answer = await call(session, "GET", base_url, "/v1/health", timeout=timeout)
    key = answer.get("public_key") if isinstance(answer, dict) else None
    if not isinstance(key, str) or len(key) != 64:
        raise Unavailable(f"coordinator at {base_url} does not say which key it signs as (an older osaas?)")
    if len(_audiences) >= _AUDIENCES_KEPT:
        _audiences.pop(next(iter(_audiences)))
    _audiences[base_url] = key
    return key


async def call(
    session: aiohttp.ClientSession,
    method: str,
    base_url: str,
    path: str,
    message: Any = None,
    *,
    identity: Identity | None = None,
    timeout: float = 30.0,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> Any:
    """Send `message` (a wire dataclass, a plain object or None) and return the decoded answer.
    With `identity` the request is signed for that coordinator (its key is asked for once).
    An answer over `max_bytes` is refused (`Unavailable`) without reading more of it."""
    if identity is None:
        return await _send(session, method, base_url, path, _body(message), {}, timeout, max_bytes)
    body = _body(message)
    for attempt in range(2):
        audience = await coordinator_key(session, base_url, timeout=timeout)
        signature = wire.sign_request(identity, method, path.split("?", 1)[0], body, time.time(), audience)
        try:
            return await _send(session, method, base_url, path, body, signature, timeout, max_bytes)
        except Rejected as exc:
            if exc.code != "wrong_audience" or attempt:
                raise
            _audiences.pop(base_url, None)  # the coordinator has a new key: ask again, once
    raise AssertionError("unreachable")


def _body(message: Any) -> bytes:
    if message is None:
        return b""
    if isinstance(message, dict):
        return wire.encode(message)
    return wire.encode(wire.to_obj(message))


async def _send(
    session: aiohttp.ClientSession,
    method: str,
    base_url: str,
    path: str,
    body: bytes,
    signature: dict[str, str],
    timeout: float,
    max_bytes: int,
) -> Any:
    headers = {"Content-Type": wire.CONTENT_TYPE, "Accept-Encoding": "identity", **signature}
    url = base_url.rstrip("/") + path
    try:
        async with session.request(
            method,
            url,
            data=body or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=False,
        ) as response:
            data = await _read_capped(response, base_url, max_bytes)
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise Unavailable(f"cannot reach coordinator at {base_url}: {exc or type(exc).__name__}") from exc
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise Unavailable(f"coordinator at {base_url} sent a compressed answer, which was not asked for")
    try:
        decoded = wire.decode(data) if data else {}
    except wire.WireError as exc:
        if status in _RETRYABLE:  # a proxy's page, say: the status says enough
            raise Unavailable(f"coordinator answered HTTP {status}", retry_after) from None
        raise Unavailable(f"coordinator sent an unreadable answer (HTTP {status})") from exc
    if status in _RETRYABLE:
        raise Unavailable(_with_message(f"coordinator answered HTTP {status}", decoded), retry_after)
    if status >= 400:
        error = decoded.get("error") if isinstance(decoded, dict) else None
        if isinstance(error, dict):
            raise Rejected(status, str(error.get("code", "error")), str(error.get("message", "")))
        raise Rejected(status, "error", f"coordinator answered HTTP {status}")
    return decoded


def _with_message(text: str, decoded: Any) -> str:
    """`text` and the coordinator's one-line reason from an error body, if it sent one (cut
    short: the answer is the other side's, and may be anything)."""
    error = decoded.get("error") if isinstance(decoded, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        return text
    return f"{text}: {' '.join(message.split())[:500]}"


async def _read_capped(response: aiohttp.ClientResponse, base_url: str, max_bytes: int) -> bytes:
    """The answer's body, or `Unavailable` once it is (or says it is) over `max_bytes`."""
    too_large = f"coordinator at {base_url} sent an answer over {max_bytes} bytes; not read"
    if response.content_length is not None and response.content_length > max_bytes:
        raise Unavailable(too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise Unavailable(too_large)
        chunks.append(chunk)
    return b"".join(chunks)
