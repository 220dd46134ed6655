"""What arrives from other DHT nodes, checked before kademlia sees it: the limits and validators every
other piece uses."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from overlay.records import (
    MAX_SET_BYTES,
)

Address = tuple[str, int]

ID_BYTES = 20
# rpcudp refuses to send a request body over 8192 bytes; add its type byte and message id.
MAX_DATAGRAM_BYTES = 1 + ID_BYTES + 8192
# Hundreds of simultaneous bootstraps overflow the UDP receive buffer and leave nodes with
# empty routing tables, silently (LIBRARIES.md); 20 at a time gave no failures.
BOOTSTRAP_CONCURRENCY = 20
BOOTSTRAP_ATTEMPTS = 4  # a join that finds no node tries again after 1, 2 and 4 RPC timeouts
RECEIVE_BUFFER_BYTES = 1024 * 1024
PING_CONCURRENCY = 16  # pings in flight at once
# Contacts pinged each maintenance round (every PING_INTERVAL, jittered), the longest silent
# first: a table of ~150 contacts is gone through in about ten minutes.
PINGS_PER_ROUND = 8
PING_INTERVAL = 30.0
# A request unanswered this long stops holding up a lookup (traversal.py); it may still answer.
STALL_AFTER = 0.25
# How long lookups skip a node that did not answer, unless it is heard from again; and how
# many nodes a node remembers as silent lately, and as heard from lately.
FAILED_MEMORY = 120.0
MAX_REMEMBERED_NODES = 4096
SAVE_INTERVAL = 60.0
MAX_SAVED_CONTACTS = 200
_COMPLAINT_INTERVAL = 60.0
_MAX_COMPLAINERS = 4096
_MAX_NODES_IN_ANSWER = 64

_REQUEST = b"\x00"
_RESPONSE = b"\x01"


def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == ID_BYTES


def _is_value(value: object) -> bool:
    return isinstance(value, bytes) and len(value) <= MAX_SET_BYTES


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


# Only these RPCs are served (rpcudp would dispatch to any rpc_* method, e.g. rpc_stun).
_ARGUMENT_CHECKS: dict[str, tuple[Callable[[object], bool], ...]] = {
    "ping": (_is_id,),
    "store": (_is_id, _is_id, _is_value),
    "find_node": (_is_id, _is_id),
    "find_value": (_is_id, _is_id),
}


def _request_problem(data: Any) -> str | None:
    """Why a decoded request is not one we serve, or None when it is."""
    if not isinstance(data, list) or len(data) != 2:
        return "request is not a [name, arguments] pair"
    name, args = data
    checks = _ARGUMENT_CHECKS.get(name) if isinstance(name, str) else None
    if checks is None:
        return f"unknown rpc {str(name)[:40]!r}"
    if not isinstance(args, list) or len(args) != len(checks):
        return f"rpc {name} takes {len(checks)} arguments"
    if not all(fits(arg) for fits, arg in zip(checks, args, strict=True)):
        return f"rpc {name} has arguments of the wrong type"
    return None


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _is_ip(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _node_triples(answer: Any) -> list[list[Any]] | None:
    """The well-formed [id, ip, port] entries of a find_node answer; None if it is no list."""
    if not isinstance(answer, list) or len(answer) > _MAX_NODES_IN_ANSWER:
        return None
    return [
        entry
        for entry in answer
        if isinstance(entry, list) and len(entry) == 3 and _is_id(entry[0]) and _is_ip(entry[1]) and _is_port(entry[2])
    ]


def _found_value(answer: Any) -> Any:
    """A find_value answer as kademlia expects it, or None when it is malformed."""
    if isinstance(answer, dict):
        return answer if answer.keys() == {"value"} and _is_value(answer["value"]) else None
    return _node_triples(answer)


class _Complaints:
    """Decides when a misbehaving sender is worth another log line: once a minute per host."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, host: str, now: float) -> bool:
        last = self._last.get(host)
        if last is not None and now - last < _COMPLAINT_INTERVAL:
            return False
        if len(self._last) >= _MAX_COMPLAINERS:
            self._last.clear()  # forgetting only means a few extra log lines
        self._last[host] = now
        return True
