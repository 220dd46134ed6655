"""`osaas coordinator grant add | remove | list`, `limits set | show` and `audit`: the
operator's say over who may do what on its coordinator. They work on the coordinator's
database directly, on its host (which is what makes them the operator's); each change is in
the audit log, with "operator" as who."""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import TYPE_CHECKING, TypeVar

from coordinator.store import OPERATOR
from osaas.commands._shared import EXIT_OK, _non_negative, _public_key
from osaas.commands.coordinator_store import add_db_argument, with_store

if TYPE_CHECKING:
    from coordinator.sql import SqlStore

T = TypeVar("T")
ROLES = ("operator", "owner", "viewer")


def add_commands(coordinator: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    grants = coordinator.add_parser("grant", help="who may do what: roles of keys").add_subparsers(metavar="ACTION")
    add = grants.add_parser("add", help="give a key a role (owner: jobs and bundles; viewer: reads; operator: all)")
    add.add_argument("name", metavar="NAME", help="who holds the key, for people")
    add.add_argument(
        "public_key",
        type=_public_key,
        metavar="PUBKEY",
        help="the key (64 hex digits, as `osaas bundle keygen` prints)",
    )
    add.add_argument("--role", choices=ROLES, default="owner")
    add_db_argument(add)
    add.set_defaults(run=cmd_grant_add)
    remove = grants.add_parser("remove", help="take a key's role away")
    remove.add_argument("public_key", type=_public_key, metavar="PUBKEY")
    add_db_argument(remove)
    remove.set_defaults(run=_cmd_grant_remove)
    listing = grants.add_parser("list", help="every key with a role")
    add_db_argument(listing)
    listing.set_defaults(run=_cmd_grant_list)

    limits = coordinator.add_parser("limits", help="what an owner key may ask of the volunteers").add_subparsers(
        metavar="ACTION"
    )
    set_limits = limits.add_parser("set", help="set a key's limits (those not given stay as they are)")
    set_limits.add_argument("public_key", type=_public_key, metavar="PUBKEY")
    for name, what in (
        ("jobs-at-once", "running jobs at once"),
        ("urls-per-job", "URLs one job may check"),
        ("urls-per-day", "URLs the key's jobs may add per UTC day"),
        ("bundle-bytes", "the largest bundle it may publish"),
    ):
        set_limits.add_argument(f"--{name}", type=_non_negative, metavar="N", help=what)
    add_db_argument(set_limits)
    set_limits.set_defaults(run=_cmd_limits_set)
    show = limits.add_parser("show", help="a key's limits")
    show.add_argument("public_key", type=_public_key, metavar="PUBKEY")
    add_db_argument(show)
    show.set_defaults(run=_cmd_limits_show)

    audit = coordinator.add_parser("audit", help="who changed what, when (newest last)")
    audit.add_argument("--last", type=_non_negative, default=50, metavar="N")
    add_db_argument(audit)
    audit.set_defaults(run=_cmd_audit)


def cmd_grant_add(args: argparse.Namespace) -> int:
    key = args.public_key
    changed = with_store(
        args.db, lambda store: store.grant(args.name, key, args.role, OPERATOR, time.time()), create=True
    )
    print(f"{args.name} ({key[:16]}…) is {'now' if changed else 'already'} {args.role} on this coordinator")
    return EXIT_OK


def _cmd_grant_remove(args: argparse.Namespace) -> int:
    key = args.public_key
    with_store(args.db, lambda store: store.revoke(key, OPERATOR, time.time()))
    print(f"{key[:16]}… has no role on this coordinator any more")
    return EXIT_OK


def _cmd_grant_list(args: argparse.Namespace) -> int:
    for grant in with_store(args.db, lambda store: store.grants()):
        print(f"{grant.role:9} {grant.name:24} {grant.public_key}")
    return EXIT_OK


def _cmd_limits_set(args: argparse.Namespace) -> int:
    key = args.public_key
    given = {
        field: value
        for field in ("jobs_at_once", "urls_per_job", "urls_per_day", "bundle_bytes")
        if (value := getattr(args, field)) is not None
    }

    async def update(store: SqlStore) -> None:
        limits = dataclasses.replace(await store.limits_of(key), **given)
        await store.set_limits(key, limits, OPERATOR, time.time())

    with_store(args.db, update, create=True)
    return _cmd_limits_show(args)


def _cmd_limits_show(args: argparse.Namespace) -> int:
    key = args.public_key
    limits = with_store(args.db, lambda store: store.limits_of(key))
    print(
        f"{key[:16]}…: {limits.jobs_at_once} jobs at once, {limits.urls_per_job} URLs per job,"
        f" {limits.urls_per_day} URLs per day, bundles up to {limits.bundle_bytes} bytes"
    )
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace) -> int:
    for entry in with_store(args.db, lambda store: store.audit_log(args.last)):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.at))
        actor = entry.actor if entry.actor == OPERATOR else f"{entry.actor[:16]}…"
        print(
            f"{when} UTC  {actor:17} {entry.action:8} {entry.subject}" + (f"  ({entry.detail})" if entry.detail else "")
        )
    return EXIT_OK
