"""Owner key pinning: the first key seen for a bundle name is the only one trusted for it, until the owner rotates it."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from overlay import wire
from overlay.identity import PUBLIC_KEY_SIZE, verify
from workloads.bundle.building import (
    _write_atomic,
)
from workloads.bundle.manifest import (
    _NAME_RE,
    ROTATION_DOMAIN,
    BundleError,
    _require,
)
from workloads.bundle.signing import (
    SignedManifest,
)

log = logging.getLogger(__name__)


def rotation_statement(name: str, old_key: bytes, new_key: bytes) -> bytes:
    """The bytes an owner signs with `old_key` to hand bundle `name` over to `new_key`."""
    return wire.encode([ROTATION_DOMAIN, name, old_key, new_key])


class KeyPins:
    """Which owner key each bundle name is bound to: trust on first use, change by rotation."""

    def __init__(self, pins: Mapping[str, str] | None = None) -> None:
        self._pins: dict[str, str] = dict(pins or {})

    def owner_key(self, name: str) -> bytes | None:
        pinned = self._pins.get(name)
        return None if pinned is None else bytes.fromhex(pinned)

    def as_dict(self) -> dict[str, str]:
        return dict(self._pins)

    def check(self, signed: SignedManifest) -> None:
        name = signed.manifest.name
        pinned = self._pins.get(name)
        _require(
            pinned is None or pinned == signed.owner_key.hex(),
            f"bundle {name!r} is signed by key {signed.owner_key.hex()[:16]}…, but pinned to "
            f"{(pinned or '')[:16]}…; a new owner key needs a rotation signed by the old one",
        )

    def pin(self, signed: SignedManifest) -> None:
        self.check(signed)
        self._pins.setdefault(signed.manifest.name, signed.owner_key.hex())

    def rotate(self, name: str, new_key: bytes, statement: bytes, signature: bytes) -> None:
        old_key = self.owner_key(name)
        _require(old_key is not None, f"bundle {name!r} is not pinned; there is no key to rotate")
        assert old_key is not None
        _require(
            isinstance(new_key, bytes) and len(new_key) == PUBLIC_KEY_SIZE,
            f"new key for {name!r} must be {PUBLIC_KEY_SIZE} bytes",
        )
        _require(
            statement == rotation_statement(name, old_key, new_key),
            f"rotation statement does not hand {name!r} from its pinned key to the new key",
        )
        _require(
            verify(old_key, statement, signature),
            f"rotation of {name!r} is not signed by its pinned key",
        )
        self._pins[name] = new_key.hex()
        log.warning("bundle %s: owner key rotated to %s", name, new_key.hex())

    @classmethod
    def load(cls, path: Path) -> KeyPins:
        """Pins saved at `path`; none yet if the file does not exist."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise BundleError(f"{path}: cannot read ({exc})") from None
        try:
            obj = wire.decode(data)
        except wire.WireError as exc:
            raise BundleError(f"{path}: {exc}") from None
        _require(isinstance(obj, dict), f"{path}: not a map of bundle names to keys")
        for name, key in obj.items():
            _require(
                isinstance(name, str)
                and _NAME_RE.fullmatch(name) is not None
                and isinstance(key, str)
                and re.fullmatch(r"[0-9a-f]{64}", key) is not None,
                f"{path}: entry {name!r} is not a bundle name and a 32-byte hex key",
            )
        return cls(obj)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = wire.encode(dict(sorted(self._pins.items())))
        _write_atomic(path, lambda f: f.write(data))
