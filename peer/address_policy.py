"""Which IP addresses a workload may reach through the peer's egress.

A volunteer lends bandwidth to the public web, never access to their own network: private,
loopback, link-local and other special-purpose addresses are refused unless the volunteer
explicitly allows private targets (for testing their own sites). Unspecified, multicast and
broadcast addresses are refused always, since no web server lives there.

IPv6 addresses that carry an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64) are judged by
the IPv4 address they carry, since that is where the packets end up.

Pure: no I/O. The classification is ours rather than `ipaddress.is_private`, whose meaning
has changed between Python patch releases.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

_SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_BROADCAST = IPv4Address("255.255.255.255")
_UNIQUE_LOCAL = IPv6Network("fc00::/7")
_NAT64 = IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)

# Kinds refused even when private targets are allowed.
_NEVER = frozenset({"unspecified", "multicast", "broadcast"})


def is_allowed(ip: IPAddress, allow_private: bool) -> bool:
    """True if the egress may connect to `ip`."""
    kind = _refused_kind(ip)
    if kind is None:
        return True
    return allow_private and kind not in _NEVER


def describe_refusal(ip: IPAddress) -> str:
    """One line saying why `ip` is refused and what the volunteer can do about it.

    Raises ValueError for an address that is never refused (a caller's bug).
    """
    kind = _refused_kind(ip)
    if kind is None:
        raise ValueError(f"{ip} is a public address; nothing is refused")
    embedded = _embedded_ipv4(ip)
    subject = f"{ip} (which carries {embedded})" if embedded is not None else str(ip)
    article = "an" if kind[0] in "aeiou" and not kind.startswith("uni") else "a"
    if kind in _NEVER:
        return f"{subject} is {article} {kind} address and is never checked"
    return f"{subject} is {article} {kind} address; pass --allow-private to check it"


def _refused_kind(ip: IPAddress) -> str | None:
    """The kind of special address `ip` is, or None for a public unicast address."""
    if isinstance(ip, IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return _refused_kind(embedded)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip == _BROADCAST:
        return "broadcast"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, IPv4Address) and ip in _SHARED:
        return "shared (carrier-grade NAT)"
    if isinstance(ip, IPv6Address) and ip in _UNIQUE_LOCAL:
        return "unique-local"
    if isinstance(ip, IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "special-purpose"
    return None


def _embedded_ipv4(ip: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 address delivers to, if it is one of the wrapping forms."""
    if not isinstance(ip, IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # (server, client): packets are relayed to the client
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None
