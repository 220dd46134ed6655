"""The one place for protections that only POSIX systems offer.

Workload subprocesses get resource limits (CPU seconds, address space, open files, file size) and their
own session, so that the whole process group can be killed. Where the system cannot do one of
these, the fallback is honest: one log line says what is not enforced here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any

log = logging.getLogger(__name__)

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

# Between the soft and the hard CPU limit the kernel sends SIGXCPU each second, then SIGKILL.
_CPU_HARD_MARGIN = 5


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    cpu_seconds: int = 120
    memory_bytes: int = 1024 * 1024 * 1024
    open_files: int = 64
    processes: int = 32  # enforced inside the sandbox only (see peer/sandbox.py)
    tmp_bytes: int = 64 * 1024 * 1024  # the sandbox's tmpfs, and the largest file written anywhere

    def within(self, ceiling: ResourceLimits) -> ResourceLimits:
        """Each limit no higher than `ceiling`'s: what a bundle asks for is capped by what the
        volunteer gives."""
        return ResourceLimits(*(min(mine, most) for mine, most in zip(astuple(self), astuple(ceiling), strict=True)))


# The most any bundle gets, whatever its manifest asks for.
VOLUNTEER_CEILING = ResourceLimits(
    cpu_seconds=600, memory_bytes=2 * 1024**3, open_files=256, processes=32, tmp_bytes=64 * 1024 * 1024
)


def limits_preexec(limits: ResourceLimits) -> Callable[[], None] | None:
    """A function to run in the child before exec that applies `limits`, or None where the
    system has no rlimits (then one line is logged saying so)."""
    if resource is None or os.name != "posix":
        _log_once("resource limits (CPU time, memory, open files, file size) are not enforced on this system")
        return None
    # Computed here, in the parent: the child between fork and exec should do as little as
    # possible, and a limit may not exceed the hard limit this process already has.
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + _CPU_HARD_MARGIN),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_FSIZE, limits.tmp_bytes, limits.tmp_bytes),
    ]
    settings = [(which, _capped(which, soft), _capped(which, hard)) for which, soft, hard in wanted]

    def apply() -> None:
        for which, soft, hard in settings:
            resource.setrlimit(which, (soft, hard))

    return apply


def within_hard_limits(limits: ResourceLimits) -> ResourceLimits:
    """`limits` lowered to the hard limits this process has (none can be raised inside a
    sandbox either): what `prlimit` is asked for inside one (peer/sandbox.py)."""
    if resource is None or os.name != "posix":
        return limits
    cpu_hard = _capped(resource.RLIMIT_CPU, limits.cpu_seconds + _CPU_HARD_MARGIN)
    return dataclasses.replace(
        limits,
        cpu_seconds=max(min(limits.cpu_seconds, cpu_hard - _CPU_HARD_MARGIN), 1),
        memory_bytes=_capped(resource.RLIMIT_AS, limits.memory_bytes),
        open_files=_capped(resource.RLIMIT_NOFILE, limits.open_files),
        tmp_bytes=_capped(resource.RLIMIT_FSIZE, limits.tmp_bytes),
    )


def rlimit_flags(limits: ResourceLimits) -> list[str]:
    """util-linux prlimit's flags for `limits` (pure): the same limits `limits_preexec` sets."""
    return [
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + _CPU_HARD_MARGIN}",
        f"--as={limits.memory_bytes}:{limits.memory_bytes}",
        f"--nofile={limits.open_files}:{limits.open_files}",
        f"--fsize={limits.tmp_bytes}:{limits.tmp_bytes}",
        f"--nproc={limits.processes}:{limits.processes}",
    ]


def new_group_options() -> dict[str, Any]:
    """Keyword arguments for asyncio.create_subprocess_exec that give the child its own
    process group, so that `kill_group` reaches its children too."""
    if os.name == "posix":
        return {"start_new_session": True}
    _log_once("a workload's child processes are not killed with it on this system")
    return {}


def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the process's whole group (or just the process where there are no groups).
    Safe to call when the group is already gone."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        elif process.returncode is None:
            process.kill()
    except ProcessLookupError:
        pass  # everything in the group has exited already
    except PermissionError:
        # After the leader was reaped its pid (the group id) can only belong to processes of
        # ours; a foreign owner means the group is gone and the number was reused.
        pass


def _capped(which: int, value: int) -> int:
    _, hard = resource.getrlimit(which)
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


@functools.cache
def _log_once(message: str) -> None:
    log.warning("%s", message)
