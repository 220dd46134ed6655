"""The OS sandbox every workload runs in (Linux: bubblewrap), and finding out whether one can be
built on this machine.

A sandboxed unit's workload sees:
- its own network namespace with nothing but its own loopback (the host's 127.0.0.1, where the
  peer's page and status live, is not reachable; neither is DNS);
- its own PID, IPC and UTS namespaces, in a new session; when its first process ends, or the
  peer kills the sandbox, every process inside dies (so setsid and double forks die too);
- a filesystem of: /usr and the system's library links, the runtime it runs on (for Python
  bundles the peer's interpreter and its packages), all read-only; the bundle read-only at
  /bundle; a private size-capped tmpfs at /tmp as cwd, HOME and TMPDIR; a minimal /dev; /proc of
  its own PID namespace. Nothing else: not the volunteer's home, /etc, the peer's data dir, its
  keys, tokens, outbox, other units or other bundles.
- limits: CPU seconds, address space, open files, file size and a process count, all set
  inside the sandbox by util-linux's prlimit, after the sandbox is built: bubblewrap itself runs
  with the peer's own limits, so a bundle's limits cannot make the sandbox fail to build.

Building the sandbox is the peer's part, what runs in it the bundle's: once bubblewrap has built
it, a shell writes STARTED_MARK on stdout and only then executes prlimit and the workload. A
sandbox that ends before its mark was written failed to build (`SandboxFailed`, the peer's
trouble); the workload cannot take back a mark written before it ran, so it cannot pass its own
failure off as the peer's.

RLIMIT_NPROC counts processes per user, and the kernel does not apply it to root. So a peer
running as a normal user relies on bubblewrap's user namespace (the count is per namespace),
and a peer running as root gives each unit an unused uid of its own (util-linux's setpriv,
which also drops every capability): the BOINC way of running strangers' code as another account.

Nothing here reads a clock or talks to the network; `detect` runs one probe sandbox.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from overlay.errors import OsaasError
from peer.platform import ResourceLimits, rlimit_flags

log = logging.getLogger(__name__)

BUNDLE_DIR = "/bundle"  # where a unit's bundle is seen inside, read-only
TMP_DIR = "/tmp"  # the unit's private tmpfs: cwd, HOME and TMPDIR
DEFAULT_PROGRAM = "bwrap"
# The links a merged-/usr system keeps at the root, or the directories an older one has there.
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The dynamic linker's cache: without it, libraries outside the default paths are not found.
_SYSTEM_FILES = ("/etc/ld.so.cache",)
# Per-unit uids for a peer running as root: far above any account's, below (uid_t)-1.
_UID_BASE = 0x7F000000
_UID_SPAN = 0x00FFFFFF
_PROBE_TIMEOUT = 10.0


STARTED_MARK = b"osaas-sandbox-built\n"  # on a sandbox's stdout before anything of the workload's


class SandboxError(OsaasError):
    """No sandbox can be built here; the message says why, in one line."""


class SandboxFailed(OsaasError):
    """A sandbox did not build for one unit (the peer's trouble, not the workload's): one line."""


@dataclass(frozen=True, slots=True)
class Confinement:
    """What one unit's sandbox holds besides the system: its bundle and its runtime."""

    bundle_root: Path  # seen at BUNDLE_DIR
    runtime: tuple[Path, ...] = ()  # bound read-only at their own paths
    hidden: tuple[Path, ...] = ()  # covered by an empty tmpfs where a bound path contains them


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The programs a sandbox is built with; `command` wraps a workload's argv."""

    bwrap: str
    prlimit: str
    setpriv: str | None  # set when the peer runs as root: each unit then runs as a uid of its own
    shell: str = "/bin/sh"  # writes STARTED_MARK once the sandbox is built

    def command(self, argv: Sequence[str], confinement: Confinement, limits: ResourceLimits) -> list[str]:
        return sandbox_command(self, argv, confinement, limits, uid=_unit_uid() if self.setpriv else None)


