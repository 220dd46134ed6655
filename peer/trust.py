"""Which bundles this peer runs, and how: every bundle confined in the sandbox when this machine
can build one (peer/sandbox.py); otherwise only bundles whose owner key the volunteer listed as
trusted (peer.toml `trusted_owners`, or `--trust-owner KEY`), run unconfined, and every other
bundle refused. Never a silent fallback: the peer says at start, on its page and to its
coordinator which of the two it is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from overlay.errors import OsaasError
from overlay.files import read_toml
from peer.ready import ReadyBundle
from peer.runner import Sandboxed
from peer.sandbox import DEFAULT_PROGRAM, Confinement, Sandbox, SandboxError, detect

log = logging.getLogger(__name__)

TRUSTED_OWNERS_KEY = "trusted_owners"  # in peer.toml
_OWNER_KEY_RE = re.compile(r"[0-9a-f]{64}")


class TrustError(OsaasError):
    """A trusted-owner key that is not one: one line for the volunteer."""


class Untrusted(OsaasError):
    """This bundle may not run on this peer; the message is the one-line reason."""


@dataclass(frozen=True, slots=True)
class WorkloadTrust:
    sandbox: Sandbox | None
    unavailable: str | None  # why there is no sandbox (None when there is one)
    trusted_owners: frozenset[str]  # owner keys, hex
    hidden: tuple[Path, ...] = ()  # the peer's own directories, never visible inside

    @classmethod
    def detect(
        cls, trusted_owners: Iterable[str], hidden: Iterable[Path], program: str = DEFAULT_PROGRAM
    ) -> WorkloadTrust:
        """Find out whether this machine builds a sandbox, and say at once what that means."""
        owners = frozenset(trusted_owners)
        try:
            sandbox: Sandbox | None = detect(program)
            unavailable = None
        except SandboxError as exc:
            sandbox, unavailable = None, str(exc)
        trust = cls(sandbox, unavailable, owners, tuple(path.resolve() for path in hidden))
        if sandbox is None:
            log.warning("%s", trust.summary())
        else:
            log.info("%s", trust.summary())
        return trust

    def summary(self) -> str:
        """One line for the volunteer: whose code runs here, and how."""
        if self.sandbox is not None:
            return "workloads run in a sandbox (bubblewrap): no network but the peer, no view of this machine's files"
        owners = (
            f"{len(self.trusted_owners)} owner key(s) you trust"
            if self.trusted_owners
            else "nobody: no owner is trusted (--trust-owner KEY)"
        )
        return f"no sandbox: {self.unavailable}; running only bundles of {owners}"

    def advertised_owners(self) -> list[bytes] | None:
        """What the coordinator is told: None (any bundle) when sandboxed, else the owner keys
        whose bundles this peer runs."""
        if self.sandbox is not None:
            return None
        return [bytes.fromhex(key) for key in sorted(self.trusted_owners)]

    def confinement(self, ready: ReadyBundle) -> Sandboxed | None:
        """How to run `ready`: in the sandbox, or (None) unconfined for a trusted owner;
        raises Untrusted when it may not run here at all."""
        if self.sandbox is not None:
            # Resolved: bubblewrap binds from its own working directory, not the peer's.
            return Sandboxed(self.sandbox, Confinement(ready.root.resolve(), ready.runtime, self.hidden))
        if ready.owner_key.hex() in self.trusted_owners:
            return None
        raise Untrusted(
            f"bundle {ready.name} {ready.version}: this peer has no sandbox ({self.unavailable}) and its owner "
            f"{ready.owner_key.hex()[:16]}… is not one the volunteer trusts"
        )


def owner_key(text: str) -> str:
    """A trusted-owner key as given: 64 hex digits (an Ed25519 public key)."""
    key = text.strip().lower()
    if not _OWNER_KEY_RE.fullmatch(key):
        raise TrustError(f"{text!r} is not an owner key: give the 64 hex digits of the owner's public key")
    return key


def load_trusted_owners(path: Path) -> frozenset[str]:
    """The `trusted_owners` of the volunteer's peer.toml (none when the file or key is missing).
    The rest of the file is the budget's (peer.budget), which reads it on its own."""
    try:
        table = read_toml(path) or {}
    except ValueError as exc:
        raise TrustError(f"{path}: cannot read it: {exc}") from None
    keys = table.get(TRUSTED_OWNERS_KEY, [])
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise TrustError(f"{path}: {TRUSTED_OWNERS_KEY} must be an array of owner keys (64 hex digits each)")
    try:
        return frozenset(owner_key(key) for key in keys)
    except TrustError as exc:
        raise TrustError(f"{path}: {TRUSTED_OWNERS_KEY}: {exc}") from None
