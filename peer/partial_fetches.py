"""Bundle fetches that did not finish, kept so that the next fetch of the same torrent goes on
from the pieces already there instead of starting over.

Layout under `root` (the bundle cache's `partial/`):

    <info-hash hex>/data/       the torrent's file as far as it came
    <info-hash hex>/torrent     its info dict (a .torrent), kept once libtorrent had it

Nothing here is trusted: libtorrent hashes the file again when the next fetch adds the torrent
and keeps only the pieces that pass, the metadata counts only when its info-hash is the one
asked for (`overlay.torrent`), and a finished fetch is checked against the signed manifest like
any other (`peer.bundles`). What is kept is bounded: at most KEEP partial fetches, none older
than MAX_AGE; one goes once its bundle is kept, or refused whole.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

KEEP = 4  # partial fetches kept at most (each at most one bundle's size)
MAX_AGE = 3 * 24 * 3600.0  # seconds a partial fetch is kept without being touched
_DATA_DIR = "data"
_METADATA_FILE = "torrent"


def to_remove(
    found: Iterable[tuple[str, float]], now: float, *, keep: int = KEEP, max_age: float = MAX_AGE
) -> set[str]:
    """Which of the partial fetches `found` ((name, last touched)) to delete: those older than
    `max_age`, and all but the `keep` most recently touched; `keep` 0 deletes all."""
    fresh = sorted(((touched, name) for name, touched in found if now - touched <= max_age), reverse=True)
    kept = {name for _, name in fresh[:keep]}
    return {name for name, _ in found} - kept


class PartialFetches:
    """The partial fetches under `root`; made on first use."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def data_dir(self, info_hash: bytes) -> Path:
        return self._root / info_hash.hex() / _DATA_DIR

    def metadata_file(self, info_hash: bytes) -> Path:
        return self._root / info_hash.hex() / _METADATA_FILE

    def prepare(self, info_hash: bytes) -> None:
        """Make room for a fetch of `info_hash` (going on from its partial fetch, if kept): the
        others beyond the bound go, and anything in its place that is no partial fetch."""
        self._root.mkdir(parents=True, exist_ok=True)
        where = self._root / info_hash.hex()
        if where.exists() and (where.is_symlink() or not where.is_dir() or _stray(where)):
            log.warning("deleting %s: not a partial fetch", where)
            _delete(where)
        self.data_dir(info_hash).mkdir(parents=True, exist_ok=True)
        where.touch()
        self.tidy(keep=KEEP - 1, besides=info_hash)

    def tidy(self, *, keep: int = KEEP, besides: bytes | None = None) -> None:
        """Delete what the bound says to, and anything under `root` that is no partial fetch;
        `besides` (the fetch under way) is neither counted nor deleted."""
        if not self._root.is_dir():
            return
        found = []
        for path in self._root.iterdir():
            if besides is not None and path.name == besides.hex():
                continue
            if not _is_hex_hash(path.name) or path.is_symlink() or not path.is_dir():
                log.warning("deleting %s: not a partial fetch", path)
                _delete(path)
                continue
            found.append((path.name, path.stat().st_mtime))
        for name in to_remove(found, time.time(), keep=keep):
            log.info("deleting partial bundle fetch %s", name)
            _delete(self._root / name)

    def remove(self, info_hash: bytes) -> None:
        _delete(self._root / info_hash.hex())


def _stray(where: Path) -> bool:
    """Whether `where` holds anything a fetch did not put there."""
    for path in where.iterdir():
        if path.name == _METADATA_FILE and path.is_file() and not path.is_symlink():
            continue
        if path.name == _DATA_DIR and path.is_dir() and not path.is_symlink():
            if all(f.is_file() and not f.is_symlink() for f in path.iterdir()):
                continue
        return True
    return False


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_hex_hash(name: str) -> bool:
    return len(name) == 40 and all(c in "0123456789abcdef" for c in name)
