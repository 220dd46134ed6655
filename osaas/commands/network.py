"""`osaas network keygen | admit | show`: a network's key, and the coordinators it admits.

A network is a name and a network key. Whoever holds the key admits coordinators (or
delegates admitting to another key); peers trust only the coordinators it admitted.

    osaas network keygen NAME             the network key (secret, 0600) and NAME.network,
                                          the public file peers and coordinators are given
    osaas network admit PUBKEY --network-file NAME.network --key NAME.key --out C.cert
                                          a certificate admitting coordinator PUBKEY
    osaas network admit PUBKEY ... --delegate
                                          a certificate letting PUBKEY admit coordinators itself;
                                          it then signs with `--key ITS.key --delegation D.cert`
    osaas network show FILE               what a network or certificate file says

Both files are TOML. A network file: `network` (the name) and `network_key` (64 hex digits).
A certificate file holds those and `chain`: hex of the msgpack certificate chain
(overlay.certificates), so it is a network file as well. Files are read with a size cap and
every problem is one line.
"""

from __future__ import annotations

import argparse
import datetime
import time
import tomllib
from pathlib import Path

from osaas.commands._shared import EXIT_OK, UsageError, _network, _positive
from overlay import wire
from overlay.certificates import (
    COORDINATOR,
    DELEGATE,
    MAX_LIFETIME,
    Admission,
    CertificateError,
    check_chain,
    decode_chain,
    encode_chain,
    issue,
)
from overlay.files import atomic_file
from overlay.identity import Identity, IdentityError

MAX_FILE_BYTES = 16 * 1024
DEFAULT_DAYS = 90


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    network = commands.add_parser("network", help="a network's key and the coordinators it admits").add_subparsers(
        metavar="ACTION"
    )
    keygen = network.add_parser("keygen", help="make a network key and the network file to hand out")
    keygen.add_argument("name", type=_network, metavar="NAME", help="the network's name (peers' --network)")
    keygen.add_argument("--key", type=Path, help="where the secret network key goes (default: NAME.key here)")
    keygen.add_argument("--out", type=Path, help="the public network file (default: NAME.network here)")
    keygen.set_defaults(run=_cmd_keygen)
    admit = network.add_parser("admit", help="certify a coordinator's key (or a delegate's) for the network")
    admit.add_argument("public_key", metavar="PUBKEY", help="the key to admit (a coordinator's: beside its --db)")
    admit.add_argument("--network-file", type=Path, required=True, metavar="FILE", help="from `network keygen`")
    admit.add_argument("--key", type=Path, required=True, metavar="KEYFILE", help="the network key, or a delegate's")
    admit.add_argument(
        "--delegation", type=Path, metavar="FILE", help="the delegate's own certificate, when --key is a delegate's"
    )
    admit.add_argument("--delegate", action="store_true", help="let PUBKEY admit coordinators (not be one)")
    admit.add_argument(
        "--days", type=_positive, default=DEFAULT_DAYS, help=f"how long it is valid (default {DEFAULT_DAYS})"
    )
    admit.add_argument("--out", type=Path, required=True, metavar="FILE", help="the certificate file to write")
    admit.set_defaults(run=_cmd_admit)
    show = network.add_parser("show", help="what a network or certificate file says")
    show.add_argument("file", type=Path, metavar="FILE")
    show.set_defaults(run=_cmd_show)


# ---- the files -------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{path} is over {MAX_FILE_BYTES} bytes: not a network or certificate file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path} is not a network or certificate file: {exc}") from exc


def parse_network_key(text: str) -> bytes:
    key = text.strip().lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"{text[:80]!r} is not a network key (64 hex digits, as `osaas network keygen` prints)")
    return bytes.fromhex(key)


def read_network_file(path: Path) -> tuple[str, bytes]:
    """The network name and key a network (or certificate) file names."""
    data = _read_toml(path)
    name, key = data.get("network"), data.get("network_key")
    if not isinstance(name, str) or not isinstance(key, str):
        raise UsageError(f"{path} names no network: it needs `network` and `network_key`")
    try:
        return _network(name), parse_network_key(key)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from exc


def read_certificate_file(path: Path) -> Admission:
    """The admission a certificate file holds, its form checked (not its signatures or expiry)."""
    name, key = read_network_file(path)
    chain_hex = _read_toml(path).get("chain")
    if not isinstance(chain_hex, str):
        raise UsageError(f"{path} is a network file, not a certificate (no `chain`): `osaas network admit` makes one")
    try:
        chain = decode_chain(wire.decode(bytes.fromhex(chain_hex)))
    except (ValueError, wire.WireError, CertificateError) as exc:
        raise UsageError(f"{path}: not a certificate chain: {exc}") from exc
    return Admission(name, key, chain)


