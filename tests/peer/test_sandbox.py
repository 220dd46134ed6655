"""Hostile workloads against the real sandbox (bubblewrap): each attack is a real workload
process, run the way the peer runs a stranger's Python bundle, beside a volunteer's data dir
laid out as a peer keeps it. Every attack must fail with one clear line and change nothing.

The same attacks run unconfined (the control) succeed, so these tests fail on a peer without
the sandbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from peer.platform import ResourceLimits, limits_preexec
from peer.runner import Sandboxed, WorkloadOutcome, run_workload
from peer.sandbox import (
    BUNDLE_DIR,
    STARTED_MARK,
    Confinement,
    Sandbox,
    SandboxError,
    detect,
    python_runtime,
    sandbox_command,
)
from workloads.process_api import ExitCode, Unit

HOSTILE = Path(__file__).parent / "workloads" / "hostile.py"
WORKLOADS = Path(__file__).resolve().parents[2] / "workloads"
ARGV = [sys.executable, "-m", "hostile"]


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    try:
        return detect()
    except SandboxError as exc:
        if os.environ.get("CI"):
            raise  # make test installs bubblewrap: CI must not skip the sandbox
        pytest.skip(str(exc))


def stage_hostile_bundle(root: Path) -> Path:
    """The hostile workload as an unpacked Python bundle: its module and the process API."""
    (root / "workloads").mkdir(parents=True)
    shutil.copyfile(WORKLOADS / "__init__.py", root / "workloads" / "__init__.py")
    shutil.copyfile(WORKLOADS / "process_api.py", root / "workloads" / "process_api.py")
    shutil.copyfile(HOSTILE, root / "hostile.py")
    return root


@pytest.fixture
def volunteer(tmp_path: Path) -> Path:
    """A peer's data dir with what a stranger would want from it."""
    data = tmp_path / "data"
    for relative, content in {
        "identity.key": "11" * 32 + "\n",
        "local-page.token": "secret-page-token\n",
        "outbox/http%3A%2F%2Fc/7.msgpack": "report",
        "peer.toml": 'max_down = "1MB/s"\n',
        "work/osaas-unit-99-abc/scratch": "another unit's file",
        "bundles/unpacked/ff/other.py": "another bundle",
    }.items():
        (data / relative).parent.mkdir(parents=True, exist_ok=True)
        (data / relative).write_text(content)
    return data


def fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def attack(
    name: str,
    target: str,
    *,
    sandbox: Sandbox | None,
    tmp_path: Path,
    volunteer: Path,
    timeout: float = 30.0,
    limits: ResourceLimits = ResourceLimits(),
    mark: str = "",
) -> WorkloadOutcome:
    """Run attack `name` on `target`; `mark` is added to the workload's command line (which
    it ignores) so that the test can find its processes, and only its own."""
    argv = [*ARGV, mark] if mark else ARGV
    bundle = tmp_path / "bundle"
    if not bundle.exists():
        stage_hostile_bundle(bundle)
    unit = Unit(unit_id=5, payload={"attack": name, "target": target})
    if sandbox is None:  # the control: how the peer ran workloads before the sandbox
        return await run_workload(
            argv,
            unit,
            None,
            timeout=timeout,
            limits=limits,
            env={"PYTHONPATH": str(bundle)},
            workdir_parent=volunteer / "work",
        )
    confinement = Confinement(bundle, python_runtime(), hidden=(volunteer,))
    return await run_workload(
        argv,
        unit,
        None,
        timeout=timeout,
        limits=limits,
        env={"PYTHONPATH": BUNDLE_DIR},
        sandbox=Sandboxed(sandbox, confinement),
    )


def loot(outcome: WorkloadOutcome) -> str:
    """What an attack that succeeded took."""
    assert outcome.payload is not None, outcome
    return str(outcome.payload["loot"])


def assert_refused(outcome: WorkloadOutcome, attack_name: str, *errors: str) -> None:
    assert outcome.exit_code is ExitCode.BAD_INPUT, outcome
    assert outcome.error is not None and outcome.error.startswith(f"attack {attack_name} failed: "), outcome.error
    assert any(error in outcome.error for error in errors), outcome.error
    assert "\n" not in outcome.error


