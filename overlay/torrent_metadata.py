"""The info dict a fetch keeps beside its partial file (`overlay.torrent` `TorrentSession.fetch`
`metadata_file`), so that the next fetch of the torrent can have libtorrent check the pieces
already there: written byte for byte as libtorrent had it, read back only for the torrent it
was kept for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import libtorrent as lt

from overlay.files import atomic_file

log = logging.getLogger("overlay.torrent")


def read_metadata(path: Path, info_hash: bytes) -> Any:
    """The torrent_info kept in `path` by an earlier fetch of `info_hash`; None when there is
    none, or it is not that torrent's (it is then deleted)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring kept metadata %s: %s", path, exc)
        return None
    try:
        info = lt.torrent_info(data)
        matches = info.info_hashes().v1.to_bytes() == info_hash and info.num_files() == 1
    except RuntimeError:
        matches = False
    if not matches:
        log.warning("ignoring kept metadata %s: not the single-file torrent %s", path, info_hash.hex())
        path.unlink(missing_ok=True)
        return None
    return info


def write_metadata(path: Path, info: Any) -> None:
    """Keep a torrent's info dict, byte for byte (its SHA-1 is the info-hash), as a .torrent."""
    with atomic_file(path) as f:
        f.write(torrent_of(info))


def torrent_of(info: Any) -> bytes:
    """A .torrent of libtorrent's `torrent_info`: its info dict alone, byte for byte, so that it
    has the same info-hash; enough to seed the file again (libtorrent checks it against the
    info dict's piece hashes)."""
    return b"d4:info" + bytes(info.info_section()) + b"e"
