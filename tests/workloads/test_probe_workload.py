"""The probe workload through the real egress: a real subprocess from the staged bundle,
speaking process API version 2, against loopback sites over http and over https with a
self-signed certificate made for the test (Debian's openssl)."""

from __future__ import annotations

import hashlib
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from peer.egress import Egress, EgressConfig
from peer.runner import run_workload
from tests.sites import free_port
from workloads import bundle
from workloads.builtin import PROBE, stage_builtin
from workloads.probe.measure import BadPayload, unit_urls
from workloads.process_api import ExitCode, FetchRequest, Unit
from workloads.records import Checker

pytestmark = pytest.mark.timeout(60)


class Certificate:
    def __init__(self, directory: Path) -> None:
        if shutil.which("openssl") is None:
            pytest.skip("openssl is not installed (Debian: apt-get install openssl)")
        self.cert, self.key = directory / "cert.pem", directory / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            + ["-keyout", str(self.key), "-out", str(self.cert), "-days", "30", "-subj", "/CN=osaas probe test"]
            + ["-addext", "subjectAltName=IP:127.0.0.1"],
            check=True,
            capture_output=True,
        )
        end = subprocess.run(
            ["openssl", "x509", "-enddate", "-noout", "-in", str(self.cert)], check=True, capture_output=True, text=True
        ).stdout
        self.not_after = int(ssl.cert_time_to_seconds(end.strip().removeprefix("notAfter=")))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return Certificate(tmp_path_factory.mktemp("tls"))


def _app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": "/hello"})

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/moved", moved)
    return app


@pytest.fixture
async def sites(certificate: Certificate) -> AsyncIterator[tuple[str, str]]:
    """An http and an https origin on 127.0.0.1 serving the same app."""
    runner = web.AppRunner(_app(), access_log=None)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate.cert, certificate.key)
    plain, secure = web.TCPSite(runner, "127.0.0.1", 0), web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await plain.start()
    await secure.start()
    (_, http_port), (_, https_port) = runner.addresses[:2]
    try:
        yield f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}"
    finally:
        await runner.cleanup()


async def test_each_url_is_measured_from_this_vantage_point(
    tmp_path: Path, sites: tuple[str, str], certificate: Certificate
) -> None:
    http, https = sites
    source = stage_builtin(PROBE, tmp_path / "probe")
    model = bundle.load_manifest(source).model
    closed = f"http://127.0.0.1:{free_port()}/"
    urls = [f"{https}/hello", f"{http}/hello", f"{http}/moved", closed]
    payload = {"job_id": 1, "items": [{"url": url, "crawl": False} for url in urls]}
    async with Egress(EgressConfig(allow_private=True, ca_file=str(certificate.cert))) as egress:
        outcome = await run_workload(
            [sys.executable, "-m", "workloads.probe"],
            Unit(5, payload, version=2),
            lambda request: egress.fetch(request, detailed=True),
            env={"PYTHONPATH": str(source)},
            workdir_parent=tmp_path,
        )
    assert outcome.exit_code is ExitCode.OK, outcome.stderr_tail
    records = {r.url: dict(zip(["url", *(f.name for f in model.stored)], [r.url, *r.values], strict=True))
               for r in Checker(model).records(outcome.payload)}  # fmt: skip
    assert list(records) == urls  # every URL, as the schema declares it
    secure, plain, moved, refused = (records[url] for url in urls)
    hello = hashlib.sha256(b"hello").hexdigest()
    assert (secure["status"], secure["body_sha256"], secure["body_bytes"]) == (200, hello, 5)
    assert secure["cert_issuer"] == "CN=osaas probe test" and secure["cert_expires"] == certificate.not_after
    assert secure["tls_version"].startswith("TLSv1.")
    assert secure["address"] == "127.0.0.1" and secure["error"] is None
    for name in ("connect", "tls", "first_byte", "total"):
        assert secure[name] is not None and secure[name] >= 0, name
    assert secure["dns"] is None  # an IP address: nothing resolved
    # Each on a connection of its own: its times are its own, never a pooled connection's.
    assert (plain["status"], plain["body_sha256"], plain["tls"], plain["cert_issuer"]) == (200, hello, None, None)
    assert plain["connect"] is not None and plain["first_byte"] is not None
    # Not followed: a probe reports what the URL itself answers.
    assert (moved["status"], moved["location"]) == (301, "/hello")
    assert moved["connect"] is not None
    assert refused["status"] is None and refused["body_sha256"] is None
    assert refused["error"].startswith("connection: could not connect to 127.0.0.1")


async def test_a_version_1_workload_gets_what_it_always_got(sites: tuple[str, str]) -> None:
    http, https = sites
    async with Egress(EgressConfig(allow_private=True)) as egress:
        plain = await egress.fetch(FetchRequest(1, "GET", f"{http}/hello", want_body=True))
        untrusted = await egress.fetch(FetchRequest(2, "GET", f"{https}/hello"), detailed=True)
    assert plain.details is None and set(plain.to_frame()) == {
        "type", "id", "url", "status", "headers", "body", "truncated", "error", "message"
    }  # fmt: skip
    # A certificate the peer does not trust is no answer, with the reason; timed all the same.
    assert untrusted.error == "connection" and "certificate verify failed" in (untrusted.message or "")
    assert untrusted.details is not None and untrusted.details.timing["total"] is not None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"items": []}, "payload.items must be a list of 1..1000 items"),
        ({"items": [{"url": 5}]}, "payload.items[0].url must be a string of 1..8192 characters"),
        ({"items": [{"url": "http://a.test/"}, {"url": "http://a.test/"}]}, "payload.items names a URL twice"),
        ([], "payload.items must be a list of 1..1000 items"),
    ],
)
def test_a_payload_that_is_no_probe_units_is_bad_input(payload: object, reason: str) -> None:
    with pytest.raises(BadPayload, match=re.escape(reason)):
        unit_urls(payload)
