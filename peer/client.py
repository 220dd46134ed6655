"""The peer's typed view of one coordinator: signed msgpack calls under /v1."""

from __future__ import annotations

import os

import aiohttp

from overlay import http, wire, wire_reports
from overlay.announcements import NONCE_SIZE, hello_message
from overlay.identity import Identity, verify


class CoordinatorClient:
    def __init__(self, base_url: str, identity: Identity, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self._identity = identity
        self._session = session

    async def _post(self, path: str, message: object) -> object:
        return await http.call(self._session, "POST", self.base_url, path, message, identity=self._identity)

    async def register(self, request: wire.RegisterRequest) -> wire.RegisterResponse:
        return _answer(wire.RegisterResponse, await self._post("/v1/peers/register", request))

    async def lease(self, request: wire.LeaseRequest) -> wire.LeaseResponse:
        return _answer(wire.LeaseResponse, await self._post("/v1/leases", request))

    async def renew(self, ref: wire.LeaseRef) -> wire.RenewResponse:
        return _answer(wire.RenewResponse, await self._post("/v1/leases/renew", ref))

    async def release(self, ref: wire.LeaseRef) -> None:
        await self._post("/v1/leases/release", ref)

    async def report(self, report: wire.Report) -> wire.ReportResponse:
        return _answer(wire.ReportResponse, await self._post("/v1/reports", report))

    async def report_batch(self, reports: list[wire.Report]) -> list[wire_reports.ReportVerdict]:
        """Up to MAX_REPORT_BATCH reports in one request; one verdict each, in order."""
        batch = wire_reports.ReportBatch(reports)
        answer = _answer(wire_reports.ReportBatchResponse, await self._post("/v1/reports/batch", batch))
        if [v.unit_id for v in answer.results] != [r.unit_id for r in reports]:
            raise http.Unavailable(f"coordinator at {self.base_url} answered a report batch out of order")
        return answer.results

    async def report_items(self, report: wire_reports.ItemsReport) -> wire_reports.ItemsAnswer:
        """Items a running unit streamed (process API version 2)."""
        return _answer(wire_reports.ItemsAnswer, await self._post("/v1/reports/items", report))

    async def public_key(self) -> str:
        """The coordinator's public key (hex), proven by its signature over a fresh nonce."""
        nonce = os.urandom(NONCE_SIZE)
        answer = await http.call(self._session, "POST", self.base_url, "/v1/hello", {"nonce": nonce})
        key_hex = answer.get("public_key") if isinstance(answer, dict) else None
        signature = answer.get("signature") if isinstance(answer, dict) else None
        try:
            key = bytes.fromhex(key_hex) if isinstance(key_hex, str) else b""
        except ValueError:
            key = b""
        if not isinstance(signature, bytes) or not verify(key, hello_message(nonce), signature):
            raise http.Unavailable(f"coordinator at {self.base_url} did not prove its key")
        return key.hex()

    async def bundle_info(self, name: str, version: str) -> wire.BundleInfo:
        """Where to fetch a bundle version and its owner-signed manifest (checked by the caller)."""
        answer = await http.call(self._session, "GET", self.base_url, f"/v1/bundles/{name}/{version}")
        return _answer(wire.BundleInfo, answer)


def _answer(cls, obj):
    try:
        return wire.parse(cls, obj, "answer")
    except wire.WireError as exc:
        raise http.Unavailable(f"coordinator sent a malformed answer: {exc}") from exc
