"""Which bundles a peer runs, and how (peer.trust): pure decisions over a real sandbox probe, and
the trusted owners kept in the volunteer's peer.toml."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from overlay.identity import Identity
from peer.budget import Budget, load_budget, save_budget
from peer.ready import ready_bundle
from peer.sandbox import BUNDLE_DIR, Sandbox
from peer.trust import TrustError, Untrusted, WorkloadTrust, load_trusted_owners, owner_key
from workloads import bundle

OWNER = Identity.generate()
STRANGER = Identity.generate()


def ready(tmp_path: Path, signer: Identity, entrypoint: str = '["python3", "-m", "w"]'):
    source = tmp_path / f"src-{signer.public_hex[:6]}"
    source.mkdir()
    (source / "w.py").write_text("print('hi')\n")
    (source / "bundle.toml").write_text(f'name = "w"\nversion = "1"\nentrypoint = {entrypoint}\n')
    built = bundle.build(source, signer, tmp_path / f"dist-{signer.public_hex[:6]}")
    return ready_bundle(built.signed, source)


def test_with_a_sandbox_every_bundle_runs_confined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = Sandbox("bwrap", "prlimit", None)
    trust = WorkloadTrust(box, None, frozenset(), hidden=(tmp_path / "data",))
    monkeypatch.chdir(tmp_path)
    stranger = ready(Path("."), STRANGER)  # a peer started with a relative --data-dir
    confined = trust.confinement(stranger)
    assert confined is not None and confined.sandbox is box
    assert confined.confinement.bundle_root == tmp_path / stranger.root  # bubblewrap runs elsewhere
    assert confined.confinement.hidden == (tmp_path / "data",)
    assert trust.advertised_owners() is None  # any owner's bundle


def test_without_one_only_trusted_owners_run_and_the_rest_are_refused(tmp_path: Path) -> None:
    trust = WorkloadTrust(None, "bwrap (bubblewrap) is not installed", frozenset({OWNER.public_hex}))
    assert trust.confinement(ready(tmp_path, OWNER)) is None  # runs unconfined
    with pytest.raises(
        Untrusted, match=r"bundle w 1: this peer has no sandbox \(bwrap \(bubblewrap\) is not installed\)"
    ):
        trust.confinement(ready(tmp_path, STRANGER))
    assert trust.advertised_owners() == [OWNER.public_key]
    assert (
        trust.summary()
        == "no sandbox: bwrap (bubblewrap) is not installed; running only bundles of 1 owner key(s) you trust"
    )
    nobody = WorkloadTrust(None, "not Linux", frozenset())
    assert nobody.advertised_owners() == [] and "no owner is trusted" in nobody.summary()


def test_a_missing_sandbox_is_said_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="peer.trust"):
        trust = WorkloadTrust.detect([OWNER.public_hex], [tmp_path], program=str(tmp_path / "no-such-bwrap"))
    assert trust.sandbox is None
    assert caplog.messages == [
        f"no sandbox: {tmp_path / 'no-such-bwrap'} (bubblewrap) is not installed; on Debian or "
        "Ubuntu: apt-get install bubblewrap; running only bundles of 1 owner key(s) you trust"
    ]


def test_the_command_seen_inside_names_the_bundle_where_the_sandbox_puts_it(tmp_path: Path) -> None:
    source = tmp_path / "native"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "run").write_text("#!/bin/sh\n")
    (source / "bin" / "run").chmod(0o755)
    (source / "bundle.toml").write_text('name = "n"\nversion = "1"\nentrypoint = ["bin/run", "--x"]\n')
    built = bundle.build(source, OWNER, tmp_path / "dist")
    native = ready_bundle(built.signed, source)
    assert native.sandboxed_argv == [f"{BUNDLE_DIR}/bin/run", "--x"]
    assert native.runtime == ()  # a program of its own needs only the system
    assert native.env == native.sandboxed_env == {}  # and is told nothing of Python
    python = ready(tmp_path, OWNER)
    assert python.sandboxed_env == {"PYTHONPATH": BUNDLE_DIR} and python.runtime


def test_a_bundle_asking_for_more_than_the_volunteer_gives_gets_the_ceiling(tmp_path: Path) -> None:
    greedy = ready(tmp_path, OWNER)
    assert greedy.limits.memory_bytes == 1024 * 1024 * 1024  # its default
    source = tmp_path / "greedy"
    source.mkdir()
    (source / "w.py").write_text("")
    (source / "bundle.toml").write_text(
        'name = "g"\nversion = "1"\nentrypoint = ["python3", "-m", "w"]\n'
        "[limits]\nmemory_mb = 1000000\ncpu_seconds = 99999\nopen_files = 100000\n"
    )
    built = bundle.build(source, OWNER, tmp_path / "gdist")
    limits = ready_bundle(built.signed, source).limits
    assert (limits.memory_bytes, limits.cpu_seconds, limits.open_files) == (2 * 1024**3, 600, 256)


def test_trusted_owners_come_from_peer_toml_and_survive_a_budget_saved_by_the_page(tmp_path: Path) -> None:
    config = tmp_path / "peer.toml"
    assert load_trusted_owners(config) == frozenset()
    config.write_text(f'max_down = "1MB/s"\ntrusted_owners = ["{OWNER.public_hex.upper()}"]\n')
    assert load_trusted_owners(config) == {OWNER.public_hex}
    assert load_budget(config).max_down == 1_000_000
    save_budget(config, Budget(max_up=5000))
    assert load_trusted_owners(config) == {OWNER.public_hex}
    assert load_budget(config) == Budget(max_up=5000)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('trusted_owners = "abc"\n', "trusted_owners must be an array of owner keys"),
        ('trusted_owners = ["abc"]\n', "trusted_owners: 'abc' is not an owner key: give the 64 hex digits"),
        ("trusted_owners = [", "cannot read it"),
    ],
)
def test_bad_trusted_owners_get_one_line(tmp_path: Path, text: str, error: str) -> None:
    config = tmp_path / "peer.toml"
    config.write_text(text)
    with pytest.raises(TrustError) as caught:
        load_trusted_owners(config)
    assert str(caught.value).startswith(f"{config}: ") and error in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(TrustError, match="is not an owner key"):
        owner_key("zz" * 32)


def test_a_bubblewrap_that_cannot_build_a_sandbox_is_named_with_its_reason(tmp_path: Path) -> None:
    # What bubblewrap says where the kernel gives normal users no user namespaces.
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    trust = WorkloadTrust.detect([], [], program=str(fake))
    assert trust.sandbox is None
    assert trust.unavailable == f"{fake} cannot build a sandbox here: bwrap: setting up uid map: Permission denied"
