"""The bundle format: a workload's code as a deterministic tar plus a signed manifest.

An owner keeps a source directory with a `bundle.toml`:

    name = "linkcheck"                 # 1-64 of [a-z0-9-_.]
    version = "1.2.0"
    entrypoint = ["python3", "-m", "linkcheck"]   # argv: python on the bundle's PYTHONPATH,
                                                  # or a program inside the bundle
    capabilities = ["fetch"]
    [limits]                           # all optional, positive integers
    cpu_seconds = 120
    memory_mb = 1024
    open_files = 64
    timeout_seconds = 120

`build()` turns it into `NAME-VERSION.tar` (same input, same bytes: sorted entries, mtime 0,
uid/gid 0, modes 0644/0755) and `NAME-VERSION.manifest`, a msgpack map signed by the owner's
Ed25519 key over a canonical encoding and a domain string. The manifest names the archive's
SHA-256 and every file's SHA-256, so a peer can check what it fetched before running any of it.
The torrent layer adds the info-hash later with `with_info_hash()`, which re-signs.

A peer then: `decode()` -> `KeyPins.check()` -> `unpack()` (which checks the signature and the
archive hash itself and extracts member by member, refusing links, devices, traversal, bombs
and anything the manifest does not name) into `cache_path()`.

Errors: `BundleError` (one line a person can act on) means a bundle, manifest, archive or pin
file is bad; `ValueError` means we called something impossible (our bug).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from overlay import torrent, wire
from overlay.errors import OsaasError
from overlay.files import atomic_file
from overlay.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify

log = logging.getLogger(__name__)

MANIFEST_FILE = "bundle.toml"
DOMAIN = "osaas-bundle-manifest-v1"
ROTATION_DOMAIN = "osaas-bundle-key-rotation-v1"
CAPABILITIES = frozenset({"fetch"})
DEFAULT_LIMITS = {"cpu_seconds": 120, "memory_mb": 1024, "open_files": 64, "timeout_seconds": 120}
# Far beyond any sane limit, small enough for every platform's rlimit and timer types.
_MAX_LIMIT = 2**31 - 1
MAX_TOTAL_BYTES = 200 * 1024 * 1024
MAX_FILES = 10_000
# 10,000 files with long paths fit easily; anything larger is not a manifest we want to parse.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_MAX_ENTRYPOINT_ARGS = 64
_MAX_ARG_CHARS = 1024
_MAX_PATH_CHARS = 1024
# BitTorrent v1 info-hashes are SHA-1 (20 bytes), v2 ones SHA-256 (32 bytes).
_INFO_HASH_SIZES = (20, 32)
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc",)
_NAME_RE = re.compile(r"[a-z0-9._-]{1,64}")
# Versions end up in file names, so only characters that are safe on every file system.
_VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,63}")
_CHUNK = 1024 * 1024
_TOML_KEYS = frozenset({"name", "version", "entrypoint", "limits", "capabilities"})
_SIGNED_KEYS = _TOML_KEYS | {"archive_sha256", "files", "owner_key", "info_hash", "signature"}


class BundleError(OsaasError):
    code = "invalid_bundle"

    """A bundle, manifest, archive or pin file that is malformed, tampered with or unsafe."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BundleError(message)


# ---- the manifest ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_seconds: int = DEFAULT_LIMITS["cpu_seconds"]
    memory_mb: int = DEFAULT_LIMITS["memory_mb"]
    open_files: int = DEFAULT_LIMITS["open_files"]
    timeout_seconds: int = DEFAULT_LIMITS["timeout_seconds"]

    def __post_init__(self) -> None:
        for key in DEFAULT_LIMITS:
            value = getattr(self, key)
            _require(
                type(value) is int and 0 < value <= _MAX_LIMIT,
                f"limits.{key} must be a positive integer",
            )

    def as_dict(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in DEFAULT_LIMITS}


