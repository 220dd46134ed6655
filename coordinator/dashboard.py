"""The operator's dashboard, served by the coordinator under /dashboard/: read-only HTML.

    /dashboard/                     jobs with progress, peers with capacity and usage, the
                                    bandwidth-share plot, hosts held back (politeness)
    /dashboard/jobs/ID              one job: progress and its problems, as its workload shows
                                    them (`workloads.renderers`)
    /dashboard/jobs/ID/report.json  the job's results as JSON Lines; .csv, and .html where its
                                    workload renders HTML (`workloads.renderers`)

Everything is drawn here: HTML with inline SVG, no script, no font or stylesheet from
elsewhere. Pages refresh themselves every few seconds while they show running work.

Access needs the operator's token (kept beside the database, printed by `osaas coordinator
dashboard`) or the token of a key with a role (derived from the operator's token and the key,
so nothing more is stored; `--owner NAME`), unless the operator serves the dashboard publicly.
An owner's token shows that owner's jobs only (`coordinator.roles`); a viewer's, every job. The token comes
once in the address (`?token=`); the answer keeps it in an HttpOnly, SameSite=Strict cookie
for /dashboard/ and sends the browser on to the same address without it.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from coordinator.roles import Role
from coordinator.store import HostOverview, NotFound, PeerOverview, Store
from overlay.files import secret_token
from overlay.units import format_size
from overlay.wire import JobStatus
from workloads import renderers

PREFIX = "/dashboard"
COOKIE = "osaas_dashboard"
TOKEN_SUFFIX = ".dashboard-token"
REFRESH_SECONDS = 3
PEERS_SHOWN = 200
PLOTTED_PEERS = 40
HOSTS_SHOWN = 100
PROBLEMS_SHOWN = 2000  # problems listed on a job's page (it refreshes while the job runs)
PEER_SEEN_WITHIN = 600.0  # seconds: peers quiet for longer are left out
MAX_REPORT_ITEMS = 1_000_000  # results in one download
_RESULTS_PAGE = 5000

esc = html.escape


@dataclass(frozen=True, slots=True)
class DashboardAccess:
    operator_token: str
    public: bool = False  # the operator lets anyone who reaches the coordinator look

    def owner_token(self, owner_key_hex: str) -> str:
        """The token the operator hands to the owner of key `owner_key_hex`."""
        return hmac.new(self.operator_token.encode(), b"owner:" + owner_key_hex.encode(), hashlib.sha256).hexdigest()


def operator_token(files: Path) -> str:
    """The operator's dashboard token, kept with the coordinator's files (mode 0600): beside a
    SQLite database, in the state dir with a PostgreSQL one."""
    return secret_token(files.with_name(files.name + TOKEN_SUFFIX))


_EVERYTHING = "*"  # what the operator's token (or a public dashboard) sees: every job
_VIEWER = web.RequestKey("viewer", str)


def dashboard_app(store: Store, access: DashboardAccess, clock: Callable[[], float] = time.time) -> web.Application:
    async def holder(token: str | None) -> str | None:
        """Whose token it is: _EVERYTHING for the operator or a viewer, an owner's key for an
        owner (who sees its own jobs), None for no token of ours."""
        if access.public:
            return _EVERYTHING
        if not token:
            return None
        if hmac.compare_digest(token.encode(), access.operator_token.encode()):
            return _EVERYTHING
        for grant in await store.grants():
            if hmac.compare_digest(token.encode(), access.owner_token(grant.public_key).encode()):
                return grant.public_key if grant.role == Role.OWNER else _EVERYTHING
        return None

    def sees(request: web.Request, job: JobStatus) -> bool:
        viewer = request[_VIEWER]
        return viewer == _EVERYTHING or job.owner == viewer

    async def visible_job(request: web.Request) -> JobStatus:
        job_id = int(request.match_info["job_id"])
        status = await store.job_status(job_id)
        if not sees(request, status):
            raise NotFound(f"no job {job_id}")  # an owner's dashboard does not show others' jobs
        return status

    @web.middleware
    async def guarded(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        given = request.query.get("token")
        if given is not None:
            if await holder(given) is None:
                return _page(403, "Not allowed", "<p>That token is not this coordinator's.</p>")
            onward = web.HTTPSeeOther(
                request.rel_url.with_query({k: v for k, v in request.query.items() if k != "token"})
            )
            onward.set_cookie(COOKIE, given, path=PREFIX, httponly=True, samesite="Strict")
            raise onward
        viewer = await holder(request.cookies.get(COOKIE))
        if viewer is None:
            return _page(
                401,
                "Token needed",
                "<p>This dashboard needs the operator's or an owner's token: "
                "<code>osaas coordinator dashboard --db DB</code> prints its address.</p>",
            )
        request[_VIEWER] = viewer
        try:
            response = await handler(request)
        except NotFound as exc:
            return _page(404, "Not found", f"<p>{esc(str(exc))}</p>")
        except web.HTTPNotFound:
            return _page(404, "Not found", "<p>There is no such page on this dashboard.</p>", back=True)
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def overview(request: web.Request) -> web.Response:
        now = clock()
        viewer = request[_VIEWER]
        jobs = await store.list_jobs(None if viewer == _EVERYTHING else viewer)
        peers = await store.peers_overview(now - PEER_SEEN_WITHIN, PEERS_SHOWN)
        hosts = await store.hosts_overview(now, HOSTS_SHOWN)
        running = any(job.state == "running" for job in jobs)
        body = "".join(
            [
                "<h2>Jobs</h2>",
                _jobs_table(jobs),
                "<h2>Bandwidth share</h2>",
                _share_plot(peers),
                "<h2>Peers</h2>",
                _peers_table(peers, now),
                "<h2>Politeness</h2>",
                _hosts_table(hosts, {p.peer_id: p.name for p in peers}, now),
            ]
        )
        return _page(200, "osaas coordinator", body, refresh=running or bool(peers))

    async def job(request: web.Request) -> web.Response:
        status = await visible_job(request)
        job_id = status.job_id
        if status.state == "deleted":  # its status stays; nothing else of it does
            gone = "<p>Its results and logs were deleted (<code>osaas job delete</code>, or kept no longer).</p>"
            return _page(200, f"Job {job_id}", _jobs_table([status]) + gone, back=True)
        columns = await store.job_columns(job_id)
        own = renderers.of(status.workload, columns)
        downloads = [("json", "JSON Lines"), ("csv", "CSV")]
        if own is not None and "html" in own.formats:
            downloads.append(("html", "HTML"))
        links = " · ".join(f'<a href="{PREFIX}/jobs/{job_id}/report.{fmt}">{label}</a>' for fmt, label in downloads)
        parts = [_jobs_table([status]), f"<p>Download the whole report: {links}</p>"]
        if own is not None and own.problems_html is not None:
            problems = await store.job_results(job_id, 0, PROBLEMS_SHOWN + 1, counted_as=own.problems)
            parts += [
                "<h2>Problems</h2>",
                own.problems_html(problems[:PROBLEMS_SHOWN]),
                f"<p class=muted>The first {PROBLEMS_SHOWN:,} problems; the downloads hold them all.</p>"
                if len(problems) > PROBLEMS_SHOWN
                else "",
            ]
        css = own.problems_css if own is not None else ""
        return _page(200, f"Job {job_id}", "".join(parts), refresh=status.state == "running", back=True, css=css)

    async def report(request: web.Request) -> web.Response:
        status = await visible_job(request)  # NotFound for a job that is not there (or not theirs)
        job_id = status.job_id
        fmt = request.match_info["fmt"]
        columns = await store.job_columns(job_id)
        items = await _all_results(store, job_id)
        try:
            text = renderers.render(status.workload, columns, items, "jsonl" if fmt == "json" else fmt)
        except renderers.UnknownFormat as exc:
            return _page(404, "Not found", f"<p>{esc(str(exc))}</p>")
        content_type = {"json": "application/x-ndjson", "csv": "text/csv", "html": "text/html"}[fmt]
        return web.Response(
            text=text,
            content_type=content_type,
            headers={"Content-Disposition": f'attachment; filename="job-{job_id}.{"jsonl" if fmt == "json" else fmt}"'},
        )

    app = web.Application(middlewares=[guarded])
    app.router.add_get("/", overview)
    app.router.add_get(r"/jobs/{job_id:[0-9]{1,18}}", job)
    app.router.add_get(r"/jobs/{job_id:[0-9]{1,18}}/report.{fmt:json|csv|html}", report)
    return app


async def _all_results(store: Store, job_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while len(items) < MAX_REPORT_ITEMS:
        page = await store.job_results(job_id, len(items), _RESULTS_PAGE)
        items.extend(page)
        if len(page) < _RESULTS_PAGE:
            break
    return items


# ---- pieces of pages ------------------------------------------------------------------------


def _jobs_table(jobs: list[JobStatus]) -> str:
    if not jobs:
        return "<p class=muted>No jobs yet.</p>"
    rows = []
    for job in reversed(jobs):
        fraction = job.items_done / job.items_total if job.items_total else 0.0
        counts = ", ".join(f"{n} {result}" for result, n in sorted(job.counts.items()) if result) or "nothing yet"
        rows.append(
            f'<tr class="job" data-job="{job.job_id}"><td><a href="{PREFIX}/jobs/{job.job_id}">{job.job_id}</a></td>'
            f'<td>{esc(job.workload)}</td><td class="{esc(job.state)}">{esc(job.state)}</td>'
            f'<td><div class=bar><div style="width:{fraction * 100:.1f}%"></div></div>'
            f"<span class=progress>{esc(job.progress)}</span></td>"
            f"<td>{esc(counts)}</td><td>{job.units_done} of {job.units_total}</td></tr>"
        )
    return (
        "<table><thead><tr><th>job</th><th>workload</th><th>state</th><th>progress</th><th>results</th>"
        f"<th>units</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _share_plot(peers: list[PeerOverview]) -> str:
    """Each peer's bandwidth now (down + up) against what it offers (its capacity): the
    fairness picture. One row per peer, bars scaled to the largest capacity."""
    shown = peers[:PLOTTED_PEERS]
    if not shown:
        return "<p class=muted>No peers heard from lately.</p>"
    widest = max(max(p.capacity for p in shown), max(_rate(p) for p in shown), 1.0)
    row, label_width, bar_width = 22, 170, 520
    parts = []
    for i, peer in enumerate(shown):
        y = i * row
        offered = peer.capacity / widest * bar_width
        used = min(_rate(peer), widest) / widest * bar_width
        over = _rate(peer) > peer.capacity * 1.05 > 0
        parts.append(
            f'<text x="0" y="{y + 15}" class="label">{esc(peer.name[:24])}</text>'
            f'<rect x="{label_width}" y="{y + 4}" width="{offered:.1f}" height="14" class="offered"/>'
            f'<rect x="{label_width}" y="{y + 7}" width="{used:.1f}" height="8" class="{"over" if over else "used"}"/>'
            f'<text x="{label_width + bar_width + 8}" y="{y + 15}" class="label">'
            f"{esc(format_size(_rate(peer)))}/s of {esc(format_size(peer.capacity))}/s</text>"
        )
    height = len(shown) * row + 4
    return (
        f'<svg class="share" role="img" aria-label="bandwidth used against bandwidth offered, per peer" '
        f'width="{label_width + bar_width + 180}" height="{height}" viewBox="0 0 {label_width + bar_width + 180} {height}">'
        f"{''.join(parts)}</svg>"
        "<p class=muted>Light bar: what the peer offers (its budget as a rate); dark bar: what it uses now; "
        "red: more than it offers.</p>"
    )


def _peers_table(peers: list[PeerOverview], now: float) -> str:
    if not peers:
        return ""
    rows = []
    for peer in peers:
        used = (
            "" if peer.used is None else format_size(peer.used) + (f" of {format_size(peer.cap)}" if peer.cap else "")
        )
        rows.append(
            f"<tr><td>{esc(peer.name)}</td><td><code>{esc(peer.peer_id[:12])}</code></td>"
            f"<td>{esc(format_size(peer.capacity))}/s</td><td>{esc(format_size(peer.down_rate or 0))}/s</td>"
            f"<td>{esc(format_size(peer.up_rate or 0))}/s</td><td>{esc(used)}</td><td>{peer.hosts}</td>"
            f"<td>{'' if peer.throughput is None else f'{peer.throughput:.1f}'}</td><td>{now - peer.last_seen:.0f} s ago</td>"
            + (
                f'<td class="quarantined">quarantined: {esc(peer.quarantined)}</td>'
                if peer.quarantined
                else "<td></td>"
            )
            + "</tr>"
        )
    return (
        "<table><thead><tr><th>peer</th><th>key</th><th>offers</th><th>down</th><th>up</th><th>used this period</th>"
        f"<th>websites</th><th>URLs/s</th><th>heard from</th><th>trust</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _hosts_table(hosts: list[HostOverview], names: dict[str, str], now: float) -> str:
    if not hosts:
        return "<p class=muted>No website is leased or held back now.</p>"
    rows = []
    for host in hosts:
        wait = max(0.0, host.next_allowed_at - now)
        rows.append(
            f"<tr><td>{esc(host.key)}</td><td>{esc(names.get(host.peer_id or '', (host.peer_id or '')[:12]))}</td>"
            f"<td>{'yes' if host.leased else ''}</td><td>{f'{wait:.1f} s' if wait else ''}</td>"
            f"<td>{f'{host.crawl_delay:g} s' if host.crawl_delay else ''}</td>"
            f"<td>{f'{host.backoff:g} s' if host.backoff else ''}</td></tr>"
        )
    return (
        "<p class=muted>One peer at a time per website; each waits its pause (and robots.txt crawl delay, "
        "and backoff after 429/503) between units.</p>"
        "<table><thead><tr><th>website</th><th>peer</th><th>leased now</th><th>next unit in</th><th>crawl delay</th>"
        f"<th>backoff</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _rate(peer: PeerOverview) -> float:
    return (peer.down_rate or 0.0) + (peer.up_rate or 0.0)


def _page(
    status: int, title: str, body: str, *, refresh: bool = False, back: bool = False, css: str = ""
) -> web.Response:
    """A whole page around `body`; `css`: a workload's rules for the fragment it drew."""
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    nav = f'<p><a href="{PREFIX}/">all jobs and peers</a></p>' if back else ""
    return web.Response(
        status=status,
        content_type="text/html",
        text=f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{meta}<title>{esc(title)}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #1b263b; padding: 0 16px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 13px; letter-spacing: .08em; text-transform: uppercase; color: #5c677d; margin-top: 28px; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid #e5e5e5; vertical-align: top; }}
.bar {{ display: inline-block; width: 140px; height: 8px; background: #e5e7eb; border-radius: 4px; overflow: hidden; margin-right: 8px; }}
.bar > div {{ height: 100%; background: #2a9d8f; }}
.muted {{ color: #6b7280; }} .running {{ color: #2a9d8f; }} .done {{ color: #5c677d; }} .quarantined {{ color: #b00020; }}
svg.share .label {{ font: 12px system-ui, sans-serif; fill: #1b263b; }}
svg.share .offered {{ fill: #dbeafe; }} svg.share .used {{ fill: #1d4ed8; }} svg.share .over {{ fill: #b00020; }}
{css}</style></head>
<body><h1>{esc(title)}</h1>{nav}{body}</body></html>
""",
    )
