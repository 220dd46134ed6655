"""What the egress measures of one fetch for a process API version 2 workload: how long its
name took to resolve, its connection to open, its TLS handshake, its first byte and the whole;
the server's certificate and the address that answered (`workloads.process_api.FetchDetails`).

aiohttp's tracing marks the phases (`trace_config`); a TLS context of our own (`tls_context`)
marks where TCP ends and TLS begins, since aiohttp opens a connection and shakes hands in one
step. The request in flight is found through a context variable set around it (`measuring`),
which the event loop carries into the TLS protocol's callbacks. Times are from the monotonic
clock, in seconds; a phase that did not happen (a cached name, a reused connection) is None.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import ssl
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp.connector import Connection

from workloads.process_api import TIMINGS, FetchDetails, FetchResult

_MAX_NAME = 1000  # characters of an issuer or subject kept
_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C"}
_MEASURING: contextvars.ContextVar[FetchTimer | None] = contextvars.ContextVar("fetch_timer", default=None)


class FetchTimer:
    """The marks of one request, set by aiohttp's trace callbacks and the TLS context."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended: float | None = None
        self.dns_started: float | None = None
        self.dns_ended: float | None = None
        self.connecting: float | None = None
        self.tls_started: float | None = None
        self.connected: float | None = None
        self.sent: float | None = None
        self.first_byte: float | None = None
        self.tls: dict[str, Any] | None = None
        self.address: str | None = None

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        token = _MEASURING.set(self)
        self.started = time.monotonic()
        try:
            yield
        finally:
            self.ended = time.monotonic()
            _MEASURING.reset(token)

    def answered(self, response: aiohttp.ClientResponse) -> None:
        """The status line and headers are in: the first byte's time, and the certificate and
        address the response read off its connection (`MeasuredResponse`)."""
        self.first_byte = time.monotonic()
        if isinstance(response, MeasuredResponse):
            self.address, self.tls = response.address, response.certificate

    def details(self) -> FetchDetails:
        timing = {
            "dns": _between(self.dns_started, self.dns_ended),
            "connect": _between(self.dns_ended or self.connecting, self.tls_started or self.connected)
            if self.connecting is not None
            else None,
            "tls": _between(self.tls_started, self.connected),
            "first_byte": _between(self.sent or self.connected or self.started, self.first_byte),
            "total": _between(self.started, self.ended),
        }
        return FetchDetails(timing, self.tls, self.address)


class MeasuredResponse(aiohttp.ClientResponse):
    """A response that notes the address and TLS certificate of the connection it is read
    from, when it starts: a small response releases its connection before anyone asks."""

    address: str | None = None
    certificate: dict[str, Any] | None = None

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        if transport is not None:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
                self.address = peer[0]
            tls = transport.get_extra_info("ssl_object")
            if isinstance(tls, ssl.SSLObject):
                self.certificate = certificate_facts(tls)
        return await super().start(connection)


def _between(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start), 6)


def certificate_facts(tls: ssl.SSLObject) -> dict[str, Any] | None:
    """The TLS version and the verified certificate's issuer, subject and expiry."""
    cert = tls.getpeercert()
    if not cert:
        return None
    not_after = cert.get("notAfter")
    try:
        expires = int(ssl.cert_time_to_seconds(not_after)) if isinstance(not_after, str) else None
    except ValueError:
        expires = None
    return {
        "version": tls.version() or "",
        "issuer": _name(cert.get("issuer", ())),
        "subject": _name(cert.get("subject", ())),
        "not_after": expires,
    }


def _name(rdns: Any) -> str:
    parts = [f"{_SHORT.get(key, key)}={value}" for rdn in rdns for key, value in rdn]
    return ", ".join(parts)[:_MAX_NAME]


def with_details(result: FetchResult, timer: FetchTimer | None) -> FetchResult:
    """`result` as a version 2 workload gets it (nothing measured: no request went out)."""
    details = FetchDetails(dict.fromkeys(TIMINGS)) if timer is None else timer.details()
    return dataclasses.replace(result, details=details)


class _TimedContext(ssl.SSLContext):
    """A client TLS context that marks when a measured request's handshake begins."""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        timer = _MEASURING.get()
        if timer is not None:
            timer.tls_started = time.monotonic()
        return super().wrap_bio(*args, **kwargs)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """What aiohttp verifies servers with by default (the system's trust store, host names
    checked), marking handshakes; `ca_file` adds trust anchors (a lab's own CA)."""
    context = _TimedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    context.set_alpn_protocols(["http/1.1"])  # as aiohttp's own: it speaks HTTP/1.1 only
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


def trace_config() -> aiohttp.TraceConfig:
    """aiohttp's tracing, marking a measured request's (`trace_request_ctx`) phases."""
    config = aiohttp.TraceConfig()

    def mark(attribute: str) -> Any:
        async def on(_session: Any, context: Any, _params: Any) -> None:
            timer = context.trace_request_ctx
            if isinstance(timer, FetchTimer):
                setattr(timer, attribute, time.monotonic())

        return on

    config.on_dns_resolvehost_start.append(mark("dns_started"))
    config.on_dns_resolvehost_end.append(mark("dns_ended"))
    config.on_connection_create_start.append(mark("connecting"))
    config.on_connection_create_end.append(mark("connected"))
    config.on_request_headers_sent.append(mark("sent"))
    return config
