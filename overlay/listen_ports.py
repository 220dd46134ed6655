"""Where a torrent session listens: the addresses `listen_interfaces` names for a host, and the
port when asked for any (port 0): the one chosen last time if it is free on every address the
session binds, else one free there now, kept in the session's state dir.

Chosen here, not by libtorrent: on an unspecified host (0.0.0.0) libtorrent opens a socket per
interface, each on a random port of its own, and the one port the session reports is not
reachable on every address; with one port named, every interface gets that port. And kept: a
coordinator that restarts keeps seeding where its peers were fetching from.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

PORT_FILE = "listen_port"
_FREE_PORT_TRIES = 20


def interfaces(host: str, port: int) -> str:
    """libtorrent's listen_interfaces for `host`: an unspecified host of either family means
    both families (where this machine has IPv6), on the one port: a peer on "0.0.0.0" could
    neither be reached over IPv6 nor connect out to an IPv6 seed."""
    if _is_unspecified(host):
        return f"0.0.0.0:{port},[::]:{port}" if _has_ipv6() else f"0.0.0.0:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def chosen(state_dir: Path, host: str) -> int:
    """The port to listen on at `host`: the remembered one while it is free; OSError when no
    port is free on every address of `host`."""
    try:
        remembered = int((state_dir / PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        remembered = 0
    if 0 < remembered < 65536 and _port_is_free(host, remembered):
        return remembered
    return _free_port(host)


def remember(state_dir: Path, port: int) -> None:
    (state_dir / PORT_FILE).write_text(f"{port}\n")


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _hosts_of(host: str) -> list[str]:
    """The addresses a session on `host` binds: both families' for an unspecified one."""
    if _is_unspecified(host):
        return ["0.0.0.0", "::"] if _has_ipv6() else ["0.0.0.0"]
    return [host]


def _port_is_free(host: str, port: int) -> bool:
    return all(_bind_works(each, port) for each in _hosts_of(host))


def _bind_works(host: str, port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libtorrent binds
            probe.bind((host, port))
    except OSError:
        return False
    return True


def _free_port(host: str) -> int:
    """A port free on every address a session on `host` binds."""
    first = _hosts_of(host)[0]
    for _ in range(_FREE_PORT_TRIES):
        with socket.socket(socket.AF_INET6 if ":" in first else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((first, 0))
            port = int(probe.getsockname()[1])
        if _port_is_free(host, port):
            return port
    raise OSError(f"no port is free on every address of {host}")
