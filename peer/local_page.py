"""The volunteer's local web page: the peer's status, live, and its controls, on 127.0.0.1.

    GET  /                 the page (one HTML document; no script, style or font from elsewhere)
    GET  /status           the status document (peer.status)
    GET  /budget           the budget as exact texts, for the page's form (peer.budget.budget_texts)
    POST /control/pause    stop working (running units are given back) until resumed
    POST /control/resume
    POST /control/budget   {"max_down": "1MB/s", "max_up": "", "cap": "2GB/day",
                            "max_fetches": "8", "active_hours": "08:00-12:00, 13:00-18:00"}
                           "" means no limit; applied at once and saved to the config file
    GET  /work             whom the peer works for (peer.work_choice)
    POST /control/work     {"coordinator": URL} for a peer started with one, else
                           {"network": NAME, "prefer": URL or ""}; from the next lease on, saved

Only this machine reaches 127.0.0.1, but every local user's programs do, and so does every web
page the volunteer's browser shows (a page may send requests to 127.0.0.1). Hence:
- the Host header must name this server (127.0.0.1:PORT or localhost:PORT), or the request is
  refused: a site whose name someone points at 127.0.0.1 (DNS rebinding) reads nothing;
- a change needs the token kept in the data dir (mode 0600), in an `X-Osaas-Token` header. A
  page from elsewhere cannot add that header to a request to us without our consent (a CORS
  preflight, which this server never grants), and other users cannot read the data dir.
The page learns the token from its address, `/#token=...` (`osaas peer page` prints it, and
the peer logs it at start); the fragment never leaves the browser, and the page keeps the token
in the tab's session storage.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from overlay.files import secret_token
from peer.budget import Budget, BudgetError, budget_from, budget_texts
from peer.status import STATUS_HOST, PeerStatus, to_json
from peer.work_choice import WorkChoice, WorkChoiceError

log = logging.getLogger(__name__)

TOKEN_FILE = "local-page.token"
TOKEN_HEADER = "X-Osaas-Token"
MAX_BODY = 4096  # a budget form is a few hundred bytes
_BUDGET_FIELDS = ("max_down", "max_up", "cap", "max_fetches", "active_hours")
_LABELS = {
    "--max-down": "download limit",
    "--max-up": "upload limit",
    "--cap": "transfer cap",
    "--max-fetches": "fetches at once",
    "--active-hours": "active hours",
}


class PeerControls(Protocol):
    """What the page reads and changes: the running peer (peer.agent.Agent)."""

    def status(self) -> PeerStatus: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def set_budget(self, budget: Budget) -> None: ...

    @property
    def work_choice(self) -> WorkChoice: ...

    @property
    def works_by_url(self) -> bool: ...

    def set_work_choice(self, form: Any) -> WorkChoice: ...


def load_or_create_token(data_dir: Path) -> str:
    """The page's token: made once, kept in the data dir, readable by its owner only."""
    return secret_token(data_dir / TOKEN_FILE)


def page_url(port: int, token: str) -> str:
    return f"http://{STATUS_HOST}:{port}/#token={token}"


def budget_of_form(form: Any) -> Budget:
    """The budget a submitted form asks for; raises BudgetError with one line."""
    if not isinstance(form, dict) or not set(form) <= set(_BUDGET_FIELDS):
        raise BudgetError(f"the form is a map with keys among {', '.join(_BUDGET_FIELDS)}")
    values: dict[str, Any] = {}
    for key in _BUDGET_FIELDS:
        value = form.get(key, "")
        if not isinstance(value, str) or len(value) > 200:
            raise BudgetError(f"{key} must be text (at most 200 characters)")
        values[key] = value.strip() or None
    hours = values.pop("active_hours")
    try:
        return budget_from(
            None, **values, active_hours=[h.strip() for h in hours.split(",") if h.strip()] if hours else None
        )
    except BudgetError as exc:  # it names the flags of `osaas peer run`; the page has labels
        flag, _, reason = str(exc).partition(": ")
        raise BudgetError(f"{_LABELS[flag]}: {reason}" if flag in _LABELS else str(exc)) from exc


