"""The one error tree (overlay.errors): every error of ours that means bad input or a
misbehaving other side derives from OsaasError and says what it becomes at each edge."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from coordinator.rate_limits import RateLimited
from coordinator.store import Conflict, InvalidInput, NotFound, NotOwner, StaleLease, UnknownOwner, UnknownPeer
from overlay.errors import OsaasError
from overlay.http import Unavailable
from overlay.wire import WireError
from workloads.bundle import BundleError

PACKAGES = ("overlay", "workloads", "coordinator", "peer", "osaas", "screensaver")
# Shipped inside the bundle a sandbox runs (imports nothing of ours), or private control flow.
OUTSIDE = {
    "workloads.process_api.ProtocolError",
    "workloads.linkcheck.payload.BadPayload",
    "workloads.probe.measure.BadPayload",
    "peer.runner._Fault",
    "peer.runner._NotBuilt",
    "peer.egress._PolicyRefusal",
}


def our_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name:
                    found[f"{info.name}.{name}"] = value
    return found


def test_every_error_of_ours_is_in_the_tree() -> None:
    found = our_exceptions()
    assert len(found) > 20  # the packages were walked
    stray = sorted(name for name, cls in found.items() if not issubclass(cls, OsaasError) and name not in OUTSIDE)
    assert stray == []


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (InvalidInput("x"), 400, "invalid_input"),
        (UnknownPeer("x"), 403, "unknown_peer"),
        (UnknownOwner("x"), 403, "unknown_owner"),
        (NotOwner("x"), 403, "not_owner"),
        (NotFound("x"), 404, "not_found"),
        (StaleLease("x"), 409, "stale_lease"),
        (Conflict("x"), 409, "conflict"),
        (BundleError("x"), 400, "invalid_bundle"),
        (WireError("x"), 400, "bad_request"),
        (WireError("x", "bad_signature"), 401, "bad_signature"),
        (WireError("x", "unsigned"), 401, "unsigned"),
        (Unavailable("x"), 503, "unavailable"),
        (RateLimited("x", 3), 429, "rate_limited"),
    ],
)
def test_each_kind_says_what_it_becomes_at_the_http_edge(error: OsaasError, status: int, code: str) -> None:
    assert (error.http_status, error.code, error.exit_code) == (status, code, 2)
