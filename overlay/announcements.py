"""What coordinators announce in the DHT, and how a coordinator proves it holds its key.

A coordinator publishes a signed record under `coordinators_key(network, network_key)`; the
record's signer is the coordinator's identity, and its payload carries the certificate chain
by which the network key admits that identity (overlay.certificates). The DHT key names the
network key, so every DHT node can check admission without being told anything
(`admission_problem`): a record without a sound chain is refused where it would be stored and
dropped where it is looked up, and cannot push admitted coordinators out of the key's set.

A peer that found an announcement asks the coordinator over HTTP to sign a fresh nonce
(`hello_message`) and talks to it only if the answer verifies with the announced (certified)
key: a stale or forged address cannot impersonate a coordinator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from overlay.certificates import Certificate, CertificateError, Verify, check_chain, decode_chain, encode_chain
from overlay.identity import PUBLIC_KEY_SIZE, verify
from overlay.records import RecordError, SignedRecord, is_withdrawn, payload_of

_COORDINATORS_PREFIX = "osaas/v1/coordinators/"
_NETWORK_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HELLO_DOMAIN = b"osaas-coordinator-hello-v1\n"
NONCE_SIZE = 32
MAX_WORKLOADS = 64  # bundle names an announcement lists


def valid_network(name: str) -> bool:
    return bool(_NETWORK_NAME.fullmatch(name))


def coordinators_key(network: str, network_key: bytes) -> str:
    """The DHT key under which the coordinators of `network` (whose key is `network_key`)
    announce themselves."""
    if not valid_network(network):
        raise ValueError(f"network name {network!r} must be 1-64 of a-z, 0-9, '.', '_', '-'")
    if len(network_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"a network key is {PUBLIC_KEY_SIZE} bytes")
    return f"{_COORDINATORS_PREFIX}{network}/{network_key.hex()}"


def network_of_key(key: str) -> tuple[str, bytes] | None:
    """The network name and key a coordinators key names; None for any other DHT key."""
    if not key.startswith(_COORDINATORS_PREFIX):
        return None
    name, _, key_hex = key[len(_COORDINATORS_PREFIX) :].partition("/")
    if not valid_network(name) or len(key_hex) != 2 * PUBLIC_KEY_SIZE:
        return None
    try:
        return name, bytes.fromhex(key_hex)
    except ValueError:
        return None


def admission_problem(record: SignedRecord, key: str, now: float, verify: Verify = verify) -> str | None:
    """Why `record` may not stand under DHT key `key`, or None. Under a coordinators key a
    record (announcement or withdrawal) must carry a chain by which that key's network admits
    its signer; a key of that form that is malformed is refused too. Other keys: no rule."""
    if not key.startswith(_COORDINATORS_PREFIX):
        return None
    network = network_of_key(key)
    if network is None:
        return f"{key[:80]!r} is not a coordinators key of the form .../NETWORK/NETWORK_KEY"
    name, network_key = network
    try:
        chain = decode_chain(payload_of(record).get("cert"))
        check_chain(chain, network=name, network_key=network_key, subject=record.signer, now=now, verify=verify)
    except (CertificateError, RecordError) as exc:
        return f"not admitted to network {name!r}: {exc}"
    return None


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
    chain: tuple[Certificate, ...] = ()  # by which the network admits `public_key` (not checked here)

    def payload(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "network": self.network,
            "load": self.load,
            "peers": self.peers,
            "workloads": list(self.workloads),
            "cert": encode_chain(self.chain),
        }

    @classmethod
    def from_record(cls, record: SignedRecord) -> CoordinatorAnnouncement | None:
        """The announcement a verified record carries; None for a withdrawal or a malformed one.
        Its certificate chain is parsed, not checked: `admission_problem` checks it."""
        if is_withdrawn(record):
            return None
        payload = payload_of(record)
        url, network, load, peers, workloads = (
            payload.get(k) for k in ("url", "network", "load", "peers", "workloads")
        )
        try:
            chain = decode_chain(payload.get("cert"))
        except CertificateError:
            return None
        if not (
            isinstance(url, str)
            and url.startswith(("http://", "https://"))
            and len(url) <= 2048
            and isinstance(network, str)
            and valid_network(network)
            and is_count(load)
            and is_count(peers)
            and isinstance(workloads, list)
            and len(workloads) <= MAX_WORKLOADS
            and all(isinstance(w, str) and len(w) <= 64 for w in workloads)
        ):
            return None
        return cls(
            record.signer.hex(), url.rstrip("/"), network, load, peers, tuple(workloads), record.issued_at, chain
        )


def is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


# ---- bundles and their swarms --------------------------------------------------------------


def bundle_key(network: str, name: str) -> str:
    """The DHT key under which coordinators of `network` announce the versions of bundle `name`
    they serve: payload {"name": NAME, "versions": [[VERSION, INFO_HASH], ...]}."""
    if not valid_network(network):
        raise ValueError(f"network name {network!r} must be 1-64 of a-z, 0-9, '.', '_', '-'")
    return f"osaas/v1/bundles/{network}/{name}"


def swarm_key(info_hash: bytes) -> str:
    """The DHT key under which every holder of a bundle (coordinator seed or peer) announces
    the address it seeds from: payload {"host": HOST, "port": PORT}."""
    if len(info_hash) != 20:
        raise ValueError("info_hash must be the 20-byte v1 info-hash")
    return f"osaas/v1/swarm/{info_hash.hex()}"


@dataclass(frozen=True, slots=True)
class SwarmMember:
    public_key: str  # hex; the record's signer
    host: str
    port: int

    def payload(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}

    @classmethod
    def from_record(cls, record: SignedRecord) -> SwarmMember | None:
        """The member a verified record names; None for a withdrawal or a malformed one."""
        if is_withdrawn(record):
            return None
        payload = payload_of(record)
        host, port = payload.get("host"), payload.get("port")
        if not (isinstance(host, str) and 0 < len(host) <= 255 and is_count(port) and 0 < port < 65536):
            return None
        return cls(record.signer.hex(), host, port)


@dataclass(frozen=True, slots=True)
class BundleAnnouncement:
    public_key: str  # hex; the coordinator that signed it
    name: str
    versions: tuple[tuple[str, bytes], ...]  # (version, v1 info-hash)

    def payload(self) -> dict[str, Any]:
        return {"name": self.name, "versions": [[v, h] for v, h in self.versions]}

    @classmethod
    def from_record(cls, record: SignedRecord) -> BundleAnnouncement | None:
        if is_withdrawn(record):
            return None
        payload = payload_of(record)
        name, versions = payload.get("name"), payload.get("versions")
        if not (isinstance(name, str) and 0 < len(name) <= 64 and isinstance(versions, list) and len(versions) <= 8):
            return None
        pairs = []
        for entry in versions:
            if not (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and 0 < len(entry[0]) <= 64
                and isinstance(entry[1], bytes)
                and len(entry[1]) == 20
            ):
                return None
            pairs.append((entry[0], entry[1]))
        return cls(record.signer.hex(), name, tuple(pairs))