@dataclass(frozen=True, slots=True)
class Manifest:
    """What `bundle.toml` says: validated on construction."""

    name: str
    version: str
    entrypoint: tuple[str, ...]
    limits: Limits = Limits()
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(
            isinstance(self.name, str) and _NAME_RE.fullmatch(self.name) is not None,
            "name must be 1-64 characters of a-z, 0-9, '-', '_' and '.'",
        )
        _require(
            isinstance(self.version, str) and _VERSION_RE.fullmatch(self.version) is not None,
            "version must be a string like \"1.2.0\" (letters, digits, '.', '+', '-')",
        )
        _require(
            isinstance(self.entrypoint, tuple)
            and 0 < len(self.entrypoint) <= _MAX_ENTRYPOINT_ARGS
            and all(_is_arg(arg) for arg in self.entrypoint),
            "entrypoint must be a non-empty list of non-empty strings",
        )
        _require(isinstance(self.limits, Limits), "limits must be a table")
        _require(
            isinstance(self.capabilities, tuple) and all(isinstance(c, str) for c in self.capabilities),
            "capabilities must be a list of strings",
        )
        for capability in self.capabilities:
            _require(
                capability in CAPABILITIES,
                f"capability {capability!r} is not one of {sorted(CAPABILITIES)}",
            )
        _require(len(set(self.capabilities)) == len(self.capabilities), "capabilities has duplicates")

    @property
    def stem(self) -> str:
        """The archive's and manifest file's name without extension."""
        return f"{self.name}-{self.version}"


def _is_arg(arg: object) -> bool:
    return isinstance(arg, str) and 0 < len(arg) <= _MAX_ARG_CHARS and "\0" not in arg


def _manifest_from_map(obj: Mapping[str, Any], where: str) -> Manifest:
    """Build a `Manifest` from a TOML table or decoded msgpack map; errors say `where`."""
    try:
        for key in ("name", "version", "entrypoint"):
            _require(key in obj, f"{key} is missing")
        raw_limits = obj.get("limits", {})
        _require(isinstance(raw_limits, dict), "limits must be a table")
        for key in raw_limits:
            _require(key in DEFAULT_LIMITS, f"limits.{key} is not a known limit")
        entrypoint = obj["entrypoint"]
        capabilities = obj.get("capabilities", [])
        _require(isinstance(entrypoint, list), "entrypoint must be a non-empty list of non-empty strings")
        _require(isinstance(capabilities, list), "capabilities must be a list of strings")
        return Manifest(
            name=obj["name"],
            version=obj["version"],
            entrypoint=tuple(entrypoint),
            limits=Limits(**raw_limits),
            # Sorted so that the order an owner wrote them in cannot change the signed bytes.
            capabilities=tuple(sorted(capabilities, key=str)),
        )
    except BundleError as exc:
        raise BundleError(f"{where}: {exc}") from None


def parse_manifest(text: str) -> Manifest:
    """Parse the text of a `bundle.toml`."""
    try:
        obj = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{MANIFEST_FILE}: not valid TOML ({exc})") from None
    for key in obj:
        _require(key in _TOML_KEYS, f"{MANIFEST_FILE}: unknown key {key!r}")
    return _manifest_from_map(obj, MANIFEST_FILE)


def load_manifest(source_dir: Path) -> Manifest:
    path = source_dir / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read ({exc})") from None
    return parse_manifest(text)


def _check_relpath(path: object, where: str) -> str:
    """A relative POSIX path that is safe on Linux, macOS and Windows alike."""
    _require(isinstance(path, str) and 0 < len(path) <= _MAX_PATH_CHARS, f"{where}: bad path {path!r}")
    assert isinstance(path, str)
    # Backslashes and colons are separators or drive letters on Windows volunteers' machines.
    _require(not any(c in path for c in "\0\\:"), f"{where}: path {path!r} has a forbidden character")
    _require(not path.startswith("/"), f"{where}: path {path!r} is absolute")
    parts = path.split("/")
    _require(".." not in parts, f"{where}: path {path!r} contains '..'")
    _require(all(p not in ("", ".") for p in parts), f"{where}: path {path!r} is not canonical")
    return path


