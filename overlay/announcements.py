"""What coordinators announce in the DHT, and how a coordinator proves it holds its key.

A coordinator publishes a signed record under `coordinators_key(network)`; the record's
signer is the coordinator's identity. A peer that found it asks the coordinator over HTTP to
sign a fresh nonce (`hello_message`) and talks to it only if the answer verifies with the
announced key: a stale or forged address cannot impersonate a coordinator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from overlay.records import SignedRecord, is_withdrawn, payload_of

_NETWORK_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HELLO_DOMAIN = b"osaas-coordinator-hello-v1\n"
NONCE_SIZE = 32


def valid_network(name: str) -> bool:
    return bool(_NETWORK_NAME.fullmatch(name))


def coordinators_key(network: str) -> str:
    """The DHT key under which the coordinators of `network` announce themselves."""
    if not valid_network(network):
        raise ValueError(f"network name {network!r} must be 1-64 of a-z, 0-9, '.', '_', '-'")
    return f"osaas/v1/coordinators/{network}"


def hello_message(nonce: bytes) -> bytes:
    """What a coordinator signs to prove it holds its key."""
    return _HELLO_DOMAIN + nonce


@dataclass(frozen=True, slots=True)
class CoordinatorAnnouncement:
    public_key: str  # hex; the record's signer
    url: str
    network: str
    load: int  # work units not yet done
    peers: int  # peers registered
    workloads: tuple[str, ...]
    issued_at: float

    def payload(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "network": self.network,
            "load": self.load,
            "peers": self.peers,
            "workloads": list(self.workloads),
        }

    @classmethod
    def from_record(cls, record: SignedRecord) -> CoordinatorAnnouncement | None:
        """The announcement a verified record carries; None for a withdrawal or a malformed one."""
        if is_withdrawn(record):
            return None
        payload = payload_of(record)
        url, network, load, peers, workloads = (payload.get(k) for k in ("url", "network", "load", "peers", "workloads"))
        if not (
            isinstance(url, str)
            and url.startswith(("http://", "https://"))
            and len(url) <= 2048
            and isinstance(network, str)
            and valid_network(network)
            and is_count(load)
            and is_count(peers)
            and isinstance(workloads, list)
            and len(workloads) <= 64
            and all(isinstance(w, str) and len(w) <= 64 for w in workloads)
        ):
            return None
        return cls(record.signer.hex(), url.rstrip("/"), network, load, peers, tuple(workloads), record.issued_at)


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53
