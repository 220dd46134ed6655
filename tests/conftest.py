"""What every test shares: an owner key of its own in a config dir of its own.

The `osaas` commands the tests run (and the in-process owner calls in tests/processes.py) sign
with the owner's default key, in `$XDG_CONFIG_HOME/osaas/owner.key`. Each test process gets a
fresh one in a temp dir, never the machine's own; coordinators started by the tests name it
as an operator key (`--operator-key`), so jobs are submitted and read as by the operator.
Tests of roles make keys of their own."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlay.identity import Identity
from tests import postgres

_CONFIG = Path(tempfile.mkdtemp(prefix="osaas-test-config-"))
os.environ["XDG_CONFIG_HOME"] = str(_CONFIG)
Identity.load_or_create(_CONFIG / "osaas" / "owner.key")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[postgres.Cluster]:
    """One PostgreSQL cluster per test process, shared by its tests (a database each)."""
    reason = postgres.why_not()
    if reason is not None:
        if os.environ.get("CI"):
            raise AssertionError(f"make test installs PostgreSQL: {reason}")
        pytest.skip(reason)
    with postgres.cluster() as cluster:
        yield cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whole-system tests (tests/test_*.py: real processes, tens of seconds each) first, the
    rest after them in their order: each worker starts on a long one, and the many short ones
    fill the time the long ones spend waiting, instead of the long ones running last, alone."""
    items.sort(key=lambda item: item.path.parent.name != "tests")