# ---- the signed manifest -----------------------------------------------------------------


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
    # Lists, not maps, in a fixed order: msgpack map order is whatever the encoder saw.
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
    return wire.encode(
        {
            "name": m.name,
            "version": m.version,
            "entrypoint": list(m.entrypoint),
            "limits": m.limits.as_dict(),
            "capabilities": list(m.capabilities),
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
    for key in sorted(_SIGNED_KEYS - _TOML_KEYS):
        _require(key in obj, f"manifest: {key} is missing")
    manifest = _manifest_from_map({k: obj[k] for k in _TOML_KEYS if k in obj}, "manifest")
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


# ---- building ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltBundle:
    archive_path: Path
    manifest_path: Path
    torrent_path: Path
    signed: SignedManifest  # names the torrent's v1 info-hash


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str  # inside the archive
    source: Path
    is_dir: bool
    executable: bool


def _collect(root: Path, prefix: str = "") -> list[_Entry]:
    """Every directory and regular file under `root`, depth first, sorted by name."""
    entries: list[_Entry] = []
    try:
        children = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise BundleError(f"{root}: cannot list ({exc})") from None
    for child in children:
        path = _check_relpath(prefix + child.name, "source")
        st = child.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(f"{child.path}: symlinks cannot go into a bundle; copy the file instead")
        if stat.S_ISDIR(st.st_mode):
            if child.name in _SKIPPED_DIRS:
                continue
            entries.append(_Entry(path, Path(child.path), True, True))
            entries.extend(_collect(Path(child.path), path + "/"))
        elif stat.S_ISREG(st.st_mode):
            if child.name.endswith(_SKIPPED_SUFFIXES):
                continue
            entries.append(_Entry(path, Path(child.path), False, bool(st.st_mode & 0o111)))
        else:
            raise BundleError(f"{child.path}: only regular files and directories can go into a bundle")
    return entries


def _tarinfo(entry: _Entry, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
    info.size = size
    info.mode = 0o755 if entry.executable else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingReader:
    """Hashes what tarfile reads, so the manifest describes exactly the bytes archived."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.hash.update(data)
        return data


def _write_archive(entries: list[_Entry], out: IO[bytes]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if entry.is_dir:
                tar.addfile(_tarinfo(entry, 0))
                continue
            with open(entry.source, "rb") as f:
                reader = _HashingReader(f)
                size = os.fstat(f.fileno()).st_size
                tar.addfile(_tarinfo(entry, size), reader)
            files[entry.path] = reader.hash.digest()
    return files


def _write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Run `write(file)` on a temp file beside `path`, then move it into place."""
    with atomic_file(path) as f:
        write(f)


def build(source_dir: Path, identity: Identity, out_dir: Path) -> BuiltBundle:
    """Archive and sign `source_dir`; same input, same archive bytes."""
    source_dir = source_dir.resolve()
    out_dir = out_dir.resolve()
    # Otherwise each build would pack the previous one's output.
    _require(not out_dir.is_relative_to(source_dir), f"{out_dir}: output must be outside {source_dir}")
    manifest = load_manifest(source_dir)
    entries = _collect(source_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive_path = out_dir / f"{manifest.stem}.tar"
    files: dict[str, bytes] = {}

    def write_tar(f: IO[bytes]) -> None:
        try:
            files.update(_write_archive(entries, f))
        except OSError as exc:  # a source file changed or vanished while being read
            raise BundleError(f"{source_dir}: cannot archive ({exc})") from None

    _write_atomic(archive_path, write_tar)
    try:
        torrent_bytes = torrent.make_torrent(archive_path)
    except torrent.TorrentError as exc:
        raise BundleError(f"{archive_path}: {exc}") from None
    torrent_path = out_dir / f"{manifest.stem}.torrent"
    _write_atomic(torrent_path, lambda f: f.write(torrent_bytes))
    info_hash = torrent.info_hash_of(torrent_bytes)
    signed = sign(manifest, _sha256_file(archive_path), files, identity, info_hash)
    manifest_path = out_dir / f"{manifest.stem}.manifest"
    _write_atomic(manifest_path, lambda f: f.write(encode(signed)))
    log.info(
        "built bundle %s: %d files, archive sha256 %s, info-hash %s",
        manifest.stem,
        len(files),
        signed.archive_sha256.hex(),
        info_hash.hex(),
    )
    return BuiltBundle(archive_path, manifest_path, torrent_path, signed)


def load_built(out_dir: Path) -> BuiltBundle:
    """The one bundle `build()` wrote into `out_dir` (archive, manifest, torrent)."""
    manifests = sorted(out_dir.glob("*.manifest"))
    _require(len(manifests) == 1, f"{out_dir}: expected one .manifest file, found {len(manifests)}")
    signed = read_manifest(manifests[0])
    stem = signed.manifest.stem
    archive_path, torrent_path = out_dir / f"{stem}.tar", out_dir / f"{stem}.torrent"
    for path in (archive_path, torrent_path):
        _require(path.is_file(), f"{path}: missing; build the bundle again")
    return BuiltBundle(archive_path, manifests[0], torrent_path, signed)


# ---- checking and unpacking --------------------------------------------------------------


def _sha256_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


def verify_archive(archive_path: Path, signed: SignedManifest) -> None:
    try:
        actual = _sha256_file(archive_path)
    except OSError as exc:
        raise BundleError(f"{archive_path}: cannot read ({exc})") from None
    _require(
        actual == signed.archive_sha256,
        f"{archive_path}: sha256 does not match the manifest of {signed.manifest.stem}; "
        "the download is corrupt or tampered with",
    )


def cache_path(cache_dir: Path, signed: SignedManifest) -> Path:
    """Where the unpacked bundle lives: addressed by content, so versions never collide."""
    return cache_dir / signed.archive_sha256.hex()


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symlink"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a fifo"
    return f"of tar type {member.type!r}"


def _extract(
    tar: tarfile.TarFile,
    signed: SignedManifest,
    root: Path,
    max_total_bytes: int,
    max_files: int,
) -> None:
    seen: set[str] = set()  # case-folded: names differing only in case are one file on macOS
    written: set[str] = set()
    total = 0
    for member in tar:
        where = f"archive entry {member.name!r}"
        _require(len(seen) < max_files, f"archive has more than {max_files} entries")
        path = _check_relpath(member.name, where)
        _require(path.casefold() not in seen, f"{where}: duplicate name")
        seen.add(path.casefold())
        target = root.joinpath(*PurePosixPath(path).parts)
        if member.type == tarfile.DIRTYPE:
            target.mkdir(mode=0o755, parents=True, exist_ok=True)
            continue
        # Only plain files: sparse and contiguous types are legal tar but never built by us.
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise BundleError(f"{where}: refused, it is {_member_kind(member)}")
        expected = signed.files.get(path)
        _require(expected is not None, f"{where}: not listed in the manifest")
        total += member.size
        _require(total <= max_total_bytes, f"archive unpacks to more than {max_total_bytes} bytes")
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular member always has a file object
        digest = hashlib.sha256()
        with open(target, "xb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
        _require(
            digest.digest() == expected,
            f"{where}: content does not match its sha256 in the manifest",
        )
        written.add(path)
    missing = sorted(set(signed.files) - written)
    if missing:
        raise BundleError(f"archive is missing {missing[0]!r}, which the manifest names")


def unpack(
    archive_path: Path,
    signed: SignedManifest,
    dest_dir: Path,
    *,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_files: int = MAX_FILES,
) -> Path:
    """Check and extract the archive into `dest_dir`, which must not exist yet.

    The signature and archive hash are checked here too, so no caller can unpack unchecked
    bytes. Extraction goes to a temp dir beside `dest_dir`, renamed into place only when every
    entry passed; on any failure nothing is left behind.
    """
    verify_manifest(signed)
    verify_archive(archive_path, signed)
    _require(not dest_dir.exists(), f"{dest_dir}: already exists")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".partial", dir=dest_dir.parent))
    try:
        # "r:" only: the archive is never compressed, so its size already bounds what we read.
        with tarfile.open(archive_path, mode="r:") as tar:
            _extract(tar, signed, tmp, max_total_bytes, max_files)
        # Readable like every directory inside: a sandboxed workload runs as a uid of its own.
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest_dir)
    except (OSError, tarfile.TarError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"{archive_path}: cannot unpack ({exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("unpacked bundle %s into %s", signed.manifest.stem, dest_dir)
    return dest_dir


# ---- owner key pinning -------------------------------------------------------------------


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
