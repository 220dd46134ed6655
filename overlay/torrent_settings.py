"""The settings a libtorrent session is made with: where it listens, who it is, and the rates
that must hold at the network interface (`wire_settings`, also applied when the volunteer
changes the budget). Values only; the session itself is overlay/torrent.py's.
"""

from __future__ import annotations

import libtorrent as lt

WIRE_SHARE = 1.06  # frames per byte of payload, at most (TCP over IPv6 at MTU 1500)
WINDOW_SECONDS = 0.25  # of a limited rate, what the peers' socket buffers may hold together
PEER_SHARE = 8  # peers a limited session is assumed to trade with at once
# libtorrent hands out rate-limited bytes once per tick (500 ms by default). A limited session
# then receives its quota in lumps (measured across namespaces at 250 kB/s: 1.9-2.4x of the
# rate in the busiest second; 1.1x at this tick), and every message of a handshake waits for
# the next tick (a first fetch began 1.5 s later). Idle, the session costs no more CPU.
TICK_MS = 25
UNLIMITED = -1  # libtorrent's value for no cap
MIN_SOCKET_BUFFER = 8 * 1024
MAX_SOCKET_BUFFER = 4 * 1024 * 1024
ALERT_MASK = lt.alert_category.status | lt.alert_category.error | lt.alert_category.storage | lt.alert_category.peer


def session_settings(
    interface: str, *, peer_id: bytes, port_mapping: bool, upload_slots: int | None, rates: tuple[int, int]
) -> lt.settings_pack:
    """Everything a new session is given: `interface` is libtorrent's listen_interfaces, `rates`
    the (upload, download) limits in bytes/s (0: unlimited)."""
    settings: lt.settings_pack = {
        "listen_interfaces": interface,
        # Listen where asked or fail: libtorrent would otherwise try the next ports,
        # then any port the system gives.
        "max_retry_port_bind": 0,
        "listen_system_port_fallback": False,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": port_mapping,
        "enable_natpmp": port_mapping,
        "allow_multiple_connections_per_ip": True,
        # A peer that went away is tried again after 2 s times its failures, not 60: a
        # fetch whose seed restarted would otherwise wait a minute or more for it, whatever
        # connect_peer said meanwhile (measured: a coordinator killed and back in 5 s).
        "min_reconnect_time": 2,
        "tick_interval": TICK_MS,
        "ignore_limits_on_local_network": False,
        # Without a cap, every interested peer is unchoked: volunteers want the whole swarm to
        # hold the bundle soon, not reciprocation. With libtorrent's 8 slots, and its choice
        # made again only every 15 s, peers of a swarm larger than 9 were sent at uneven rates
        # from the start (bench/net_swarm, 32 peers at 5 Mbit/s: the last piece came 46.7-54.8 s
        # after the start, without the cap 50.3-52.0 s; at 20 Mbit/s, 16 peers: the spread
        # of last pieces 1.8-2.2 -> 0.6-0.7 s, and the coordinator sent 1.15 -> 1.08x).
        "unchoke_slots_limit": upload_slots or UNLIMITED,
        # A seed unchokes the peers that have least or nearly all of the torrent
        # rather than the fastest: pieces reach more hands sooner and are passed on,
        # so the seed sends fewer of them twice (bench/bundle_swarm.py at N=16:
        # 1.47-1.52x -> 1.24-1.44x of the bundle from the coordinator).
        "seed_choking_algorithm": int(lt.seed_choking_algorithm_t.anti_leech),
        # A fingerprint of 20 characters is used as the whole peer id, so peers can
        # be told apart in stats whichever side opened the connection.
        "peer_fingerprint": peer_id.decode("ascii"),
        "alert_mask": ALERT_MASK | (lt.alert_category.port_mapping if port_mapping else 0),
    }
    settings.update(wire_settings(*rates))
    return settings


def wire_settings(upload_rate: int, download_rate: int) -> lt.settings_pack:
    """libtorrent's settings for rates that must hold at the network interface (0: unlimited).

    libtorrent's limiter counts BitTorrent's bytes and an estimate of the IP headers, while
    the interface counts whole frames: its limits are set lower by WIRE_SHARE. Connections are
    TCP only: µTP keeps its receive window in libtorrent's own buffers, so the kernel accepts
    what the limiter has not yet allowed, and its headers are not in the estimate. And each
    socket's buffers are kept to a share of the rate (`socket_buffer`), so that what several
    peers send at once cannot pile up in the kernel far ahead of the limiter; measured across
    namespaces at 250 kB/s from three peers: 1.16-1.25x of the download rate over 10 s with
    the defaults, 0.94-0.98x with these.
    """
    return {
        "upload_rate_limit": int(upload_rate / WIRE_SHARE),
        "download_rate_limit": int(download_rate / WIRE_SHARE),
        "rate_limit_ip_overhead": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Each direction by its own rate: an unlimited one keeps the kernel's tuning (a
        # receive buffer sized by the upload budget held downloads to buffer/RTT, 1.4 of
        # 2.5 MB/s across namespaces).
        "recv_socket_buffer_size": socket_buffer(download_rate),
        "send_socket_buffer_size": socket_buffer(upload_rate),
    }


def socket_buffer(rate: int) -> int:
    """The receive and send buffer of each peer connection for a limited `rate` (bytes/s; 0,
    unlimited: the kernel's own tuning): WINDOW_SECONDS of it over PEER_SHARE peers, at least
    MIN_SOCKET_BUFFER. A buffer caps one connection at about buffer/RTT, so a generous rate
    still gets buffers large enough for its speed."""
    if rate <= 0:
        return 0
    return int(min(max(rate * WINDOW_SECONDS / PEER_SHARE, MIN_SOCKET_BUFFER), MAX_SOCKET_BUFFER))