def sandbox_command(
    sandbox: Sandbox, argv: Sequence[str], confinement: Confinement, limits: ResourceLimits, *, uid: int | None
) -> list[str]:
    """The bubblewrap command line that runs `argv` confined (pure: paths are only looked at
    for whether they are links or exist). `uid` is the unit's own uid when running as root."""
    command = [
        sandbox.bwrap,
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
    ]
    if uid is None:
        # A normal user's bubblewrap always makes a user namespace; saying so lets it forbid
        # nested ones, which would hand the workload root-like powers over its own mounts.
        command += ["--unshare-user", "--disable-userns"]
    else:
        # Only to let setpriv switch to the unit's uid; setpriv then drops every capability.
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    command += ["--ro-bind", "/usr", "/usr"]
    for link in _ROOT_LINKS:
        if os.path.islink(link):
            command += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            command += ["--ro-bind", link, link]
    bound = [path for path in _outermost(confinement.runtime) if not path.is_relative_to("/usr")]
    # The unit's tmp first: a runtime that lives under /tmp (a venv there) is bound inside it,
    # not covered by it.
    command += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", TMP_DIR]
    # bubblewrap makes the directories on the way to a bind mode 0700, which a unit's own uid
    # could not pass: they are made first, empty and open to read.
    for directory in _ancestors([*map(Path, _SYSTEM_FILES), *bound]):
        if directory != Path(TMP_DIR):
            command += ["--perms", "0755", "--dir", str(directory)]
    for system_file in _SYSTEM_FILES:
        command += ["--ro-bind-try", system_file, system_file]
    for runtime in bound:
        command += ["--ro-bind", str(runtime), str(runtime)]
    for hidden in confinement.hidden:
        if any(hidden.is_relative_to(outer) for outer in [Path("/usr"), *bound]):
            command += ["--tmpfs", str(hidden)]
    command += [
        "--ro-bind",
        str(confinement.bundle_root),
        BUNDLE_DIR,
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--chdir",
        TMP_DIR,
        "--",
        sandbox.shell,
        "-c",
        f"printf '{STARTED_MARK.decode('ascii').strip()}\\n' && exec \"$@\"",
        "osaas-sandbox",
        sandbox.prlimit,
        *rlimit_flags(limits),
        "--",
    ]
    if uid is not None:
        assert sandbox.setpriv is not None
        command += [
            sandbox.setpriv,
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    return command + list(argv)


def python_runtime() -> tuple[Path, ...]:
    """The directories the peer's own interpreter needs to run a Python bundle: its
    installation and, in a virtual environment, the environment (for its packages)."""
    executable = Path(sys.executable)
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix)}
    # An interpreter outside its prefix (a link to it there) must be reachable too.
    paths.add(executable.resolve().parent)
    return tuple(sorted(paths))


@functools.cache
def detect(program: str = DEFAULT_PROGRAM) -> Sandbox:
    """The sandbox this machine can build, checked by running one; SandboxError says why not.
    Cached: the answer does not change while the peer runs."""
    if not sys.platform.startswith("linux"):
        raise SandboxError(f"no sandbox on {sys.platform}: bubblewrap needs Linux")
    bwrap = shutil.which(program)
    if bwrap is None:
        raise SandboxError(f"{program} (bubblewrap) is not installed; on Debian or Ubuntu: apt-get install bubblewrap")
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise SandboxError("prlimit (util-linux) is not installed")
    setpriv = None
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise SandboxError("setpriv (util-linux) is not installed; a peer running as root needs it")
    shell = shutil.which("sh")
    if shell is None:
        raise SandboxError("sh is not installed")
    sandbox = Sandbox(bwrap, prlimit, setpriv, shell)
    true = shutil.which("true") or "/usr/bin/true"
    probe = sandbox.command(
        [true], Confinement(bundle_root=Path(true).parent), ResourceLimits(processes=8, tmp_bytes=1024 * 1024)
    )
    try:
        done = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=_PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"{bwrap} could not be run: {exc}") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SandboxError(
            f"{bwrap} cannot build a sandbox here: {said[-1] if said else f'exit code {done.returncode}'}"
        )
    return sandbox


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """`paths` without those inside another of them, in order."""
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return sorted(kept)


def _ancestors(paths: Iterable[Path]) -> list[Path]:
    """The directories above `paths`, outermost first, the root left out."""
    seen: dict[Path, None] = {}
    for path in paths:
        for parent in reversed(path.parents[:-1]):
            seen.setdefault(parent, None)
    return sorted(seen, key=lambda p: (len(p.parts), p))


def _unit_uid() -> int:
    return _UID_BASE + secrets.randbelow(_UID_SPAN)
