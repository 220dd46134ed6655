"""`osaas network keygen | admit | show` as an operator runs them, and the one-line refusals of
`coordinator serve --network-cert` and `peer run` that follow from them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from overlay.identity import Identity
from tests.test_cli import assert_one_line_error, osaas


def ok(*args: str) -> str:
    run = osaas(*args)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_keygen_admit_directly_and_through_a_delegate(tmp_path: Path) -> None:
    net, key = tmp_path / "lab.network", tmp_path / "lab.key"
    assert "network lab: key" in ok("network", "keygen", "lab", "--key", str(key), "--out", str(net))
    assert (key.stat().st_mode & 0o777) == 0o600
    network_key = Identity.load(key).public_hex
    assert tomllib.loads(net.read_text()) == {"network": "lab", "network_key": network_key}
    coordinator = ok("coordinator", "key", "--db", str(tmp_path / "c.sqlite")).strip()
    assert coordinator == Identity.load(tmp_path / "c.key").public_hex
    base = ("--network-file", str(net))

    ok("network", "admit", coordinator, *base, "--key", str(key), "--days", "30", "--out", str(tmp_path / "c.cert"))
    shown = ok("network", "show", str(tmp_path / "c.cert"))
    assert f"network lab  key {network_key}" in shown and f"{coordinator} as coordinator" in shown

    delegate_key = tmp_path / "delegate.key"
    delegate = Identity.load_or_create(delegate_key).public_hex
    ok("network", "admit", delegate, *base, "--key", str(key), "--delegate", "--out", str(tmp_path / "d.cert"))
    via = ("--key", str(delegate_key), "--delegation", str(tmp_path / "d.cert"))
    ok("network", "admit", coordinator, *base, *via, "--out", str(tmp_path / "c2.cert"))
    shown = ok("network", "show", str(tmp_path / "c2.cert"))
    assert f"{delegate} as delegate" in shown and f"{coordinator} as coordinator" in shown

    # Refusals, each one line.
    assert_one_line_error(osaas("network", "keygen", "lab", "--key", str(key), "--out", str(net)), "exists already")
    stranger = ("--key", str(delegate_key))  # not the network key, and no --delegation
    out = ("--out", str(tmp_path / "x.cert"))
    assert_one_line_error(osaas("network", "admit", coordinator, *base, *stranger, *out), "is not the key of network")
    assert_one_line_error(osaas("network", "admit", coordinator, *base, *via, "--delegate", *out), "cannot delegate")
    assert_one_line_error(osaas("network", "admit", "nope", *base, "--key", str(key), *out), "not a public key")
    (tmp_path / "bad.cert").write_text(net.read_text() + 'chain = "c0ffee"\n')
    assert_one_line_error(osaas("network", "show", str(tmp_path / "bad.cert")), "not a certificate chain")
    (tmp_path / "huge.cert").write_bytes(b"#" * 100_000)
    assert_one_line_error(osaas("network", "show", str(tmp_path / "huge.cert")), "over 16384 bytes")


def test_a_coordinator_refuses_a_certificate_of_another_key_and_a_peer_needs_the_network_key(tmp_path: Path) -> None:
    net, key = tmp_path / "lab.network", tmp_path / "lab.key"
    ok("network", "keygen", "lab", "--key", str(key), "--out", str(net))
    someone_else = Identity.generate().public_hex
    cert = tmp_path / "other.cert"
    ok("network", "admit", someone_else, "--network-file", str(net), "--key", str(key), "--out", str(cert))
    serve = ("coordinator", "serve", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "c.sqlite"))
    assert_one_line_error(osaas(*serve, "--network-cert", str(cert)), "not this coordinator's")
    assert_one_line_error(osaas(*serve, "--network-cert", str(net)), "not a certificate")
    assert_one_line_error(osaas(*serve, "--network-cert", str(cert), "--network", "other"), "is for network 'lab'")
    peer = ("peer", "run", "--data-dir", str(tmp_path / "p"), "--bootstrap", "127.0.0.1:9")
    assert_one_line_error(osaas(*peer, "--network", "lab"), "no known network key")
    assert_one_line_error(osaas(*peer, "--network-key", "xyz"), "--network-key")
