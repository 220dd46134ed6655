"""A Python bundle runs its own signed code, never the copy of osaas installed beside the peer:
real workload subprocesses, unconfined (as for a trusted owner where no sandbox can be built)
and in the sandbox; the bundle given by a relative path, as a relative --data-dir gives it."""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import pytest

from overlay.identity import Identity
from peer import ready as ready_module
from peer.ready import GUARDED_PACKAGES, ready_bundle
from peer.runner import Sandboxed, WorkloadOutcome, run_workload
from peer.sandbox import BUNDLE_DIR, Confinement, SandboxError, detect
from workloads import bundle, process_api
from workloads.bundle import BundleError
from workloads.process_api import ExitCode, Unit

OWNER = Identity.generate()
WORKLOADS = Path(process_api.__file__).parent

# Says which files ran: its own and the process API it imported.
OWN_CODE = """\
import sys

import workloads.process_api as api

unit = api.Unit.from_frame(api.read_frame_blocking(sys.stdin.buffer))
payload = {"main": __file__, "process_api": api.__file__, "said": unit.payload["say"]}
sys.stdout.buffer.write(api.encode_frame(api.Result(0, payload).to_frame()))
sys.stdout.buffer.flush()
"""


def make_bundle(root: Path, *, module: str, main: str | None, process_api_too: bool = True) -> Path:
    """An unpacked bundle at `root` running `-m module`, whose __main__ is `main` (None: the
    module is left out), with or without its copy of the process API."""
    package = root / "workloads"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if process_api_too:
        shutil.copyfile(WORKLOADS / "process_api.py", package / "process_api.py")
    if main is not None:
        main_file = root.joinpath(*module.split("."), "__main__.py")
        main_file.parent.mkdir(parents=True, exist_ok=True)
        for parent in main_file.parents:
            if parent == root:
                break
            (parent / "__init__.py").touch()
        main_file.write_text(main)
    (root / "bundle.toml").write_text(
        f'name = "own"\nversion = "1.0"\nentrypoint = ["python3", "-u", "-m", "{module}"]\n'
    )
    return root


async def run(root: Path, *, sandboxed: bool, work: Path) -> WorkloadOutcome:
    built = bundle.build(root, OWNER, work / "built")
    ready = ready_bundle(built.signed, root)
    unit = Unit(unit_id=3, payload={"say": "the signed bundle ran"})
    if not sandboxed:
        return await run_workload(ready.argv, unit, None, env=ready.env, workdir_parent=work)
    try:
        sandbox = detect()
    except SandboxError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    confinement = Sandboxed(sandbox, Confinement(ready.root, ready.runtime))
    return await run_workload(ready.sandboxed_argv, unit, None, env=ready.sandboxed_env, sandbox=confinement)


@pytest.mark.parametrize("sandboxed", [False, True], ids=["unconfined", "sandboxed"])
async def test_the_bundles_own_copy_runs_from_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandboxed: bool
) -> None:
    # The module the installed link checker has too: only the bundle's copy may run.
    make_bundle(tmp_path / "cache" / "own", module="workloads.linkcheck", main=OWN_CODE)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()

    outcome = await run(Path("cache/own"), sandboxed=sandboxed, work=Path("work"))

    assert outcome.exit_code is ExitCode.OK, outcome.error or outcome.stderr_tail
    root = BUNDLE_DIR if sandboxed else str(tmp_path / "cache" / "own")
    assert outcome.payload == {
        "main": f"{root}/workloads/linkcheck/__main__.py",
        "process_api": f"{root}/workloads/process_api.py",
        "said": "the signed bundle ran",
    }


@pytest.mark.parametrize("sandboxed", [False, True], ids=["unconfined", "sandboxed"])
@pytest.mark.parametrize(
    ("module", "process_api_too", "missing"),
    [
        # Its entry module is not in the bundle, though osaas installs one of that name.
        ("workloads.linkcheck", True, "workloads.linkcheck"),
        # It imports the process API without shipping it.
        ("mine", False, "workloads.process_api"),
    ],
)
async def test_a_module_the_bundle_lacks_fails_instead_of_running_the_installed_copy(
    tmp_path: Path, sandboxed: bool, module: str, process_api_too: bool, missing: str
) -> None:
    root = make_bundle(
        tmp_path / "bundle",
        module=module,
        main=None if module == "workloads.linkcheck" else OWN_CODE,
        process_api_too=process_api_too,
    )
    outcome = await run(root, sandboxed=sandboxed, work=tmp_path)

    assert outcome.exit_code is ExitCode.FAILED and outcome.payload is None
    assert outcome.error == "workload exited with code 1 without a result"
    assert f"No module named '{missing}'" in outcome.stderr_tail, outcome.stderr_tail


@pytest.mark.parametrize(
    ("entrypoint", "options", "target"),
    [
        (["-m", "w", "--x"], [], ["-m", "w", "--x"]),
        (["-u", "-X", "dev", "-Wignore", "-mw"], ["-u", "-X", "dev", "-Wignore"], ["-m", "w"]),
        (["-O", "run.py", "-m"], ["-O"], ["run.py", "-m"]),
        (["-c", "print(1)", "a"], [], ["-c", "print(1)", "a"]),
    ],
)
def test_an_entrypoints_options_go_to_the_interpreter_and_the_rest_to_the_start(
    entrypoint: list[str], options: list[str], target: list[str]
) -> None:
    assert ready_module._python_arguments(entrypoint, "b-1") == (options, target)


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [
        ([], "without a module (-m), code (-c) or script"),
        (["-u"], "without a module (-m), code (-c) or script"),
        (["-m"], "-m is not followed by what it runs"),
        (["-X"], "-X is not followed by its value"),
        (["-i", "-m", "w"], "option '-i' is not one a peer runs Python with"),
        (["-", "w"], "option '-' is not one a peer runs Python with"),
    ],
)
def test_an_entrypoint_python_cannot_run_as_a_bundle_is_refused(entrypoint: list[str], message: str) -> None:
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ready_module._python_arguments(entrypoint, "b-1")


def test_the_guarded_packages_are_those_osaas_installs() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    included = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(GUARDED_PACKAGES) == sorted(pattern.removesuffix("*") for pattern in included)
