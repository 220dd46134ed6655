"""What a peer is started with (`osaas peer run` builds it from its flags and config file), and
the address its bundle seeding is announced at, found from it.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from peer.budget import Budget
from peer.egress import EgressConfig
from peer.sandbox import DEFAULT_PROGRAM as DEFAULT_SANDBOX_PROGRAM
from peer.status import DEFAULT_STATUS_PORT

DEFAULT_BUNDLE_UPLOAD_RATE = 1_000_000  # bytes/s this peer seeds bundles to other peers


@dataclass(frozen=True, slots=True)
class PeerSettings:
    data_dir: Path
    coordinator: str | None = None  # an explicit coordinator URL; None: find one in the DHT
    bootstrap: tuple[tuple[str, int], ...] = ()
    network: str = "public"
    # Network name -> its network key (32 bytes): only coordinators a network's key admitted
    # are worked for; a network whose key the peer does not know is not looked for.
    network_keys: Mapping[str, bytes] = field(default_factory=dict)
    # Contact coordinators announced at loopback, private or link-local addresses (a network on
    # this machine or LAN); `egress.allow_private` allows them too.
    allow_private_coordinators: bool = False
    prefer: str | None = None  # the volunteer's preferred coordinator URL, if it is announced
    dht_listen: tuple[str, int] = ("0.0.0.0", 0)
    name: str = field(default_factory=socket.gethostname)
    slots: int = 4
    unit_timeout: float = 600.0
    drain_grace: float = 10.0
    egress: EgressConfig = field(default_factory=EgressConfig)
    torrent_listen: tuple[str, int] = ("0.0.0.0", 0)
    # Behind NAT: the IP (and forwarded port) others reach this peer's seeding at; None: found.
    public_address: tuple[str, int | None] | None = None
    port_mapping: bool = False  # ask the router to forward the torrent port (UPnP, NAT-PMP)
    bundle_upload_rate: int | None = DEFAULT_BUNDLE_UPLOAD_RATE
    bundle_fetch_timeout: float = 60.0  # seconds without progress before a bundle fetch fails
    budget: Budget = field(default_factory=Budget)
    status_port: int | None = DEFAULT_STATUS_PORT  # on 127.0.0.1; 0: any free port; None: not served
    config_path: Path | None = None  # where a budget changed on the local page is kept; None: nowhere
    # Work only after this many seconds without input (X11), or while the osaas screensaver
    # shows (peer.idle); None: always.
    idle_after: float | None = None
    # Owner keys (hex) whose bundles run where no sandbox can be built; with a sandbox, every
    # admitted owner's bundles run, confined (peer.trust).
    trusted_owners: frozenset[str] = frozenset()
    sandbox_program: str = DEFAULT_SANDBOX_PROGRAM


_UNSPECIFIED = ("", "0.0.0.0", "::")


def announce_host(settings: PeerSettings) -> str | None:
    """The address other peers can reach this peer's bundle seeding at: the listen address if
    one was given, else the local address of the route towards the network (behind NAT this is
    the private address; peers elsewhere then reach this one only through their own
    connections; --public-address says better). None when there is no way to tell."""
    if settings.public_address is not None:
        return settings.public_address[0]
    for host, _ in (settings.torrent_listen, settings.dht_listen):
        if host not in _UNSPECIFIED:
            return host
    target = settings.bootstrap[0][0] if settings.bootstrap else URL(settings.coordinator or "").host
    if not target:
        return None
    try:
        family = socket.AF_INET6 if ":" in target else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))  # UDP: no packet is sent, only a route chosen
            return str(probe.getsockname()[0])
    except OSError:
        return None