def _write(path: Path, text: str, *, mode: int = 0o644) -> None:
    if path.exists():
        raise UsageError(f"{path} exists already; not replacing it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, mode=mode) as f:
            f.write(text.encode())
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def network_file_text(name: str, key: bytes) -> str:
    return (
        f"# osaas network {name!r}: give this file to peers (`osaas peer run --network-file FILE`)\n"
        f'network = "{name}"\nnetwork_key = "{key.hex()}"\n'
    )


def certificate_file_text(admission: Admission) -> str:
    last = admission.chain[-1]
    role = "may admit coordinators" if last.role == DELEGATE else "is a coordinator"
    return (
        f"# osaas certificate: {last.subject.hex()} {role} of network {admission.network!r}"
        f" until {_when(admission.expires_at)}\n"
        + network_file_text(admission.network, admission.network_key).split("\n", 1)[1]
        + f'chain = "{wire.encode(encode_chain(admission.chain)).hex()}"\n'
    )


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _load_identity(path: Path) -> Identity:
    try:
        return Identity.load(path)
    except IdentityError as exc:
        raise UsageError(str(exc)) from exc


# ---- the commands ----------------------------------------------------------------------------


def _cmd_keygen(args: argparse.Namespace) -> int:
    key_path = args.key or Path(f"{args.name}.key")
    out = args.out or Path(f"{args.name}.network")
    if key_path.exists():
        raise UsageError(f"{key_path} exists already; not replacing a key")
    if out.exists():
        raise UsageError(f"{out} exists already; not replacing it")
    identity = Identity.generate()
    _write(key_path, bytes(identity.signing_key).hex() + "\n", mode=0o600)
    _write(out, network_file_text(args.name, identity.public_key))
    print(f"network {args.name}: key {identity.public_hex}")
    print(f"secret key in {key_path} (keep it offline); give peers and coordinators {out}")
    return EXIT_OK


def _cmd_admit(args: argparse.Namespace) -> int:
    name, network_key = read_network_file(args.network_file)
    try:
        subject = parse_network_key(args.public_key)
    except ValueError:
        raise UsageError(f"{args.public_key[:80]!r} is not a public key (64 hex digits)") from None
    signer = _load_identity(args.key)
    now = time.time()
    prefix: tuple = ()
    if args.delegation is not None:
        if args.delegate:
            raise UsageError("a delegate cannot delegate again: leave out --delegate or --delegation")
        delegation = read_certificate_file(args.delegation)
        if (delegation.network, delegation.network_key) != (name, network_key):
            raise UsageError(f"{args.delegation} is for another network than {args.network_file}")
        if delegation.chain[-1].role != DELEGATE or delegation.subject != signer.public_key:
            raise UsageError(f"{args.delegation} does not let the key in {args.key} admit coordinators")
        prefix = delegation.chain
    elif signer.public_key != network_key:
        raise UsageError(f"{args.key} is not the key of network {name!r} (give --delegation if it is a delegate's)")
    expires_at = min(now + args.days * 86400.0, now + MAX_LIFETIME, *(c.expires_at for c in prefix))
    if expires_at <= now:
        raise UsageError(f"{args.delegation} has expired")
    role = DELEGATE if args.delegate else COORDINATOR
    try:
        cert = issue(signer, subject, name, role, expires_at, now)
        admission = Admission(name, network_key, (*prefix, cert))
        if role == COORDINATOR:
            check_chain(admission.chain, network=name, network_key=network_key, subject=subject, now=now)
    except (ValueError, CertificateError) as exc:
        raise UsageError(str(exc)) from exc
    _write(args.out, certificate_file_text(admission))
    what = "may admit coordinators" if args.delegate else "is admitted as a coordinator"
    print(f"{subject.hex()[:16]}… {what} of network {name} until {_when(expires_at)}: {args.out}")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    name, key = read_network_file(args.file)
    print(f"network {name}  key {key.hex()}")
    if "chain" in _read_toml(args.file):
        admission = read_certificate_file(args.file)
        for position, cert in enumerate(admission.chain, 1):
            print(
                f"certificate {position}: {cert.subject.hex()} as {cert.role}, signed by {cert.issuer.hex()[:16]}…,"
                f" until {_when(cert.expires_at)}"
            )
    return EXIT_OK
