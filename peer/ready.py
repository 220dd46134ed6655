"""How to run a checked, unpacked bundle: its command (inside the sandbox and out), its
environment and its limits, from its signed manifest. Pure but for looking at the entrypoint's
file in the bundle.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from peer import sandbox
from peer.platform import VOLUNTEER_CEILING, ResourceLimits
from workloads.bundle import BundleError, SignedManifest

_PYTHON_NAMES = ("python", "python3")
_MEGABYTE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReadyBundle:
    """A checked, unpacked bundle and how to run it (see `run_workload`)."""

    name: str
    version: str
    root: Path
    argv: list[str]
    env: dict[str, str]
    limits: ResourceLimits
    timeout: float
    capabilities: frozenset[str]
    owner_key: bytes
    # The same command as seen inside the sandbox, where the bundle is at sandbox.BUNDLE_DIR,
    # and what it runs on besides the system (the peer's interpreter for Python bundles).
    sandboxed_argv: list[str]
    sandboxed_env: dict[str, str]
    runtime: tuple[Path, ...]


def ready_bundle(signed: SignedManifest, root: Path) -> ReadyBundle:
    """How to run the bundle unpacked at `root`; BundleError if its entrypoint is unsafe.

    A "python"/"python3" entrypoint runs on the peer's own interpreter (which has the process
    API's dependencies); any other names a file inside the bundle, never a PATH lookup, so a
    bundle cannot make the peer run a program the owner did not sign."""
    manifest = signed.manifest
    program, *args = manifest.entrypoint
    if program in _PYTHON_NAMES:
        argv = sandboxed_argv = [sys.executable, *args]
        runtime = sandbox.python_runtime()
    else:
        path = _program_in(root, program, manifest.stem)
        argv = [str(path), *args]
        sandboxed_argv = [str(PurePosixPath(sandbox.BUNDLE_DIR, path.relative_to(root.resolve()).as_posix())), *args]
        runtime = ()
    limits = manifest.limits
    return ReadyBundle(
        name=manifest.name,
        version=manifest.version,
        root=root,
        argv=argv,
        # The bundle's own copy of its packages comes first, before anything installed.
        env={"PYTHONPATH": str(root)},
        limits=ResourceLimits(
            cpu_seconds=limits.cpu_seconds,
            memory_bytes=limits.memory_mb * _MEGABYTE,
            open_files=limits.open_files,
        ).within(VOLUNTEER_CEILING),
        timeout=float(limits.timeout_seconds),
        capabilities=frozenset(manifest.capabilities),
        owner_key=signed.owner_key,
        sandboxed_argv=sandboxed_argv,
        sandboxed_env={"PYTHONPATH": sandbox.BUNDLE_DIR},
        runtime=runtime,
    )


def _program_in(root: Path, program: str, stem: str) -> Path:
    base = root.resolve()
    path = (base / program).resolve()
    if not path.is_relative_to(base):
        raise BundleError(f"bundle {stem}: entrypoint {program!r} is outside the bundle")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise BundleError(f"bundle {stem}: entrypoint {program!r} is not a file in the bundle") from None
    if not stat.S_ISREG(mode) or not mode & 0o111:
        raise BundleError(f"bundle {stem}: entrypoint {program!r} is not an executable file")
    return path
