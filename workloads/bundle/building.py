"""Building a bundle: a deterministic tar of the owner's source and its signed manifest."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from packaging.version import InvalidVersion, Version

from overlay import torrent
from overlay.files import atomic_file
from overlay.identity import Identity
from workloads.bundle.manifest import (
    _CHUNK,
    _SKIPPED_DIRS,
    _SKIPPED_SUFFIXES,
    BundleError,
    _check_relpath,
    _require,
    load_manifest,
)
from workloads.bundle.signing import (
    SignedManifest,
    encode,
    read_manifest,
    sign,
)

log = logging.getLogger(__name__)


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


def _sha256_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


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


def load_built(out_dir: Path, version: str | None = None) -> BuiltBundle:
    """The bundle `build()` wrote into `out_dir` (archive, manifest, torrent): `version`, or
    the newest of the versions there (`newest`). BundleError, one line, when it is not there."""
    manifests = sorted(out_dir.glob("*.manifest"))
    _require(
        bool(manifests), f"{out_dir}: no built bundle here (no .manifest file); build one with `osaas bundle build`"
    )
    read = [(path, read_manifest(path)) for path in manifests]
    names = sorted({signed.manifest.name for _, signed in read})
    _require(len(names) == 1, f"{out_dir}: holds bundles of several names ({', '.join(names)}); give a folder of one")
    found = {signed.manifest.version: (path, signed) for path, signed in read}
    if version is None:
        version = newest(list(found), out_dir)
    elif version not in found:
        raise BundleError(f"{out_dir}: no version {version} of {names[0]} here (it has {', '.join(sorted(found))})")
    manifest_path, signed = found[version]
    stem = signed.manifest.stem
    archive_path, torrent_path = out_dir / f"{stem}.tar", out_dir / f"{stem}.torrent"
    for path in (archive_path, torrent_path):
        _require(path.is_file(), f"{path}: missing; build the bundle again")
    return BuiltBundle(archive_path, manifest_path, torrent_path, signed)


def newest(versions: list[str], where: Path) -> str:
    """The newest of `versions`, compared as PEP 440 versions (1.10 after 1.9, 2.0rc1 before
    2.0); BundleError naming those that are not such versions, when there is more than one."""
    if len(versions) == 1:
        return versions[0]
    parsed: dict[str, Version] = {}
    for version in versions:
        try:
            parsed[version] = Version(version)
        except InvalidVersion:
            pass
    unordered = sorted(set(versions) - set(parsed))
    _require(
        not unordered,
        f"{where}: cannot tell which version is newest: {', '.join(unordered)} "
        f"{'is not a version' if len(unordered) == 1 else 'are not versions'} like 1.2.0; give --version",
    )
    return max(versions, key=parsed.__getitem__)
