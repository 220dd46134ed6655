"""Checking a fetched archive against its manifest and unpacking it, member by member."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from workloads.bundle.building import _sha256_file
from workloads.bundle.manifest import (
    _CHUNK,
    MAX_FILES,
    MAX_TOTAL_BYTES,
    BundleError,
    _check_relpath,
    _require,
)
from workloads.bundle.signing import (
    SignedManifest,
    verify_manifest,
)

log = logging.getLogger(__name__)


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