# ---- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    [
        "identity.key",
        "local-page.token",
        "outbox/http%3A%2F%2Fc/7.msgpack",
        "peer.toml",
        "work/osaas-unit-99-abc/scratch",
        "bundles/unpacked/ff/other.py",
    ],
)
async def test_the_volunteers_files_cannot_be_read(
    sandbox: Sandbox, tmp_path: Path, volunteer: Path, relative: str
) -> None:
    before = fingerprint(volunteer)
    target = str(volunteer / relative)
    control = await attack("read", target, sandbox=None, tmp_path=tmp_path, volunteer=volunteer)
    assert control.exit_code is ExitCode.OK  # unconfined, the stranger reads it
    outcome = await attack("read", target, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(outcome, "read", "FileNotFoundError")
    upwards = await attack("escape_upwards", target, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(upwards, "escape_upwards", "FileNotFoundError")
    assert fingerprint(volunteer) == before


@pytest.mark.parametrize("target", ["/etc/shadow", "/etc/passwd", "/root/.ssh/id_ed25519", "/home"])
async def test_system_and_root_only_files_are_not_there(
    sandbox: Sandbox, tmp_path: Path, volunteer: Path, target: str
) -> None:
    outcome = await attack("read", target, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(outcome, "read", "FileNotFoundError")


async def test_no_process_of_the_peer_shows_its_environment(
    sandbox: Sandbox, tmp_path: Path, volunteer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OSAAS_VOLUNTEER_SECRET", "hunter2")
    for pid in ("1", "2", "self"):
        outcome = await attack("read", f"/proc/{pid}/environ", sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
        if outcome.exit_code is ExitCode.OK:  # the sandbox's own processes: the workload's environment
            assert b"hunter2" not in bytes.fromhex(loot(outcome))
        else:
            assert_refused(outcome, "read", "PermissionError", "FileNotFoundError")


async def test_the_home_dir_and_the_data_dir_cannot_be_listed(
    sandbox: Sandbox, tmp_path: Path, volunteer: Path
) -> None:
    data = await attack("listing", str(volunteer), sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(data, "listing", "FileNotFoundError")
    home = Path.home()
    outcome = await attack("listing", str(home), sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    # Only the way to a runtime the peer's interpreter lives under (e.g. ~/.pyenv) can be there.
    leading = {
        path.relative_to(home).parts[0] for path in python_runtime() if path.is_relative_to(home) and path != home
    }
    if outcome.exit_code is ExitCode.OK:
        seen = set(filter(None, loot(outcome).split(",")))
        assert seen <= leading, seen
        assert len(os.listdir(home)) > len(seen)  # the real home has more: it is not what was seen
    else:
        assert_refused(outcome, "listing", "FileNotFoundError")


async def test_writes_land_nowhere_outside_the_units_tmp(sandbox: Sandbox, tmp_path: Path, volunteer: Path) -> None:
    host_file = volunteer / "planted.txt"
    outcome = await attack("write", str(host_file), sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(outcome, "write", "FileNotFoundError")
    for target, error in [
        (f"{BUNDLE_DIR}/hostile.py", "Read-only file system"),
        ("/usr/planted", "Read-only file system"),
    ]:
        outcome = await attack("write", target, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
        assert_refused(outcome, "write", error, "PermissionError")
    assert not host_file.exists()
    assert (tmp_path / "bundle" / "hostile.py").read_bytes() == HOSTILE.read_bytes()
    assert not Path("/usr/planted").exists()
    # Its /tmp is its own: what it writes there is not the machine's /tmp.
    mark = f"/tmp/osaas-sandbox-{uuid.uuid4().hex}"
    outcome = await attack("write", mark, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert outcome.exit_code is ExitCode.OK
    assert not Path(mark).exists()


async def test_filling_its_tmp_stops_at_the_limit(sandbox: Sandbox, tmp_path: Path, volunteer: Path) -> None:
    limits = ResourceLimits(tmp_bytes=8 * 1024 * 1024)
    outcome = await attack("fill", "/tmp/big", sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer, limits=limits)
    assert_refused(outcome, "fill", "No space left on device", "File too large")


# ---- network ------------------------------------------------------------------------------


@pytest.fixture
async def loopback_server() -> AsyncIterator[str]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nthe peer's page")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


async def test_loopback_and_dns_are_out_of_reach(
    sandbox: Sandbox, tmp_path: Path, volunteer: Path, loopback_server: str
) -> None:
    control = await attack("connect", loopback_server, sandbox=None, tmp_path=tmp_path, volunteer=volunteer)
    assert control.exit_code is ExitCode.OK and "the peer's page" in loot(control)
    outcome = await attack("connect", loopback_server, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(outcome, "connect", "ConnectionRefusedError")
    # Only now that the sandbox is known to have no way out: a name lookup has nowhere to go.
    outcome = await attack(
        "resolve", "osaas-sandbox-test.invalid", sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer
    )
    assert_refused(outcome, "resolve", "gaierror")


def _netns_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    return None


@pytest.fixture
def namespace_server() -> Iterator[str]:
    """A server in a network namespace of the test's own, reachable from this host over a veth
    pair (10.233.x.0/30): an address on the volunteer's LAN, as a workload would see it."""
    reason = _netns_reason()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    name, outside, inside = f"osaas-sb-{tag}", f"osb{tag}", f"osb{tag}i"
    net = f"10.233.{int(tag[:2], 16)}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    server = None
    try:
        ip("netns", "add", name)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", name)
        ip("addr", "add", f"{net}.1/30", "dev", outside)
        ip("link", "set", outside, "up")
        ip("-n", name, "addr", "add", f"{net}.2/30", "dev", inside)
        ip("-n", name, "link", "set", inside, "up")
        ip("-n", name, "link", "set", "lo", "up")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                name,
                sys.executable,
                "-c",
                "import socket,sys\ns=socket.create_server((sys.argv[1], 8080))\nprint('ready', flush=True)\n"
                "while True:\n c,_=s.accept(); c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nlan secret'); c.close()",
                f"{net}.2",
            ],
            stdout=subprocess.PIPE,
        )
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        yield f"{net}.2:8080"
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


async def test_an_address_on_another_host_is_out_of_reach(
    sandbox: Sandbox, tmp_path: Path, volunteer: Path, namespace_server: str
) -> None:
    host, port = namespace_server.split(":")
    with socket.create_connection((host, int(port)), timeout=3) as conn:  # this host reaches it
        assert b"lan secret" in conn.recv(100)
    outcome = await attack("connect", namespace_server, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(outcome, "connect", "Network is unreachable")


# ---- processes and memory ------------------------------------------------------------------


def processes_marked(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def test_a_process_count_limit_holds(sandbox: Sandbox, tmp_path: Path, volunteer: Path) -> None:
    limits = ResourceLimits(processes=16)
    outcome = await attack("fork", "200", sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer, limits=limits)
    assert_refused(outcome, "fork", "Resource temporarily unavailable")


async def test_a_fork_bomb_dies_with_its_unit(sandbox: Sandbox, tmp_path: Path, volunteer: Path) -> None:
    limits = ResourceLimits(processes=16)
    mark = f"osaas-bomb-{uuid.uuid4().hex}"
    outcome = await attack(
        "fork_bomb", "", sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer, limits=limits, timeout=3, mark=mark
    )
    assert (outcome.exit_code, outcome.error) == (ExitCode.FAILED, "workload did not finish within 3 s and was killed")
    await asyncio.sleep(0.2)
    assert processes_marked(mark) == []


async def test_ten_gigabytes_cannot_be_allocated(sandbox: Sandbox, tmp_path: Path, volunteer: Path) -> None:
    outcome = await attack("allocate", str(10 * 1024**3), sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(outcome, "allocate", "MemoryError")


async def test_an_orphan_in_its_own_session_dies_with_the_unit(
    sandbox: Sandbox, tmp_path: Path, volunteer: Path
) -> None:
    mark = f"osaas-orphan-{uuid.uuid4().hex}"
    outcome = await attack("orphan", mark, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(outcome, "orphan", "orphan left behind")
    await asyncio.sleep(0.2)
    assert processes_marked(mark) == []


async def test_open_files_stop_at_the_limit(sandbox: Sandbox, tmp_path: Path, volunteer: Path) -> None:
    limits = ResourceLimits(open_files=32)
    outcome = await attack("open_files", "1000", sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer, limits=limits)
    assert_refused(outcome, "open_files", "Too many open files")


_PEER = """
import asyncio, sys
from pathlib import Path
from peer.runner import Sandboxed, run_workload
from peer.sandbox import BUNDLE_DIR, Confinement, detect, python_runtime
from workloads.process_api import Unit

confined = Sandboxed(detect(), Confinement(Path(sys.argv[1]), python_runtime()))
print("running", flush=True)
asyncio.run(run_workload([sys.executable, "-m", "hostile"], Unit(1, {"attack": "linger", "target": sys.argv[2]}),
                         None, env={"PYTHONPATH": BUNDLE_DIR}, sandbox=confined))
"""


async def test_a_unit_dies_with_its_peer_killed_mid_unit(sandbox: Sandbox, tmp_path: Path) -> None:
    bundle = stage_hostile_bundle(tmp_path / "bundle")
    mark = f"osaas-linger-{uuid.uuid4().hex}"
    peer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PEER, str(bundle), mark, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        assert peer.stdout is not None and await peer.stdout.readline() == b"running\n"
        for _ in range(100):  # the workload is up, lingering
            if processes_marked(mark):
                break
            await asyncio.sleep(0.05)
        assert processes_marked(mark)
        peer.kill()  # kill -9: the peer has no chance to clean up
        await peer.wait()
        for _ in range(100):
            if not processes_marked(mark):
                break
            await asyncio.sleep(0.05)
        assert processes_marked(mark) == []
    finally:
        if peer.returncode is None:
            peer.kill()
            await peer.wait()


async def test_the_peer_cannot_be_signalled_or_traced(sandbox: Sandbox, tmp_path: Path, volunteer: Path) -> None:
    me = str(os.getpid())
    killed = await attack("signal_process", me, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(killed, "signal_process", "ProcessLookupError")
    traced = await attack("ptrace", me, sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert_refused(traced, "ptrace", "No such process")


async def test_the_runtime_it_needs_is_all_it_sees(sandbox: Sandbox, tmp_path: Path, volunteer: Path) -> None:
    outcome = await attack("listing", "/", sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert outcome.exit_code is ExitCode.OK
    top = {path.parts[1] for path in python_runtime()}
    allowed = {"bundle", "tmp", "proc", "dev", "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"} | top
    assert set(loot(outcome).split(",")) <= allowed
    etc = await attack("listing", "/etc", sandbox=sandbox, tmp_path=tmp_path, volunteer=volunteer)
    assert etc.exit_code is ExitCode.OK and set(loot(etc).split(",")) <= {"ld.so.cache"}


# ---- the command line (pure) ----------------------------------------------------------------


def test_a_runtime_that_holds_the_data_dir_gets_it_covered(tmp_path: Path) -> None:
    box = Sandbox("bwrap", "prlimit", None)
    runtime = tmp_path / "venv"
    data = runtime / "var" / "peer"
    command = sandbox_command(
        box,
        ["x"],
        Confinement(tmp_path / "b", (runtime,), hidden=(data, tmp_path / "elsewhere")),
        ResourceLimits(),
        uid=None,
    )
    covered = [command[i + 1] for i, arg in enumerate(command) if arg == "--tmpfs"]
    assert covered == ["/tmp", str(data)]
    assert str(tmp_path / "elsewhere") not in command  # not under any bound path: nothing to cover
    assert command[-3:] == ["--nproc=32:32", "--", "x"]
    # The limits are set by prlimit, inside the built sandbox, after the shell wrote the mark.
    shell = command.index("/bin/sh")
    assert command[shell + 1] == "-c" and command[shell + 4] == "prlimit"
    assert "--as=1073741824:1073741824" in command[shell:] and "--nofile=64:64" in command[shell:]
    assert "--disable-userns" in command and "--cap-add" not in command


def test_as_root_each_unit_runs_as_a_uid_of_its_own_without_capabilities(tmp_path: Path) -> None:
    box = Sandbox("bwrap", "prlimit", "setpriv")
    command = sandbox_command(box, ["x"], Confinement(tmp_path), ResourceLimits(processes=9), uid=2130706500)
    tail = command[command.index("prlimit") :]
    assert tail == [
        "prlimit",
        "--cpu=120:125",
        "--as=1073741824:1073741824",
        "--nofile=64:64",
        "--fsize=67108864:67108864",
        "--nproc=9:9",
        "--",
        "setpriv",
        "--reuid=2130706500",
        "--regid=2130706500",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        "x",
    ]


_AS_A_USER = """
import os, socket, time
forked = 0
try:
    for _ in range(100):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        forked += 1
except OSError as exc:
    print("fork stopped:", exc.strerror)
try:
    socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=2)
    print("connected")
except OSError as exc:
    print("connect:", exc.strerror)
print("home:", os.path.exists(os.environ["SECRET"]))
print("uid:", os.getuid())
"""


def test_a_volunteer_running_as_a_normal_user_gets_the_same_sandbox(tmp_path: Path, sandbox: Sandbox) -> None:
    """The path most volunteers take: bubblewrap as a normal user, in a user namespace of its
    own, where the process count is the sandbox's own. As root the test drops to `nobody`."""
    python = "/usr/bin/python3"
    if not Path(python).exists():
        pytest.skip("needs the system's /usr/bin/python3 (a runtime a normal user can read)")
    bundle = Path(tempfile.mkdtemp(prefix="osaas-user-bundle-"))  # readable by anyone, unlike tmp_path
    secret = tmp_path / "secret"
    secret.write_text("volunteer's")
    try:
        bundle.chmod(0o755)
        (bundle / "w.py").write_text(_AS_A_USER)
        (bundle / "w.py").chmod(0o644)
        user_box = Sandbox(sandbox.bwrap, sandbox.prlimit, None, sandbox.shell)
        command = sandbox_command(
            user_box, [python, f"{BUNDLE_DIR}/w.py"], Confinement(bundle), ResourceLimits(processes=10), uid=None
        )
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            apply_limits = limits_preexec(ResourceLimits())

            def as_a_user() -> None:
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                if apply_limits is not None:
                    apply_limits()

            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=60,
                preexec_fn=as_a_user,
                env={"PATH": "/usr/bin:/bin", "PORT": str(port), "SECRET": str(secret)},
            )
    finally:
        shutil.rmtree(bundle)
    if done.returncode != 0 and "namespace" in done.stderr:
        pytest.skip(f"this kernel gives normal users no user namespaces: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    mark, *lines = done.stdout.splitlines()
    assert mark == STARTED_MARK.decode().strip()  # the sandbox was built, then the workload ran
    assert lines[0] == "fork stopped: Resource temporarily unavailable"
    assert lines[1] in {"connect: Connection refused", "connect: Network is unreachable"}
    assert lines[2:] == ["home: False", f"uid: {os.geteuid() if os.geteuid() else 65534}"]


async def test_a_runtime_under_tmp_is_bound_inside_the_units_own_tmp(sandbox: Sandbox, tmp_path: Path) -> None:
    """A peer whose Python lives under /tmp (a venv in a clone there, as in CI) still runs its
    bundles: the unit's tmpfs must not cover the runtime."""
    runtime = Path(tempfile.mkdtemp(prefix="osaas-runtime-", dir="/tmp"))
    try:
        runtime.chmod(0o755)
        (runtime / "lib.txt").write_text("the runtime")
        (runtime / "lib.txt").chmod(0o644)
        bundle = stage_hostile_bundle(tmp_path / "bundle")
        confinement = Confinement(bundle, (*python_runtime(), runtime))
        outcome = await run_workload(
            ARGV,
            Unit(1, {"attack": "read", "target": str(runtime / "lib.txt")}),
            None,
            env={"PYTHONPATH": BUNDLE_DIR},
            sandbox=Sandboxed(sandbox, confinement),
        )
        assert outcome.exit_code is ExitCode.OK, outcome
        assert bytes.fromhex(loot(outcome)) == b"the runtime"
        # ...and the unit can still write its own tmp around it.
        mark = f"/tmp/unit-{uuid.uuid4().hex}"
        wrote = await run_workload(
            ARGV,
            Unit(2, {"attack": "write", "target": mark}),
            None,
            env={"PYTHONPATH": BUNDLE_DIR},
            sandbox=Sandboxed(sandbox, confinement),
        )
        assert wrote.exit_code is ExitCode.OK, wrote
    finally:
        shutil.rmtree(runtime)
