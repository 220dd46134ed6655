"""What a coordinator counts for Prometheus, served on `GET /metrics` in prometheus_client's
text format.

Counted as it happens: requests by route and status and their latency (`count_requests`, a
middleware), units leased and reported (by outcome: done, failed, refused), items streamed,
each store call's latency by call, and planning (the store's `rebalance`). Read from the store
at each scrape (`refresh`): the queue (items pending, units queued and leased), peers seen in
the last five minutes and each one's rates as it last said them. Each app has a registry of
its own, so several coordinators in one process (tests) never share counts.

`/metrics` names peers (the first 16 hex digits of their key) and their rates: like the
dashboard, it needs the operator's token (`Authorization: Bearer TOKEN`) unless the dashboard
is public.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from coordinator.edge import CLOCK, STORE
from coordinator.store import Store
from overlay.wire import Report, ReportResponse
from overlay.wire_reports import ReportVerdict

PEERS_SEEN_SECONDS = 300.0  # a peer counts as present if seen this recently
MAX_PEERS_SHOWN = 1000  # per-peer series at most: the busiest by capacity
PEER_LABEL_DIGITS = 16
# Store calls take from a tenth of a millisecond (a read) to seconds (a plan of 20,000 websites).
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("done", "failed", "refused")
# A method label from this set, else "other": anyone may send any method, and each new label
# value would be a series kept for ever.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


@dataclass(frozen=True, slots=True)
class MetricsAccess:
    """Who may read /metrics: the operator's token, or anyone when `public`."""

    operator_token: str
    public: bool = False

    def allows(self, authorization: str | None) -> bool:
        if self.public:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.operator_token.encode())


class Metrics:
    """One coordinator's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "osaas_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "osaas_http_request_seconds", "Time to answer an HTTP request", ["route"], registry=r, buckets=STORE_BUCKETS
        )
        self.units_leased = Counter("osaas_units_leased", "Work units granted to peers", registry=r)
        self.units_reported = Counter(
            "osaas_units_reported",
            "Unit reports: done (exit 0), failed (the workload failed), refused (stale lease, bad payload)",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.units_reported.labels(outcome)
        self.items_streamed = Counter(
            "osaas_items_streamed", "Items a running unit streamed that the coordinator took", registry=r
        )
        self.store_seconds = Histogram(
            "osaas_store_call_seconds", "Time each store call took", ["call"], registry=r, buckets=STORE_BUCKETS
        )
        self.plan_seconds = Histogram(
            "osaas_plan_seconds", "Time to assign websites to peers (a plan)", registry=r, buckets=STORE_BUCKETS
        )
        self.store_up = Gauge("osaas_store_up", "1 if the store answered the last scrape, else 0", registry=r)
        self.items_pending = Gauge("osaas_items_pending", "Items of running jobs not done yet", registry=r)
        self.units_open = Gauge("osaas_units_open", "Units not done, by state", ["state"], registry=r)
        self.peers = Gauge("osaas_peers", f"Peers seen in the last {PEERS_SEEN_SECONDS:.0f} s", registry=r)
        self.peer_rate = Gauge(
            "osaas_peer_bytes_per_second",
            "A peer's transfer rate as it last said it, by direction",
            ["peer", "direction"],
            registry=r,
        )
        self.peer_capacity = Gauge(
            "osaas_peer_capacity_bytes_per_second", "The rate a peer says it can sustain", ["peer"], registry=r
        )

    # ---- as it happens -------------------------------------------------------------------

    def store_call(self, call: str, seconds: float) -> None:
        self.store_seconds.labels(call).observe(seconds)
        if call == "rebalance":
            self.plan_seconds.observe(seconds)

    def leased(self, units: int) -> None:
        self.units_leased.inc(units)

    def reported(self, report: Report, response: ReportResponse | None) -> None:
        """One report's outcome (`response` None: refused)."""
        if response is None:
            self.units_reported.labels("refused").inc()
        else:
            self.units_reported.labels("done" if report.exit_code == 0 else "failed").inc()

    def reported_batch(self, reports: list[Report], verdicts: list[ReportVerdict]) -> None:
        for report, verdict in zip(reports, verdicts, strict=False):
            outcome = "refused" if not verdict.accepted else "done" if report.exit_code == 0 else "failed"
            self.units_reported.labels(outcome).inc()

    def streamed(self, items: int) -> None:
        self.items_streamed.inc(items)

    # ---- at each scrape ------------------------------------------------------------------

    async def refresh(self, store: Store, now: float) -> None:
        """Read what the store knows now; the store's gauges keep their last values and
        osaas_store_up says 0 when it does not answer."""
        try:
            depth = await store.queue_depth()
            peers = await store.peers_overview(now - PEERS_SEEN_SECONDS, MAX_PEERS_SHOWN)
            present = await store.peer_count(now - PEERS_SEEN_SECONDS)
        except Exception:
            self.store_up.set(0)
            raise
        self.store_up.set(1)
        self.items_pending.set(depth.items_pending)
        self.units_open.labels("queued").set(depth.units_queued)
        self.units_open.labels("leased").set(depth.units_leased)
        self.peers.set(present)
        # Peers gone quiet leave the per-peer series, so the series stay bounded.
        self.peer_rate.clear()
        self.peer_capacity.clear()
        for peer in peers:
            label = peer.peer_id[:PEER_LABEL_DIGITS]
            self.peer_capacity.labels(label).set(peer.capacity)
            if peer.down_rate is not None:
                self.peer_rate.labels(label, "down").set(peer.down_rate)
            if peer.up_rate is not None:
                self.peer_rate.labels(label, "up").set(peer.up_rate)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)
METRICS_ACCESS = web.AppKey("metrics_access", MetricsAccess)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each request's route (its pattern, not its path: job ids would make a series each),
    method, status and time."""
    metrics = request.config_dict[METRICS]
    began = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in METHODS else "other"
        metrics.requests.labels(route, method, str(status)).inc()
        metrics.request_seconds.labels(route).observe(time.perf_counter() - began)


async def serve_metrics(request: web.Request) -> web.Response:
    if not request.app[METRICS_ACCESS].allows(request.headers.get("Authorization")):
        return web.Response(
            status=401,
            text="metrics need the operator's token: Authorization: Bearer TOKEN (`osaas coordinator dashboard`)\n",
            headers={"WWW-Authenticate": 'Bearer realm="osaas metrics"'},
        )
    metrics = request.app[METRICS]
    try:
        await metrics.refresh(request.app[STORE], request.app[CLOCK]())
    except Exception:  # the store's gauges say it; the counters are still worth reading
        pass
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
