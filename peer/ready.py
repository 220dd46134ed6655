"""How to run a checked, unpacked bundle: its command (inside the sandbox and out), its
environment and its limits, from its signed manifest. Pure but for looking at the entrypoint's
file in the bundle (and reading peer/python_start.py's source once).

A Python bundle runs on the peer's interpreter, isolated (`-I`: no user site, no PYTHON*
variables, no script directory on sys.path) and started by peer/python_start.py, which puts the
bundle first on sys.path and lets osaas's own packages be imported only from the bundle: the
owner's signed code runs, never the copy installed beside the peer.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from peer import python_start, sandbox
from peer.platform import VOLUNTEER_CEILING, ResourceLimits
from workloads.bundle import BundleError, SignedManifest

_PYTHON_NAMES = ("python", "python3")
_MEGABYTE = 1024 * 1024
# The top-level packages of the osaas distribution (pyproject.toml's packages.find): a bundle
# may ship its own copy of any of them (the link checker ships `workloads`), and never runs ours.
GUARDED_PACKAGES = ("coordinator", "osaas", "overlay", "peer", "screensaver", "workloads")
# Interpreter options an entrypoint may give before its module or script; -W and -X take a value.
_FLAGS = frozenset({"-b", "-bb", "-B", "-d", "-E", "-O", "-OO", "-q", "-R", "-s", "-S", "-u", "-v"})
_VALUED = ("-W", "-X")


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
    api_version: int  # the process API version the workload speaks (its manifest's)
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
    root = root.resolve()  # the workload runs elsewhere: a relative path would name nothing there
    if program in _PYTHON_NAMES:
        options, target = _python_arguments(args, manifest.stem)
        argv = _python_start(options, str(root), target)
        sandboxed_argv = _python_start(options, sandbox.BUNDLE_DIR, target)
        runtime = sandbox.python_runtime()
    else:
        path = _program_in(root, program, manifest.stem)
        argv = [str(path), *args]
        sandboxed_argv = [str(PurePosixPath(sandbox.BUNDLE_DIR, path.relative_to(root).as_posix())), *args]
        runtime = ()
    limits = manifest.limits
    return ReadyBundle(
        name=manifest.name,
        version=manifest.version,
        root=root,
        argv=argv,
        # For Python interpreters the workload starts itself (the peer's ignores it: -I); a
        # program in another language is told nothing of Python.
        env={"PYTHONPATH": str(root)} if program in _PYTHON_NAMES else {},
        limits=ResourceLimits(
            cpu_seconds=limits.cpu_seconds,
            memory_bytes=limits.memory_mb * _MEGABYTE,
            open_files=limits.open_files,
        ).within(VOLUNTEER_CEILING),
        timeout=float(limits.timeout_seconds),
        capabilities=frozenset(manifest.capabilities),
        api_version=manifest.api_version,
        owner_key=signed.owner_key,
        sandboxed_argv=sandboxed_argv,
        sandboxed_env={"PYTHONPATH": sandbox.BUNDLE_DIR} if program in _PYTHON_NAMES else {},
        runtime=runtime,
    )


def _python_arguments(args: Sequence[str], stem: str) -> tuple[list[str], list[str]]:
    """An entrypoint's interpreter options, and what it runs: `-m MODULE ...`, `-c CODE ...`
    or `SCRIPT ...`. BundleError for an option that is not known here, or nothing to run."""
    options: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-m", "-c"):
            if not rest:
                raise BundleError(f"bundle {stem}: entrypoint's {arg} is not followed by what it runs")
            return options, [arg, *rest]
        if arg[:2] in ("-m", "-c"):  # -mMODULE, -cCODE
            return options, [arg[:2], arg[2:], *rest]
        if arg in _VALUED:
            if not rest:
                raise BundleError(f"bundle {stem}: entrypoint's {arg} is not followed by its value")
            options += [arg, rest.pop(0)]
        elif arg in _FLAGS or (arg[:2] in _VALUED and len(arg) > 2):
            options.append(arg)
        elif arg.startswith("-"):
            raise BundleError(f"bundle {stem}: entrypoint option {arg!r} is not one a peer runs Python with")
        else:
            return options, [arg, *rest]
    raise BundleError(f"bundle {stem}: entrypoint runs python without a module (-m), code (-c) or script")


def _python_start(options: list[str], root: str, target: list[str]) -> list[str]:
    return [sys.executable, *options, "-I", "-c", _start_source(), root, ",".join(GUARDED_PACKAGES), *target]


@functools.cache
def _start_source() -> str:
    return Path(python_start.__file__).read_text(encoding="utf-8")


def _program_in(root: Path, program: str, stem: str) -> Path:
    """`program`'s file in the bundle at `root` (resolved)."""
    path = (root / program).resolve()
    if not path.is_relative_to(root):
        raise BundleError(f"bundle {stem}: entrypoint {program!r} is outside the bundle")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise BundleError(f"bundle {stem}: entrypoint {program!r} is not a file in the bundle") from None
    if not stat.S_ISREG(mode) or not mode & 0o111:
        raise BundleError(f"bundle {stem}: entrypoint {program!r} is not an executable file")
    return path
