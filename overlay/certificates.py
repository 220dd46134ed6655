"""Network certificates: which coordinators a network admits. Pure: no I/O, the clock is passed in.

A network is a name and a network key (Ed25519). Its holder admits a coordinator by signing a
`Certificate` naming the coordinator's public key, the network and an expiry; or delegates
admitting to another key with a certificate of role "delegate", whose holder then signs the
coordinators' certificates. A coordinator carries its chain in every announcement:

    [coordinator cert signed by the network key]
    [delegate cert signed by the network key, coordinator cert signed by the delegate]

Chains are at most two long (a delegate cannot delegate again). A peer and every DHT node check
the chain (`check_chain`): each certificate's signature, the network's name and key, the roles,
the links (the second's issuer is the first's subject), every expiry, and that the last
certificate names the key the announcement is signed with.

Encoded as msgpack maps with exactly the fields below; a chain's encoding is at most
`MAX_CHAIN_BYTES`. The signature covers a domain string and every other field, so a
certificate cannot be read as any other signed message of ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from overlay import wire
from overlay.errors import OsaasError
from overlay.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify

DOMAIN = "osaas-network-certificate-v1"
COORDINATOR = "coordinator"
DELEGATE = "delegate"
ROLES = (COORDINATOR, DELEGATE)
MAX_CHAIN = 2
MAX_CHAIN_BYTES = 600  # two certificates of a 64-character network name: 545
MAX_LIFETIME = 400 * 86400.0  # a certificate's expiry is at most this far ahead when issued

_FIELDS = frozenset({"issuer", "subject", "network", "role", "expires_at", "signature"})

Verify = Callable[[bytes, bytes, bytes], bool]


class CertificateError(OsaasError):
    """A certificate or chain that is malformed, wrongly signed, expired or for another network."""


@dataclass(frozen=True, slots=True)
class Certificate:
    issuer: bytes  # the key that signed it: the network key, or a delegate's
    subject: bytes  # the key it admits
    network: str
    role: str  # COORDINATOR or DELEGATE
    expires_at: float
    signature: bytes

    def signed_bytes(self) -> bytes:
        return _signed_bytes(self.issuer, self.subject, self.network, self.role, self.expires_at)

    def to_obj(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "subject": self.subject,
            "network": self.network,
            "role": self.role,
            "expires_at": self.expires_at,
            "signature": self.signature,
        }


@dataclass(frozen=True, slots=True)
class Admission:
    """A coordinator's proof that `network` (named, with `network_key`) admits it."""

    network: str
    network_key: bytes
    chain: tuple[Certificate, ...]

    @property
    def subject(self) -> bytes:
        return self.chain[-1].subject

    @property
    def expires_at(self) -> float:
        return min(c.expires_at for c in self.chain)


def _signed_bytes(issuer: bytes, subject: bytes, network: str, role: str, expires_at: float) -> bytes:
    return wire.encode([DOMAIN, issuer, subject, network, role, expires_at])


def issue(issuer: Identity, subject: bytes, network: str, role: str, expires_at: float, now: float) -> Certificate:
    """`issuer`'s certificate admitting `subject` to `network` as `role` until `expires_at`."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(subject) != PUBLIC_KEY_SIZE:
        raise ValueError(f"a subject is a {PUBLIC_KEY_SIZE}-byte public key")
    if not now < expires_at <= now + MAX_LIFETIME:
        raise ValueError(f"a certificate must expire after now and within {MAX_LIFETIME / 86400:.0f} days")
    expires = float(expires_at)
    signature = issuer.sign(_signed_bytes(issuer.public_key, subject, network, role, expires))
    return Certificate(issuer.public_key, subject, network, role, expires, signature)


def decode_chain(obj: Any) -> tuple[Certificate, ...]:
    """The chain a msgpack object holds; `CertificateError` if it is not a well-formed one."""
    if not isinstance(obj, list) or not 1 <= len(obj) <= MAX_CHAIN:
        raise CertificateError(f"a certificate chain is a list of 1 to {MAX_CHAIN} certificates")
    return tuple(_decode_one(entry) for entry in obj)


def _decode_one(obj: Any) -> Certificate:
    if not isinstance(obj, dict) or obj.keys() != _FIELDS:
        raise CertificateError("a certificate is a map of exactly " + ", ".join(sorted(_FIELDS)))
    issuer, subject, network, role = obj["issuer"], obj["subject"], obj["network"], obj["role"]
    expires_at, signature = obj["expires_at"], obj["signature"]
    if not (_is_key(issuer) and _is_key(subject)):
        raise CertificateError(f"a certificate's issuer and subject are {PUBLIC_KEY_SIZE}-byte keys")
    if not (isinstance(network, str) and 0 < len(network) <= 64):
        raise CertificateError("a certificate's network is a name of 1-64 characters")
    if role not in ROLES:
        raise CertificateError(f"a certificate's role is one of {', '.join(ROLES)}")
    if type(expires_at) is not float or not math.isfinite(expires_at):
        raise CertificateError("a certificate's expires_at is a finite float")
    if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_SIZE):
        raise CertificateError(f"a certificate's signature is {SIGNATURE_SIZE} bytes")
    return Certificate(issuer, subject, network, role, expires_at, signature)


def encode_chain(chain: Sequence[Certificate]) -> list[dict[str, Any]]:
    return [c.to_obj() for c in chain]


def _is_key(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == PUBLIC_KEY_SIZE


def check_chain(
    chain: Sequence[Certificate],
    *,
    network: str,
    network_key: bytes,
    subject: bytes,
    now: float,
    verify: Verify = verify,
) -> None:
    """Raise `CertificateError` unless `chain` admits `subject` as a coordinator of `network`
    (named, with `network_key`) at `now`. Signatures are checked last: they are the cost."""
    if not 1 <= len(chain) <= MAX_CHAIN:
        raise CertificateError(f"a certificate chain holds 1 to {MAX_CHAIN} certificates")
    if len(wire.encode(encode_chain(chain))) > MAX_CHAIN_BYTES:
        raise CertificateError(f"the certificate chain is over {MAX_CHAIN_BYTES} bytes")
    expected_issuer = network_key
    for position, cert in enumerate(chain):
        last = position == len(chain) - 1
        if cert.network != network:
            raise CertificateError(f"certificate is for network {cert.network[:64]!r}, not {network!r}")
        if cert.issuer != expected_issuer:
            what = "the network key" if position == 0 else "the delegate before it"
            raise CertificateError(f"certificate {position + 1} is not signed by {what}")
        if cert.role != (COORDINATOR if last else DELEGATE):
            raise CertificateError(f"certificate {position + 1} has role {cert.role!r}, not the one its place needs")
        if cert.expires_at <= now:
            raise CertificateError(f"certificate {position + 1} expired")
        expected_issuer = cert.subject
    if chain[-1].subject != subject:
        raise CertificateError("the certificate admits another key than the announcement's signer")
    for position, cert in enumerate(chain):
        if not verify(cert.issuer, cert.signed_bytes(), cert.signature):
            raise CertificateError(f"certificate {position + 1} has a bad signature")


def check_admission(admission: Admission, now: float) -> None:
    """Raise `CertificateError` unless `admission` is sound at `now` (a coordinator's own check)."""
    check_chain(
        admission.chain,
        network=admission.network,
        network_key=admission.network_key,
        subject=admission.subject,
        now=now,
    )
