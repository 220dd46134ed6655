"""`osaas demo`: serve the small sample site shipped in osaas/demo_site and check it.

The site has broken links on purpose (404, 410, 500, a redirect to a missing page, a name
that does not resolve, a robots.txt exclusion): they are what the demo shows.
"""

from __future__ import annotations

import contextlib
import mimetypes
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

DEMO_SITE = Path(__file__).with_name("demo_site")
_REDIRECTS = {"/old-page": (301, "/about.html"), "/redirect-to-missing": (302, "/nowhere.html")}
_STATUS_PAGES = {"/server-error": 500, "/gone": 410}


def make_site_app(root: Path = DEMO_SITE) -> web.Application:
    root = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in _REDIRECTS:
            status, location = _REDIRECTS[path]
            return web.Response(status=status, headers={"Location": location})
        if path in _STATUS_PAGES:
            return web.Response(status=_STATUS_PAGES[path], text="sorry")
        target = (root / path.lstrip("/")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if root not in target.parents or not target.is_file():
            return web.Response(status=404, text="not found")
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        body = b"" if request.method == "HEAD" else target.read_bytes()
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


@contextlib.asynccontextmanager
async def serve_site(host: str = "127.0.0.1", port: int = 0, root: Path = DEMO_SITE) -> AsyncIterator[str]:
    """Serve `root` and yield its base URL."""
    runner = web.AppRunner(make_site_app(root), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{bound_port}/"
    finally:
        await runner.cleanup()
