"""`osaas bundle publish DIR` as an owner runs it, on a folder holding several built versions of
a bundle: the asked version, else the newest (compared as versions, not as strings); one line
when the asked version is not there, or when which is newest cannot be told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sites import coordinator
from tests.test_discovery import osaas_output
from tests.test_sandbox_e2e import osaas_ok

pytestmark = pytest.mark.timeout(120)


async def refused(message: str, *args: str) -> None:
    code, out, err = await osaas_output(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("osaas: error: "), (out, err)
    assert message in lines[0], lines[0]


async def test_publish_takes_the_asked_version_or_the_newest(tmp_path: Path) -> None:
    db, key, dist = tmp_path / "c.sqlite", tmp_path / "owner.key", tmp_path / "dist"
    public_key = (await osaas_ok("bundle", "keygen", "--out", str(key))).strip()
    await osaas_ok("coordinator", "owner", "add", "alice", public_key, "--db", str(db))
    for version in ("1.9", "1.10"):  # as strings, 1.9 would come last
        source = tmp_path / f"source-{version}"
        (source / "mine").mkdir(parents=True)
        (source / "mine" / "__main__.py").write_text(f"print({version!r})\n")
        (source / "bundle.toml").write_text(
            f'name = "mine"\nversion = "{version}"\nentrypoint = ["python3", "-m", "mine"]\n'
        )
        await osaas_ok("bundle", "build", str(source), "--key", str(key), "--out", str(dist))
    async with coordinator(db) as url:
        publish = ("bundle", "publish", str(dist), "--coordinator", url, "--key", str(key))
        await refused(f"{dist}: no version 2.0 of mine here (it has 1.10, 1.9)", *publish, "--version", "2.0")
        out = await osaas_ok(*publish)
        assert out.splitlines()[0] == f"published mine 1.10 (the newest of 2 versions in {dist})"
        out = await osaas_ok(*publish, "--version", "1.9")
        assert out.splitlines()[0] == "published mine 1.9"
        status = json.loads(await osaas_ok("bundle", "status", "mine", "--coordinator", url, "--json"))
        assert [v["version"] for v in status["versions"]] == ["1.10", "1.9"] and status["stable"] == "1.10"

        (tmp_path / "source-1.9" / "bundle.toml").write_text(
            'name = "mine"\nversion = "nightly"\nentrypoint = ["python3", "-m", "mine"]\n'
        )
        await osaas_ok("bundle", "build", str(tmp_path / "source-1.9"), "--key", str(key), "--out", str(dist))
        await refused(
            f"{dist}: cannot tell which version is newest: nightly is not a version like 1.2.0; give --version",
            *publish,
        )
        await refused(f"{tmp_path / 'none'}: no built bundle here", "bundle", "publish", str(tmp_path / "none"),
                      "--coordinator", url, "--key", str(key))  # fmt: skip
