"""Ed25519 identities: a signing key kept in a file, signatures over bytes.

Peers, coordinators and (later) bundle owners are known by their 32-byte public key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from overlay.errors import OsaasError
from overlay.files import atomic_file

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


class IdentityError(OsaasError):
    """A key file that cannot be read or holds no valid key."""


@dataclass(frozen=True, slots=True)
class Identity:
    signing_key: SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def load(cls, path: Path) -> Identity:
        try:
            seed = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise IdentityError(f"cannot read identity key {path}: {exc}") from exc
        if len(seed) != 32:
            raise IdentityError(f"identity key {path} must hold 32 bytes in hex")
        return cls(SigningKey(seed))

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the key at `path`, creating it (mode 0600) if there is none yet."""
        if path.exists():
            return cls.load(path)
        identity = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, mode=0o600) as f:
            f.write((bytes(identity.signing_key).hex() + "\n").encode())
        return identity

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def public_hex(self) -> str:
        return self.public_key.hex()

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s signature of `message`; never raises."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True
