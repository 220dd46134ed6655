"""The routing contacts a node keeps on disk, to rejoin quickly after a restart."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from overlay import wire
from overlay.dht.checks import (
    MAX_SAVED_CONTACTS,
    Address,
    _is_id,
    _is_ip,
    _is_port,
)
from overlay.files import atomic_file

log = logging.getLogger("overlay.dht")  # one logger for the whole node


@dataclass(frozen=True, slots=True)
class _Saved:
    node_id: bytes | None
    contacts: tuple[Address, ...]


def _parse_state(data: bytes) -> _Saved:
    obj = wire.decode(data)
    if not isinstance(obj, dict) or not _is_id(obj.get("node_id")) or not isinstance(obj.get("contacts"), list):
        raise wire.WireError("state must be a map of node_id, contacts")
    contacts = tuple(
        (c[0], c[1])
        for c in obj["contacts"][:MAX_SAVED_CONTACTS]
        if isinstance(c, list) and len(c) == 2 and _is_ip(c[0]) and _is_port(c[1])
    )
    return _Saved(obj["node_id"], contacts)


def _load_state(path: Path) -> _Saved:
    try:
        return _parse_state(path.read_bytes())
    except FileNotFoundError:
        return _Saved(None, ())
    except (OSError, wire.WireError) as exc:
        log.warning("ignoring unreadable DHT state %s: %s", path, exc)
        return _Saved(None, ())


def _write_state(path: Path, state: _Saved) -> None:
    data = wire.encode({"node_id": state.node_id, "contacts": [list(c) for c in state.contacts]})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(data)
