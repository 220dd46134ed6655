"""The signed manifest: what a peer checks before it fetches or runs a byte of a bundle."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from overlay import wire
from overlay.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify
from workloads.bundle.manifest import (
    _INFO_HASH_SIZES,
    _MANIFEST_KEYS,
    _SIGNED_KEYS,
    DEFAULT_LIMITS,
    DOMAIN,
    MAX_MANIFEST_BYTES,
    BundleError,
    Manifest,
    _check_relpath,
    _manifest_from_map,
    _require,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignedManifest:
    manifest: Manifest
    archive_sha256: bytes
    files: Mapping[str, bytes]  # path inside the archive -> SHA-256 of its content
    owner_key: bytes
    info_hash: bytes | None
    signature: bytes

    def __post_init__(self) -> None:
        _require(isinstance(self.manifest, Manifest), "manifest must be a Manifest")
        _require(_is_digest(self.archive_sha256), "archive_sha256 must be 32 bytes")
        _require(isinstance(self.files, Mapping), "files must be a map")
        for path, digest in self.files.items():
            _check_relpath(path, "files")
            _require(_is_digest(digest), f"files[{path!r}] must be 32 bytes")
        _require(
            isinstance(self.owner_key, bytes) and len(self.owner_key) == PUBLIC_KEY_SIZE,
            f"owner_key must be {PUBLIC_KEY_SIZE} bytes",
        )
        _require(
            self.info_hash is None or (isinstance(self.info_hash, bytes) and len(self.info_hash) in _INFO_HASH_SIZES),
            "info_hash must be None or 20 or 32 bytes",
        )
        _require(
            isinstance(self.signature, bytes) and len(self.signature) == SIGNATURE_SIZE,
            f"signature must be {SIGNATURE_SIZE} bytes",
        )


def _is_digest(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == 32


def _signing_bytes(
    manifest: Manifest,
    archive_sha256: bytes,
    files: Mapping[str, bytes],
    owner_key: bytes,
    info_hash: bytes | None,
) -> bytes:
    # Lists, not maps, in a fixed order: msgpack map order is whatever the encoder saw. A job
    # model, where declared, comes last: a manifest without one signs the bytes it always did.
    return wire.encode(
        [
            DOMAIN,
            manifest.name,
            manifest.version,
            list(manifest.entrypoint),
            [manifest.limits.as_dict()[key] for key in DEFAULT_LIMITS],
            sorted(manifest.capabilities),
            archive_sha256,
            [[path, files[path]] for path in sorted(files)],
            owner_key,
            info_hash,
        ]
        + ([] if manifest.job is None else [manifest.job.signed_part()])
        # Version 1 signs the bytes it always did; a later one is named (a pair, never a job's list).
        + ([] if manifest.api_version == 1 else [["api_version", manifest.api_version]])
    )


def sign(
    manifest: Manifest,
    archive_sha256: bytes,
    files: Mapping[str, bytes],
    identity: Identity,
    info_hash: bytes | None = None,
) -> SignedManifest:
    owner_key = identity.public_key
    signature = identity.sign(_signing_bytes(manifest, archive_sha256, files, owner_key, info_hash))
    return SignedManifest(manifest, archive_sha256, dict(files), owner_key, info_hash, signature)


def with_info_hash(signed: SignedManifest, info_hash: bytes, identity: Identity) -> SignedManifest:
    """The same manifest with the torrent's info-hash, signed again by its owner."""
    if identity.public_key != signed.owner_key:
        raise ValueError("only the bundle's owner can re-sign its manifest")
    verify_manifest(signed)
    return sign(signed.manifest, signed.archive_sha256, signed.files, identity, info_hash)


def verify_manifest(signed: SignedManifest) -> None:
    message = _signing_bytes(signed.manifest, signed.archive_sha256, signed.files, signed.owner_key, signed.info_hash)
    _require(
        verify(signed.owner_key, message, signed.signature),
        f"manifest of {signed.manifest.stem}: signature does not match the owner key",
    )


def encode(signed: SignedManifest) -> bytes:
    m = signed.manifest
    declared: dict[str, object] = {} if m.job is None else {"job_model": m.job.to_obj()}
    if m.api_version != 1:
        declared["api_version"] = m.api_version
    return wire.encode(
        {
            "name": m.name,
            "version": m.version,
            "entrypoint": list(m.entrypoint),
            "limits": m.limits.as_dict(),
            "capabilities": list(m.capabilities),
            **declared,
            "archive_sha256": signed.archive_sha256,
            "files": dict(sorted(signed.files.items())),
            "owner_key": signed.owner_key,
            "info_hash": signed.info_hash,
            "signature": signed.signature,
        }
    )


def decode(data: bytes) -> SignedManifest:
    """Parse a manifest file's bytes; does not check the signature (see `verify_manifest`)."""
    _require(len(data) <= MAX_MANIFEST_BYTES, f"manifest: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        obj = wire.decode(data)
    except wire.WireError as exc:
        raise BundleError(f"manifest: {exc}") from None
    _require(isinstance(obj, dict), "manifest: not a msgpack map")
    for key in obj:
        _require(key in _SIGNED_KEYS, f"manifest: unknown key {key!r}")
    for key in sorted(_SIGNED_KEYS - _MANIFEST_KEYS):
        _require(key in obj, f"manifest: {key} is missing")
    manifest = _manifest_from_map({k: obj[k] for k in _MANIFEST_KEYS if k in obj}, "manifest")
    try:
        return SignedManifest(
            manifest=manifest,
            archive_sha256=obj["archive_sha256"],
            files=obj["files"],
            owner_key=obj["owner_key"],
            info_hash=obj["info_hash"],
            signature=obj["signature"],
        )
    except BundleError as exc:
        raise BundleError(f"manifest: {exc}") from None


def read_manifest(path: Path) -> SignedManifest:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc})") from None
    return decode(data)
