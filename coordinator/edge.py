"""What every request meets at the coordinator's edge, before and around its handler: the
app's keys, msgpack answers, one error body per cause (the error tree's status and code), the
checks at the door (`request_checks`), signed bodies (audience, nonce, rate limits) and the
roles an owner request needs."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger

from coordinator import request_checks, roles
from coordinator.rate_limits import RateLimiter, Route
from coordinator.replays import SeenNonces
from coordinator.roles import AccessRefused, Action, Role
from coordinator.seeder import BundleService
from coordinator.store import (
    InvalidInput,
    Store,
)
from overlay.errors import OsaasError
from overlay.identity import Identity
from overlay.wire import (
    CONTENT_TYPE,
    MAX_BODY,
    WireError,
    decode,
    encode,
    error_body,
    signed_by,
    verify_request,
)

log = logging.getLogger(__name__)

STORE = web.AppKey("store", Store)


IDENTITY = web.AppKey("identity", Identity)


LEASE_SECONDS = web.AppKey("lease_seconds", float)


CLOCK = web.AppKey[Callable[[], float]]("clock")


ALLOWED_HOSTS = web.AppKey[frozenset[str]]("allowed_hosts")


NONCES = web.AppKey("nonces", SeenNonces)


LIMITER = web.AppKey("limiter", RateLimiter)


UPLOADS = web.AppKey("uploads", asyncio.Semaphore)
MAX_UPLOADS_AT_ONCE = 2  # bundle uploads checked at once: each may hold an archive in memory


BUNDLES = web.AppKey("bundles", BundleService)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AccessLog(AbstractAccessLogger):
    """One line per request, at DEBUG (a small job's peers make hundreds of requests a minute:
    /metrics counts them), without its query string: a dashboard login carries its token there
    (`?token=`), and tokens never reach a log."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "%s %s %s %d %d %.3fs",
            request.remote,
            request.method,
            request.rel_url.path,
            response.status,
            response.body_length,
            time,
        )


def reply(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode(obj), status=status, content_type=CONTENT_TYPE)


def error(status: int, code: str, message: str) -> web.Response:
    return web.Response(body=error_body(code, message), status=status, content_type=CONTENT_TYPE)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), _http_message(request, exc))
    except OsaasError as exc:  # the tree says what each kind becomes (overlay.errors)
        response = error(exc.http_status, exc.code, str(exc))
        if exc.retry_after is not None:
            response.headers[hdrs.RETRY_AFTER] = str(max(1, math.ceil(exc.retry_after)))
        return response
    except Exception:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return error(500, "internal", "internal error; the coordinator logged the details")


@web.middleware
async def checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what `request_checks` refuses before the handler reads a byte of it."""
    allowed: frozenset[str] = request.config_dict[ALLOWED_HOSTS]
    refusal = request_checks.check(
        request.method,
        request.headers.get(hdrs.HOST),
        request.headers.get(hdrs.ORIGIN),
        request.content_type if hdrs.CONTENT_TYPE in request.headers else "",
        request.body_exists,
        allowed,
    )
    if refusal is not None:
        return error(*refusal)
    return await handler(request)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"request body is larger than {MAX_BODY} bytes"
    return exc.reason


async def signed_body(request: web.Request, route: Route | None = None) -> tuple[str, Any]:
    """The verified signer's key (a peer's id) and the decoded body. The headers are checked
    before the body is read (signed, for this coordinator, in the clock window); the signature
    covers method, path without its query string (as `overlay.http` signs it), this
    coordinator's key, the time, a nonce and the body; a nonce is taken once.

    On a rate-limited `route` the client's address is charged first and a key without requests
    left is refused before its body is read; the key is charged once its signature is good
    (`rate_limits`: so that forged headers cannot spend another key's requests)."""
    now = request.app[CLOCK]()
    audience = request.app[IDENTITY].public_hex
    limiter = request.app[LIMITER]
    if route is not None:
        limiter.admit_address(route, request.remote, now)
    claimed = signed_by(request.headers, audience, now)
    if route is not None:
        limiter.check_key(route, claimed.signer, now)
    body = await request.read()
    signed = verify_request(request.headers, request.method, request.rel_url.raw_path, body, now, audience)
    if route is not None:
        limiter.admit_key(route, signed.signer, now)
    if not request.app[NONCES].first_time(signed.signer, signed.nonce, signed.sent_at, now):
        raise WireError("this signed request was already taken (a replay)", "replayed")
    return signed.signer, decode(body) if body else None


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not low <= int(raw) <= high:
        raise InvalidInput(f"query parameter {name} must be an integer {low}..{high}")
    return int(raw)


async def owner_request(
    request: web.Request, action: Action, route: Route | None = None
) -> tuple[str, Role | None, Any]:
    """The signer, its role and the decoded body (None without one), refused unless the role
    may `action` at all (on something of its own). `route`: its rate limit, if it has one."""
    signer, body = await signed_body(request, route)
    role = await role_of(request, signer)
    allow(signer, role, action)
    return signer, role, body


async def role_of(request: web.Request, signer: str) -> Role | None:
    found = await request.app[STORE].role_of(signer)
    return None if found is None else Role(found)


def allow(signer: str, role: Role | None, action: Action, own: bool = True) -> None:
    refusal = roles.refusal(signer, role, action, own)
    if refusal is not None:
        raise AccessRefused(refusal)
