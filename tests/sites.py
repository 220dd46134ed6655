"""Local test websites served by real aiohttp servers on loopback, with request logs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class RequestLog:
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path_qs)

    def paths(self) -> set[str]:
        return {path for _, path in self.requests}


# Ports a test picks for a server it starts later come from a range of its xdist worker's own,
# below the kernel's ephemeral range (32768-60999 by default, where every bind to port 0 draws
# from): no other worker, and no port-0 bind anywhere, can take one between the pick and the bind.
_FIRST_PORT = 20_000
_PORTS_PER_WORKER = 2_000
_picked = itertools.count()


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now, for a server the test starts (or for 'connection
    refused'), never the same one twice in a run of one worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    base = _FIRST_PORT + (int(worker[2:]) if worker[2:].isdigit() else 0) % 6 * _PORTS_PER_WORKER
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(_PORTS_PER_WORKER):
        port = base + next(_picked) % _PORTS_PER_WORKER
        with socket.socket(family, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue  # taken (or lingering): the next one
            return port
    raise AssertionError(f"no free port in {base}..{base + _PORTS_PER_WORKER - 1}")


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    try:
        yield f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _logging_app(log: RequestLog) -> web.Application:
    @web.middleware
    async def record(request: web.Request, handler):
        log.requests.append((request.method, request.raw_path))
        return await handler(request)

    return web.Application(middlewares=[record])


def _html(body: str) -> web.Response:
    return web.Response(text=f"<!doctype html><html><body>{body}</body></html>", content_type="text/html")


def hard_cases_app(log: RequestLog, other_host: str, closed_port: int) -> web.Application:
    """The hard cases of link checking, one link each from the home page."""
    app = _logging_app(log)
    hits: Counter[str] = Counter()
    routes = web.RouteTableDef()

    @routes.get("/")
    async def index(request: web.Request) -> web.Response:
        return _html(
            """
            <a href="/chain/1">chain</a>
            <a href="/loop/a">loop</a>
            <a href="/to-404">redirect to 404</a>
            <a href="/missing">404</a> <a href="/gone">410</a> <a href="/boom">500</a>
            <a href="%(other)s/head-405">head 405</a>
            <a href="/busy-429">429</a> <a href="/busy-503">503</a>
            <a href="/private/secret.html">robots</a>
            <a href="/base/page.html">base</a>
            <a href="/srcset.html">srcset</a>
            <a href=" /q?a=1&amp;b=2 ">entities</a>
            <a href="/café.html">non-ascii</a>
            <a href="%(other)s/ok">other host</a>
            <a href="http://127.0.0.1:%(closed)d/">refused</a>
            <a href="http://no-such-host.invalid/">unresolvable</a>
            <a href="mailto:someone@example.org">mail</a> <a href="javascript:void(0)">js</a>
            <a href="#top">fragment only</a>
            """  # noqa: UP031 - an HTML template: braces are its own
            % {"other": other_host, "closed": closed_port}
        )

    @routes.get("/robots.txt")
    async def robots(request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nDisallow: /private/\n")

    @routes.get("/chain/{n}")
    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n < 3:
            raise web.HTTPFound(f"/chain/{n + 1}") if n == 2 else web.HTTPMovedPermanently(f"/chain/{n + 1}")
        return _html("end of the chain")

    @routes.get("/loop/{x}")
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop/b" if request.match_info["x"] == "a" else "/loop/a")

    @routes.get("/to-404")
    async def to_404(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/missing")

    @routes.get("/gone")
    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=410, text="gone")

    @routes.get("/boom")
    async def boom(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def busy(request: web.Request, status: int) -> web.Response:
        hits[request.path] += 1
        if hits[request.path] == 1:
            return web.Response(status=status, headers={"Retry-After": "1"})
        return web.Response(text="ready now")

    @routes.get("/busy-429")
    async def busy_429(request: web.Request) -> web.Response:
        return await busy(request, 429)

    @routes.get("/busy-503")
    async def busy_503(request: web.Request) -> web.Response:
        return await busy(request, 503)

    @routes.get("/private/secret.html")
    async def secret(request: web.Request) -> web.Response:
        return _html("robots.txt says nobody should see this")

    @routes.get("/base/page.html")
    async def base_page(request: web.Request) -> web.Response:
        return _html('<head><base href="/based/"></head><a href="target.html">relative to base</a>')

    @routes.get("/based/target.html")
    async def based_target(request: web.Request) -> web.Response:
        return _html("found through the base")

    @routes.get("/srcset.html")
    async def srcset(request: web.Request) -> web.Response:
        return _html('<img src="/img/a.png" srcset="/img/a.png 1x, /img/missing.png 2x">')

    @routes.get("/img/a.png")
    async def image(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n", content_type="image/png")

    @routes.get("/q")
    async def query(request: web.Request) -> web.Response:
        if request.query.get("a") == "1" and request.query.get("b") == "2":
            return web.Response(text="query ok")
        return web.Response(status=404)

    @routes.get("/café.html")
    async def cafe(request: web.Request) -> web.Response:
        return _html("un café")

    app.add_routes(routes)
    return app


def other_host_app(log: RequestLog) -> web.Application:
    """The second host: its pages are checked, never crawled."""
    app = _logging_app(log)

    async def ok(request: web.Request) -> web.Response:
        return _html('<a href="/never-crawled">must not be followed</a>')

    async def head_405(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=405)
        return web.Response(text="only GET")

    app.router.add_get("/ok", ok)
    app.router.add_route("*", "/head-405", head_405)
    return app


def generated_site_app(log: RequestLog, pages: int, delay: float = 0.0) -> web.Application:
    """Pages 0..pages-1, each linking to the next three and to one missing page per ten."""
    app = _logging_app(log)

    async def page(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n >= pages:
            return web.Response(status=404)
        if delay:
            await asyncio.sleep(delay)
        links = [f'<a href="/p/{m}">{m}</a>' for m in range(n + 1, min(n + 4, pages))]
        if n % 10 == 0:
            links.append(f'<a href="/p/{pages + n}">missing</a>')
        return _html(" ".join(links))

    async def index(request: web.Request) -> web.Response:
        return _html('<a href="/p/0">start</a>')

    app.router.add_get("/", index)
    app.router.add_get("/p/{n:\\d+}", page)
    return app


def generated_site_urls(base: str, pages: int) -> tuple[set[str], set[str]]:
    """(ok URLs, broken URLs) that generated_site_app serves under `base`."""
    ok = {f"{base}/"} | {f"{base}/p/{n}" for n in range(pages)}
    broken = {f"{base}/p/{pages + n}" for n in range(0, pages, 10)}
    return ok, broken


@contextlib.asynccontextmanager
async def coordinator(db_path: Path, **options: Any) -> AsyncIterator[str]:
    """A real coordinator (`coordinator.api.serve`: API, store, bundle seeder with the built-in
    link-check bundle) on 127.0.0.1, the tests' own key one of its operators; yields its URL."""
    from coordinator.api import serve as serve_coordinator
    from tests.processes import operator_key

    options.setdefault("operator_keys", [operator_key().public_hex])
    options.setdefault("rechecks", False)  # as `processes.start_coordinator`: a test asks for them
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_coordinator(
            "127.0.0.1", 0, db_path, ready=lambda port: None if ready.done() else ready.set_result(port), **options
        )
    )
    try:
        waited: set[asyncio.Future[Any]] = {task, ready}
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            task.result()  # raises what stopped it
        yield f"http://127.0.0.1:{ready.result()}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
