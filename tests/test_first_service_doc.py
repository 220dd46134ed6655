"""docs/first-service.md works as written: its manifest parses with the job model it shows, and
its workload, run by the peer's runner through a real egress against a site on loopback,
reports records that pass the coordinator's check of that schema and carry the true answers."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from aiohttp import web

from peer.egress import Egress, EgressConfig
from peer.runner import run_workload
from tests.sites import serve
from workloads.bundle.manifest import parse_manifest
from workloads.process_api import ExitCode, Unit
from workloads.records import Checker

DOC = Path(__file__).resolve().parents[1] / "docs" / "first-service.md"
PAGES = {"/": b"<html>home</html>", "/data": bytes(range(256)) * 10}


def code_block(language: str) -> str:
    """The doc's first fenced block in `language`."""
    match = re.search(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None, f"docs/first-service.md has no {language} block"
    return match.group(1)


def site_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        if request.path in PAGES:
            return web.Response(body=PAGES[request.path])
        return web.Response(status=404, text="no such page")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


async def test_the_tutorials_workload_reports_records_its_schema_accepts(tmp_path: Path) -> None:
    manifest = parse_manifest(code_block("toml"))
    assert manifest.entrypoint == ("python3", "-m", "fingerprint")
    package = tmp_path / "bundle" / "fingerprint"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(code_block("python"))

    async with serve(site_app()) as site, Egress(EgressConfig(allow_private=True)) as egress:
        urls = [f"{site}/", f"{site}/data", f"{site}/missing", "http://gone.invalid/"]
        items = [{"url": url, "crawl": False} for url in urls]
        outcome = await run_workload(
            [sys.executable, "-m", "fingerprint"],
            Unit(unit_id=1, payload={"job_id": 1, "items": items}),
            egress.fetch,
            workdir_parent=tmp_path,
            env={"PYTHONPATH": str(tmp_path / "bundle")},
        )
    assert (outcome.exit_code, outcome.error) == (ExitCode.OK, None)
    records = Checker(manifest.model).records(outcome.payload)

    def truth(body: bytes) -> list[object]:
        return [len(body), hashlib.sha256(body).hexdigest()]

    assert [(record.url, record.values) for record in records] == [
        (urls[0], [200, *truth(PAGES["/"])]),
        (urls[1], [200, *truth(PAGES["/data"])]),
        (urls[2], [404, *truth(b"no such page")]),
        (urls[3], [None, None, None]),
    ]
