"""The address policy, as a table of IPv4 and IPv6 cases."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from peer.address_policy import describe_refusal, is_allowed

# address, allowed by default, allowed with allow_private
CASES = [
    ("93.184.216.34", True, True),
    ("8.8.8.8", True, True),
    ("127.0.0.1", False, True),
    ("127.255.0.9", False, True),
    ("10.1.2.3", False, True),
    ("172.16.0.1", False, True),
    ("192.168.1.1", False, True),
    ("169.254.169.254", False, True),  # cloud metadata endpoints live here
    ("100.64.0.1", False, True),
    ("192.0.2.1", False, True),
    ("198.18.0.1", False, True),
    ("240.0.0.1", False, True),
    ("0.0.0.0", False, False),
    ("224.0.0.1", False, False),
    ("239.255.255.250", False, False),
    ("255.255.255.255", False, False),
    ("2606:4700:4700::1111", True, True),
    ("::1", False, True),
    ("::", False, False),
    ("fe80::1", False, True),
    ("fec0::1", False, True),
    ("fc00::1", False, True),
    ("fd12:3456::1", False, True),
    ("ff02::1", False, False),
    ("2001:db8::1", False, True),
    ("::ffff:127.0.0.1", False, True),
    ("::ffff:10.0.0.1", False, True),
    ("::ffff:8.8.8.8", True, True),
    ("::ffff:0.0.0.0", False, False),
    ("2002:7f00:1::", False, True),  # 6to4 wrapping 127.0.0.1
    ("2002:c0a8:101::", False, True),  # 6to4 wrapping 192.168.1.1
    ("2002:808:808::", True, True),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False, True),  # Teredo, client 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", True, True),  # Teredo, client 8.8.8.8
    ("64:ff9b::a00:1", False, True),  # NAT64 wrapping 10.0.0.1
    ("64:ff9b::808:808", True, True),
]


@pytest.mark.parametrize(("address", "default", "with_private"), CASES)
def test_policy_table(address: str, default: bool, with_private: bool) -> None:
    ip = ip_address(address)
    assert (is_allowed(ip, False), is_allowed(ip, True)) == (default, with_private)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address; pass --allow-private to check it"),
        ("10.0.0.7", "10.0.0.7 is a private address; pass --allow-private to check it"),
        ("100.64.3.4", "100.64.3.4 is a shared (carrier-grade NAT) address; pass --allow-private to check it"),
        ("169.254.169.254", "169.254.169.254 is a link-local address; pass --allow-private to check it"),
        ("fd00::1", "fd00::1 is a unique-local address; pass --allow-private to check it"),
        ("fec0::1", "fec0::1 is a site-local address; pass --allow-private to check it"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address and is never checked"),
        ("ff02::1", "ff02::1 is a multicast address and is never checked"),
        (
            "::ffff:192.168.0.1",
            "::ffff:c0a8:1 (which carries 192.168.0.1) is a private address; pass --allow-private to check it",
        ),
    ],
)
def test_refusals_are_described_in_one_line(address: str, reason: str) -> None:
    assert describe_refusal(ip_address(address)) == reason


def test_describing_a_public_address_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="public address"):
        describe_refusal(ip_address("8.8.8.8"))
