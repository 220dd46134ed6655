"""Who may do what on a coordinator: three roles and one table. Pure.

    operator  runs the coordinator: sees and changes everything (its own key has the role)
    owner     submits jobs and publishes bundles; sees and changes only its own
    viewer    reads every job; changes nothing

A key has at most one role, granted by the operator (`osaas coordinator grant add`). Peers
need no role: anyone may volunteer. The API asks `refusal` before each owner request; the
refusal is one line naming the role needed.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from overlay.errors import OsaasError


class Role(enum.StrEnum):
    OPERATOR = "operator"
    OWNER = "owner"
    VIEWER = "viewer"


class Action(enum.StrEnum):
    """What an owner request does, in words a refusal can use."""

    SUBMIT_JOB = "submit jobs"
    CANCEL_JOB = "cancel a job"
    DELETE_JOB = "delete a job"
    READ_JOB = "read a job"
    LIST_JOBS = "list jobs"
    PUBLISH_BUNDLE = "publish bundles"
    ROLL_OUT = "roll out a bundle"


class Rule(NamedTuple):
    own: frozenset[Role]  # roles that may do it to what is theirs
    anything: frozenset[Role]  # roles that may do it to anyone's


_ALL = frozenset(Role)
_WRITERS = frozenset({Role.OPERATOR, Role.OWNER})
_READERS = frozenset({Role.OPERATOR, Role.VIEWER})
RULES: dict[Action, Rule] = {
    Action.SUBMIT_JOB: Rule(_WRITERS, _WRITERS),  # a new job is its submitter's own
    Action.CANCEL_JOB: Rule(_WRITERS, frozenset({Role.OPERATOR})),
    Action.DELETE_JOB: Rule(_WRITERS, frozenset({Role.OPERATOR})),
    Action.READ_JOB: Rule(_ALL, _READERS),
    Action.LIST_JOBS: Rule(_ALL, _READERS),  # an owner's list holds its own jobs only
    Action.PUBLISH_BUNDLE: Rule(_WRITERS, _WRITERS),  # the manifest's signer must be the key
    Action.ROLL_OUT: Rule(_WRITERS, _WRITERS),  # and only the name's owner key (the store's rule)
}


class Refusal(NamedTuple):
    status: int
    code: str
    message: str


class AccessRefused(OsaasError):
    """A signed request whose key's role may not do what it asks (403)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.http_status = refusal.status
        self.code = refusal.code


def sees_everything(role: Role | None) -> bool:
    """May this role read every job (not only its own)?"""
    return role in RULES[Action.READ_JOB].anything


def refusal(key: str, role: Role | None, action: Action, own: bool = True) -> Refusal | None:
    """Why the key `key` (hex) with `role` may not `action` (on something of its own, or of
    another's), or None when it may."""
    rule = RULES[action]
    if role is None:
        return Refusal(
            403,
            "not_admitted",
            f"key {key[:16]}… is not admitted on this coordinator; to {action.value} it needs a role,"
            f" which the operator grants: osaas coordinator grant add NAME {key[:16]}… --role owner",
        )
    if role in (rule.own if own else rule.anything):
        return None
    if not own and role in rule.own:
        return Refusal(403, "not_yours", f"only its owner or an operator may {action.value}: it is not yours")
    needed = " or ".join(sorted(r.value for r in rule.own))
    article = "a" if role is Role.VIEWER else "an"
    return Refusal(
        403, "role_needed", f"to {action.value} needs the {needed} role; key {key[:16]}… is {article} {role.value}"
    )
