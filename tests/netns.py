"""Hosts of a test's own: network namespaces on one bridge, each with an IPv4 and an IPv6
address, optionally shaped links, and the interface's byte counters.

`hosts(n)` is a context manager that creates the namespaces (a hub namespace holding the
bridge, and one namespace per host joined to it by a veth pair) and removes them on exit.
Host i (from 0) has 10.231.0.(i+1)/24 and fd31:5a::(i+1)/64. Addresses live inside the test's
namespaces only, so tests running side by side never meet. `netns_reason()` says why the
machine cannot do this (not root, no `ip`), for pytest.skip.

`sample_while` reads hosts' counters every SAMPLE_EVERY while their traffic flows.

Used by tests (tests/test_netns*.py) and by bench/wire_budget.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.wire_windows import Sample

REPO = Path(__file__).resolve().parents[1]
SUBNET4 = "10.231.0"
SUBNET6 = "fd31:5a:"
INTERFACE = "eth0"
SAMPLE_EVERY = 0.25  # seconds between two readings of the interface counters


def netns_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespace test needs root"
    if shutil.which("ip") is None:
        return "network namespace test needs iproute2 (`ip`)"
    probe = f"osaas-probe-{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "`ip netns add` is not permitted here"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True, slots=True)
class Host:
    """One namespace on the bridge."""

    namespace: str
    index: int

    @property
    def ipv4(self) -> str:
        return f"{SUBNET4}.{self.index + 1}"

    @property
    def ipv6(self) -> str:
        return f"{SUBNET6}:{self.index + 1}"

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *args]

    def python(self, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `python ARGS` inside the namespace, output to `log`."""
        with open(log, "ab") as out:
            return subprocess.Popen(
                self.command(sys.executable, *args),
                cwd=REPO,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def osaas(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `osaas ARGS` inside the namespace to its end."""
        return subprocess.run(
            self.command(sys.executable, "-m", "osaas", *args),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def counters(self) -> tuple[int, int]:
        """Bytes received and sent on the host's interface so far, as the kernel counts them
        (every frame: headers, retransmissions and acknowledgements included)."""
        read = subprocess.run(
            self.command(
                "cat",
                f"/sys/class/net/{INTERFACE}/statistics/rx_bytes",
                f"/sys/class/net/{INTERFACE}/statistics/tx_bytes",
            ),
            capture_output=True,
            text=True,
            check=True,
        )
        rx, tx = read.stdout.split()
        return int(rx), int(tx)

    def shape(self, *, rate_kbit: int, down_kbit: int | None = None) -> None:
        """Limit what the host sends to `rate_kbit` kbit/s (a token bucket filter on its
        interface; this kernel has no netem, so no added delay). Shape every host to shape
        both directions of each link. `down_kbit` also limits what the host receives from all
        others together (a filter on the bridge's end of its link), as an access link would."""
        _ip_tc(self.namespace, "qdisc", "replace", "dev", INTERFACE, "root", *_tbf(rate_kbit))
        if down_kbit is not None:
            tag = self.namespace.rsplit("-", 1)[1]
            _ip_tc(_hub(tag), "qdisc", "replace", "dev", _bridge_end(self.index, tag), "root", *_tbf(down_kbit))


def _hub(tag: str) -> str:
    return f"osaas-hub-{tag}"


def _bridge_end(index: int, tag: str) -> str:
    """The hub's end of host `index`'s veth pair, on the bridge."""
    return f"b{index}{tag}"


def _bridge_without_netfilter(hub: str) -> None:
    """Frames crossing the hub's bridge skip iptables, as they would between real hosts: with
    br_netfilter loaded (it is, wherever a container runtime is), each namespace's bridge hands
    every frame to its netfilter hooks by default, which took about a tenth of the machine's
    CPU in bench/net_swarm at 32 hosts (perf: br_nf_pre_routing, nf_hook_slow). Without the
    module the settings do not exist and there is nothing to turn off."""
    for family in ("iptables", "ip6tables", "arptables"):
        setting = Path(f"/proc/sys/net/bridge/bridge-nf-call-{family}")
        subprocess.run(
            ["ip", "netns", "exec", hub, "sh", "-c", f"[ ! -e {setting} ] || echo 0 > {setting}"],
            capture_output=True,
        )


def _tbf(rate_kbit: int) -> list[str]:
    burst = max(rate_kbit * 1000 // 8 // 50, 3200)  # 20 ms of the rate, at least two frames
    return ["tbf", "rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", "100ms"]


def _ip_tc(namespace: str, *args: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", namespace, "tc", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)}: {done.stderr.strip()}")


@contextlib.contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    """`count` namespaces on one bridge, removed on exit."""
    tag = uuid.uuid4().hex[:6]
    hub = _hub(tag)
    made: list[Host] = []
    try:
        _ip("netns", "add", hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        _bridge_without_netfilter(hub)
        for i in range(count):
            host = Host(f"osaas-h{i}-{tag}", i)
            _ip("netns", "add", host.namespace)
            made.append(host)
            _ip(
                "link", "add", f"v{i}{tag}", "netns", host.namespace, "type", "veth",
                "peer", "name", _bridge_end(i, tag), "netns", hub,
            )  # fmt: skip
            _ip("-n", hub, "link", "set", _bridge_end(i, tag), "master", "br0", "up")
            _ip("-n", host.namespace, "link", "set", f"v{i}{tag}", "name", INTERFACE)
            _ip("-n", host.namespace, "addr", "add", f"{host.ipv4}/24", "dev", INTERFACE)
            # nodad: the address is usable at once instead of after duplicate detection.
            _ip("-n", host.namespace, "addr", "add", f"{host.ipv6}/64", "dev", INTERFACE, "nodad")
            _ip("-n", host.namespace, "link", "set", INTERFACE, "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
        subprocess.run(["ip", "netns", "del", hub], capture_output=True)


_SAMPLER = """
import sys, time
every = float(sys.argv[1])
paths = [f"/sys/class/net/{sys.argv[2]}/statistics/{name}_bytes" for name in ("rx", "tx")]
while True:
    counts = []
    for path in paths:
        with open(path) as f:
            counts.append(f.read().strip())
    print(time.monotonic(), *counts, flush=True)
    time.sleep(every)
"""


class _Sampler:
    """A process inside one host that reads its interface's counters and stamps each reading
    with the moment it was taken (CLOCK_MONOTONIC is one clock for every namespace), so a
    loaded machine delays the samples, never skews them."""

    def __init__(self, host: Host) -> None:
        self.samples: list[Sample] = []
        self._process = subprocess.Popen(
            host.command(sys.executable, "-c", _SAMPLER, str(SAMPLE_EVERY), INTERFACE),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            at, rx, tx = line.split()
            self.samples.append(Sample(float(at), int(rx), int(tx)))

    def close(self) -> None:
        self._process.kill()
        self._process.wait()
        self._reader.join(timeout=5)


def sample_while(hosts: list[Host], processes: list[subprocess.Popen[bytes]], seconds: float) -> list[list[Sample]]:
    """Each host's (time, rx bytes, tx bytes) every SAMPLE_EVERY, from just before its traffic
    began until `seconds` after that or until `processes` have all ended."""
    samplers = [_Sampler(host) for host in hosts]
    try:
        begun: float | None = None
        while True:
            time.sleep(SAMPLE_EVERY)
            series = [list(sampler.samples) for sampler in samplers]
            if any(len(samples) < 2 for samples in series):
                continue
            if begun is None:
                begun = _traffic_began(series)
            ended = all(p.poll() is not None for p in processes)
            if begun is None and ended:
                raise RuntimeError("the traffic never began")
            if begun is not None and (min(s[-1].at for s in series) - begun >= seconds or ended):
                # windows start at the last quiet sample and end `seconds` after the traffic began
                return [
                    [x for x in samples if begun - 2 * SAMPLE_EVERY <= x.at <= begun + seconds] for samples in series
                ]
    finally:
        for sampler in samplers:
            sampler.close()


def _traffic_began(series: list[list[Sample]]) -> float | None:
    """When the first host to move more than 64 kB since its first sample began: the moment of
    its sample before."""
    began = [
        before.at
        for samples in series
        for before, sample in zip(samples, samples[1:], strict=False)
        if sample.rx - samples[0].rx + sample.tx - samples[0].tx > 64_000
    ]
    return min(began, default=None)


@contextlib.contextmanager
def hosts_or_skip(count: int) -> Iterator[list[Host]]:
    """`hosts(count)` for a test, which is skipped with the reason where they cannot be made."""
    import pytest  # the harness serves benches too, which run without pytest

    reason = netns_reason()
    if reason:
        pytest.skip(reason)
    with hosts(count) as made:
        yield made


def wait_for(predicate: Callable[[], bool], what: str, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_vantage_network(
    site_host: Host,
    coordinator_host: Host,
    peer_hosts: list[Host],
    workdir: Path,
    operator: str,
    processes: list[subprocess.Popen[bytes]],
) -> str:
    """The files of `workdir`/site served on `site_host`:8081, a coordinator on
    `coordinator_host`:8700 (operator key `operator`) that counts each address as a network of
    its own (`--vantage-prefix 32`), and a volunteer on each of `peer_hosts`, each started into
    `processes` (the caller stops them); the coordinator's URL, once it answers."""
    coordinator = f"http://{coordinator_host.ipv4}:8700"
    processes.append(
        site_host.python(
            "-m", "http.server", "8081", "--bind", site_host.ipv4, "--directory", str(workdir / "site"),
            log=workdir / "site.log",
        )
    )  # fmt: skip
    processes.append(
        coordinator_host.python(
            "-m", "osaas", "coordinator", "serve",
            "--listen", f"{coordinator_host.ipv4}:8700",
            "--db", str(workdir / "c.sqlite"),
            "--operator-key", operator,
            "--vantage-prefix", "32",
            "--host-min-delay", "0",
            log=workdir / "coordinator.log",
        )
    )  # fmt: skip
    listed = lambda: site_host.osaas("job", "list", "--coordinator", coordinator).returncode == 0  # noqa: E731
    wait_for(listed, f"the coordinator at {coordinator}", 60)
    for i, host in enumerate(peer_hosts):
        processes.append(
            host.python(
                "-m", "osaas", "peer", "run",
                "--coordinator", coordinator,
                "--data-dir", str(workdir / f"peer-{i}"),
                "--status-port", "off",
                "--allow-private",
                log=workdir / f"peer-{i}.log",
            )
        )  # fmt: skip
    return coordinator
