"""Whose failure it is when a sandboxed unit ends before its workload could run: a sandbox that
does not build is the peer's (SandboxFailed: the unit is given back), whatever happens once it
is built is the workload's. Real bubblewrap, real workload processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from peer.platform import ResourceLimits
from peer.runner import Sandboxed, run_workload
from peer.sandbox import Confinement, Sandbox, SandboxError, SandboxFailed, detect, python_runtime
from workloads.process_api import ExitCode, Unit

UNIT = Unit(unit_id=3, payload={})
# What bubblewrap says and does (exit 1) when it cannot build a sandbox, said by a workload.
POSING = 'import sys; print("bwrap: Can\'t find source path /bundle: No such file or directory", file=sys.stderr); sys.exit(1)'


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    try:
        return detect()
    except SandboxError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


def _bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    root.mkdir(exist_ok=True)
    return root


async def test_a_sandbox_that_does_not_build_is_the_peers_failure(sandbox: Sandbox, tmp_path: Path) -> None:
    # Real bubblewrap, told to bind a bundle directory that is not there: it gives up before
    # anything of the workload's runs. This used to be reported as the workload's failure
    # ("exited with code 1 without a result"), counted against the bundle's version.
    confinement = Confinement(tmp_path / "gone", python_runtime())
    with pytest.raises(SandboxFailed, match=r"^the sandbox ended before it was built: bwrap: .*gone"):
        await run_workload([sys.executable, "-c", "pass"], UNIT, None, sandbox=Sandboxed(sandbox, confinement))


async def test_a_workload_that_fails_as_a_broken_sandbox_would_is_still_failed(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # It says what bubblewrap says and exits as bubblewrap does; but the sandbox was built and
    # said so before the workload ran, and the workload cannot take that back.
    confinement = Confinement(_bundle(tmp_path), python_runtime())
    outcome = await run_workload([sys.executable, "-c", POSING], UNIT, None, sandbox=Sandboxed(sandbox, confinement))
    assert outcome.exit_code is ExitCode.FAILED
    assert outcome.error == "workload exited with code 1 without a result"
    assert "bwrap: Can't find source path" in outcome.stderr_tail


@pytest.mark.parametrize("limits", [ResourceLimits(open_files=3), ResourceLimits(memory_bytes=1024 * 1024)])
async def test_a_bundles_own_limits_cannot_keep_its_sandbox_from_building(
    sandbox: Sandbox, tmp_path: Path, limits: ResourceLimits
) -> None:
    # Limits too small for anything to start are the bundle's to ask for and its own failure:
    # they are set inside the built sandbox, so bubblewrap itself never runs under them.
    confinement = Confinement(_bundle(tmp_path), python_runtime())
    outcome = await run_workload(
        [sys.executable, "-c", "pass"], UNIT, None, limits=limits, sandbox=Sandboxed(sandbox, confinement)
    )
    assert outcome.exit_code is ExitCode.FAILED, outcome