def local_app(controls: PeerControls, token: str) -> web.Application:
    @web.middleware
    async def only_this_server(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else None
        if request.host not in {f"{STATUS_HOST}:{port}", f"localhost:{port}"}:
            return _error(403, f"this page answers only as {STATUS_HOST}:{port}")
        response = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"  # no clicks through another site's frame
        return response

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=_PAGE,
            content_type="text/html",
            headers={
                "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"
            },
        )

    async def status(request: web.Request) -> web.Response:
        return web.json_response(to_json(controls.status()))

    async def budget_form(request: web.Request) -> web.Response:
        return web.json_response(budget_texts(controls.status().budget))

    async def work_form(request: web.Request) -> web.Response:
        choice = controls.work_choice
        return web.json_response(
            {
                "by_url": controls.works_by_url,
                "coordinator": choice.coordinator or "",
                "network": choice.network,
                "prefer": choice.prefer or "",
            }
        )

    def change(act: Callable[[Any], str]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            given = request.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(
                    403, f"changes need the page's token ({TOKEN_HEADER}); open the address `osaas peer page` prints"
                )
            if request.content_length is not None and request.content_length > MAX_BODY:
                return _error(413, f"the body is larger than {MAX_BODY} bytes")
            body = await request.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                return _error(413, f"the body is larger than {MAX_BODY} bytes")
            form = None
            if body:
                if request.content_type != "application/json":
                    return _error(415, "the body must be JSON (application/json)")
                try:
                    form = json.loads(body)
                except ValueError:
                    return _error(400, "the body is not valid JSON")
            try:
                message = act(form)
            except (BudgetError, WorkChoiceError) as exc:
                return _error(400, str(exc))
            return web.json_response({"ok": True, "message": message})

        return handler

    def pause(form: Any) -> str:
        controls.pause()
        return "paused"

    def resume(form: Any) -> str:
        controls.resume()
        return "resumed"

    def budget(form: Any) -> str:
        controls.set_budget(budget_of_form(form))
        return "budget saved"

    def work(form: Any) -> str:
        choice = controls.set_work_choice(form)
        return f"now working for {choice.coordinator or 'network ' + choice.network}" + (
            f", {choice.prefer} first" if choice.prefer and not choice.coordinator else ""
        )

    app = web.Application(middlewares=[only_this_server], client_max_size=MAX_BODY)
    app.router.add_get("/", page)
    app.router.add_get("/status", status)
    app.router.add_get("/budget", budget_form)
    app.router.add_get("/work", work_form)
    app.router.add_post("/control/pause", change(pause))
    app.router.add_post("/control/resume", change(resume))
    app.router.add_post("/control/budget", change(budget))
    app.router.add_post("/control/work", change(work))
    return app


@contextlib.asynccontextmanager
async def serve_local_page(port: int, controls: PeerControls, token: str) -> AsyncIterator[int | None]:
    """Serve the page on 127.0.0.1:`port` (0: any free port) while in the block; yields the
    port, or None when it could not be had (the peer works on without a page)."""
    runner = web.AppRunner(local_app(controls, token), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, STATUS_HOST, port)
        try:
            await site.start()
        except OSError as exc:
            log.warning(
                "status page not served on %s:%d (%s); choose another port with --status-port",
                STATUS_HOST,
                port,
                exc.strerror or exc,
            )
            yield None
            return
        actual = runner.addresses[0][1]
        # Never the token itself: logs are read by more people than the volunteer.
        log.info(
            "status served on http://%s:%d/status; the volunteer's page: the address `osaas peer page` prints",
            STATUS_HOST,
            actual,
        )
        yield actual
    finally:
        await runner.cleanup()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


_PAGE = (Path(__file__).with_name("local_page.html")).read_text(encoding="utf-8")
