"""`osaas bundle keygen | build | publish | rollout | status`: a project owner's bundles."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from osaas import owner
from osaas.commands._shared import (
    EXIT_OK,
    UsageError,
    _add_key_argument,
    _coordinator_url,
    _load_key,
    _percent,
    _with_session,
    default_owner_key,
)
from overlay.identity import Identity
from overlay.wire import to_obj


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bundles = commands.add_parser("bundle", help="build, publish and roll out code bundles").add_subparsers(
        metavar="ACTION"
    )
    keygen = bundles.add_parser("keygen", help="create an owner key; prints its public key")
    keygen.add_argument(
        "--out", type=Path, default=None, metavar="KEYFILE", help=f"where (default: {default_owner_key()})"
    )
    keygen.set_defaults(run=_cmd_bundle_keygen)
    build = bundles.add_parser("build", help="build and sign a bundle from a directory with a bundle.toml")
    build.add_argument("source", type=Path, metavar="DIR")
    _add_key_argument(build, "the owner's key, which signs the bundle")
    build.add_argument("--out", type=Path, required=True, metavar="OUTDIR")
    build.set_defaults(run=_cmd_bundle_build)
    publish = bundles.add_parser("publish", help="upload a built bundle to a coordinator, which seeds it")
    publish.add_argument("out", type=Path, metavar="OUTDIR")
    publish.add_argument(
        "--version",
        metavar="VERSION",
        help="the version to publish, when OUTDIR holds several (default: the newest, as PEP 440 orders them)",
    )
    publish.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    _add_key_argument(publish, "the key that signed the bundle, which signs the request")
    publish.set_defaults(run=_cmd_bundle_publish)
    rollout = bundles.add_parser("rollout", help="send a version to a share of peers (100 completes the rollout)")
    rollout.add_argument("name", metavar="NAME")
    rollout.add_argument("version", metavar="VERSION")
    rollout.add_argument("--percent", type=_percent, required=True)
    rollout.add_argument(
        "--force", action="store_true", help="roll out a version the coordinator rolled back, all the same"
    )
    rollout.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    _add_key_argument(rollout, "the bundle owner's key, which signs the request")
    rollout.set_defaults(run=_cmd_bundle_rollout)
    bundle_status = bundles.add_parser("status", help="a bundle's versions, rollout and failure rates")
    bundle_status.add_argument("name", metavar="NAME")
    bundle_status.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    bundle_status.add_argument("--json", action="store_true")
    bundle_status.set_defaults(run=_cmd_bundle_status)


def _cmd_bundle_keygen(args: argparse.Namespace) -> int:
    out = args.out or default_owner_key()
    if out.exists():
        raise UsageError(f"{out} already exists; an owner key is never overwritten")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        identity = Identity.load_or_create(out)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(identity.public_hex)
    return EXIT_OK


def _cmd_bundle_build(args: argparse.Namespace) -> int:
    from workloads.bundle import BundleError, build

    key = _load_key(args.key)
    try:
        built = build(args.source, key, args.out)
    except BundleError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    signed = built.signed
    assert signed.info_hash is not None
    print(
        f"built {signed.manifest.name} {signed.manifest.version}: {len(signed.files)} files, "
        f"{built.archive_path.stat().st_size} bytes, info-hash {signed.info_hash.hex()}"
    )
    print(f"  {built.archive_path}\n  {built.torrent_path}\n  {built.manifest_path}")
    return EXIT_OK


def _cmd_bundle_publish(args: argparse.Namespace) -> int:
    from workloads.bundle import BundleError, load_built

    try:
        built = load_built(args.out, args.version)
    except BundleError as exc:
        raise UsageError(str(exc)) from exc
    key = _load_key(args.key)
    status = asyncio.run(_with_session(lambda s: owner.publish(s, args.coordinator, key, built)))
    others = len(list(args.out.glob("*.manifest"))) - 1
    chosen = "" if args.version or not others else f" (the newest of {others + 1} versions in {args.out})"
    print(f"published {built.signed.manifest.name} {built.signed.manifest.version}{chosen}")
    print(owner.describe(status))
    return EXIT_OK


def _cmd_bundle_rollout(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    status = asyncio.run(
        _with_session(
            lambda s: owner.rollout(s, args.coordinator, key, args.name, args.version, args.percent, args.force)
        )
    )
    print(owner.describe(status))
    return EXIT_OK


def _cmd_bundle_status(args: argparse.Namespace) -> int:
    status = asyncio.run(_with_session(lambda s: owner.bundle_status(s, args.coordinator, args.name)))
    if args.json:
        obj = to_obj(status)
        for version in obj["versions"]:
            version["info_hash"] = version["info_hash"].hex()
        print(json.dumps(obj))
    else:
        print(owner.describe(status))
    return EXIT_OK
