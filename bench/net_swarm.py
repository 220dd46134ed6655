"""Bundles across hosts: a coordinator's seeder and N peers, each in a network namespace of its
own with a shaped link, against plain HTTP from the same seeder host in the same run.

    python -m bench.net_swarm [--peers 8 16 32] [--size-mb 20] [--rate-mbit 20]
                              [--max-up RATE] [--max-down RATE] [--seed-rate RATE]

Needs root and `ip netns` (it says why and exits 0 otherwise). For each N: N + 1 namespaces on
a bridge (`tests/netns.py`), every host's link held to `--rate-mbit` both ways (a token bucket
on what it sends, another on what the bridge sends it). Host 0 runs the seeder as a coordinator
does (`coordinator.seeder.BundleSeeder`, announced in the DHT; also the DHT's bootstrap node and
a plain HTTP server of the same archive); each other host runs one peer process with what
`osaas peer run` runs for bundles (`bench/net_swarm_host.py`). All peers start at once and
fetch through `BundleCache.ensure` (DHT lookup of the swarm, libtorrent, verify, unpack). Then,
the swarm stopped, each host downloads the archive once over plain HTTP from host 0: the anchor.

Measured at the interfaces (the kernel's byte counters: headers, retransmissions and DHT
traffic included):
- seeder upload: bytes host 0 sent from the start until every peer held the bundle, over the
  archive's size (the floor is 1x; plain HTTP sends N x);
- all-hold: seconds until the last peer held a verified, unpacked copy, over the time of one
  download at the link rate (size * 8 / rate);
- what the time is made of: each peer's first byte (the first FIRST_BYTES received at its
  interface), its last piece (the torrent complete, before the bundle is verified and
  unpacked), and the first, median and last peer to hold the bundle;
- overshoot: each peer's highest send (and receive) rate over any 1 s and 10 s window, over its
  budget (`--max-up`, `--max-down`: the rates the peer agent gives its torrent session).

Targets (issue 19): seeder upload <= 1.3x, all-hold <= 1.5x one download.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.bundle_swarm import build_bundle
from bench.net_swarm_host import DHT_PORT
from overlay.identity import Identity
from peer.settings import DEFAULT_BUNDLE_UPLOAD_RATE
from tests import netns
from tests.netns import Host
from workloads import bundle

UPLOAD_TARGET = 1.3
ALL_HOLD_TARGET = 1.5
WINDOWS = (1.0, 10.0)
FIRST_BYTES = 64 * 1024  # received at a peer's interface: its first piece is coming
START_TIMEOUT = 300.0  # seconds for every process of a phase to be ready (imports on a busy machine)


@dataclass(frozen=True, slots=True)
class Conditions:
    size: int  # bytes of the archive
    rate_kbit: int  # every link, both ways
    max_up: int | None  # each peer's budget, bytes/s
    max_down: int | None
    bundle_upload_rate: int | None  # each peer's own seeding limit (None: the peer's default)
    seed_rate: int | None  # the coordinator's own bundle upload limit, bytes/s
    super_seed: bool = True  # libtorrent's seeder: the coordinator's old rule (from SUPER_SEED_FROM); False: never
    origin: str = "own"  # the seeder: "own" (overlay.origin, `coordinator serve`'s default) or "libtorrent"

    @property
    def one_download(self) -> float:
        """Seconds one download of the archive takes at the link rate."""
        return self.size * 8 / (self.rate_kbit * 1000)


@dataclass(frozen=True, slots=True)
class Phase:
    """One route (swarm or http) for N peers."""

    route: str
    peers: int
    seeder_sent: int  # bytes at host 0's interface from the start until all held
    seeder_payload: int | None  # libtorrent's payload count (swarm only)
    holds: list[float]  # seconds from the start, per peer that held the bundle
    errors: list[str]
    overshoot_up: dict[float, float]  # window -> the worst peer's highest send rate / budget
    overshoot_down: dict[float, float]
    cpu_busy: float  # share of the machine's CPU time in use from the start until all held
    peer_cpu: float  # CPU seconds the peer processes used until each held, over the seconds until all held
    started: float = 0.0  # time.time() of the start and of the moment all held (or the timeout)
    ended: float = 0.0
    seeder_cpu: float | None = None  # the seeder process's CPU seconds over those seconds (swarm only)
    first_bytes: list[float] = dataclasses.field(default_factory=list)  # seconds from the start, per peer
    fetched: list[float] = dataclasses.field(default_factory=list)  # last piece, seconds from the start (swarm)

    def upload_ratio(self, size: int) -> float:
        return self.seeder_sent / size

    @property
    def all_hold(self) -> float:
        return max(self.holds) if self.holds and not self.errors else float("inf")


# ---- the pure part ------------------------------------------------------------------------


def peak_rate(samples: Sequence[Sequence[float]], column: int, window: float, since: float, until: float) -> float:
    """The highest rate (bytes/s) of counter `column` over any span of at least `window` seconds
    between `since` and `until`, from (time, rx, tx) samples; 0 with too few samples."""
    inside = [s for s in samples if since - 0.5 <= s[0] <= until + 0.5]
    best = 0.0
    j = 0
    for i, start in enumerate(inside):
        j = max(j, i + 1)
        while j < len(inside) and inside[j][0] - start[0] < window:
            j += 1
        if j == len(inside):
            break
        end = inside[j]
        best = max(best, (end[column] - start[column]) / (end[0] - start[0]))
    return best


def first_byte(samples: Sequence[Sequence[float]], began: float, size: int = FIRST_BYTES) -> float | None:
    """Seconds from `began` until the interface had received `size` bytes more than at
    `began`, from (time, rx, tx, ...) samples; None if it never did."""
    before = [s for s in samples if s[0] <= began]
    if not before:
        return None
    start = before[-1][1]
    return next((s[0] - began for s in samples if s[0] > began and s[1] - start >= size), None)


def overshoot(results: Sequence[dict[str, object]], column: int, budget: int | None) -> dict[float, float]:
    """For each window: the worst peer's peak rate over `budget` ({} without a budget)."""
    if budget is None:
        return {}
    worst = dict.fromkeys(WINDOWS, 0.0)
    for result in results:
        samples = result["samples"]
        assert isinstance(samples, list)
        began, stopped = float(str(result["began"])), samples[-1][0]
        for window in WINDOWS:
            worst[window] = max(worst[window], peak_rate(samples, column, window, began, stopped) / budget)
    return worst


# ---- running it ---------------------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far (/proc/stat), every process of the machine."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def _start(host: Host, role: str, directory: Path, *args: str) -> subprocess.Popen[bytes]:
    return host.python(
        "-m",
        "bench.net_swarm_host",
        role,
        "--dir",
        str(directory),
        "--ip",
        host.ipv4,
        *args,
        log=directory / f"{role}-{host.index}.log",
    )


def _wait_files(paths: list[Path], processes: list[subprocess.Popen[bytes]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not all(path.exists() for path in paths):
        dead = [p.args for p in processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a process ended while waiting for {what}: {dead[0]!r}")
        if time.monotonic() > deadline:
            missing = sum(1 for path in paths if not path.exists())
            raise RuntimeError(f"timed out waiting for {what} ({missing} of {len(paths)} missing)")
        time.sleep(0.05)


def _phase(
    route: str, seeder: Host, clients: list[Host], directory: Path, conditions: Conditions, timeout: float
) -> Phase:
    """Start one client process per host, say go at once, wait until all hold the bundle."""
    role = "peer" if route == "swarm" else "http"
    budget: list[str] = []
    if route == "swarm":
        for flag, value in (
            ("--max-up", conditions.max_up),
            ("--max-down", conditions.max_down),
            ("--bundle-upload-rate", conditions.bundle_upload_rate),
        ):
            if value is not None:
                budget += [flag, str(value)]
    (directory / "go").unlink(missing_ok=True)
    processes = [_start(host, role, directory, "--index", str(host.index), *budget) for host in clients]
    try:
        ready = [directory / f"ready-{role}-{host.index}" for host in clients]
        _wait_files(ready, processes, START_TIMEOUT, f"{len(clients)} {role} processes to start")
        time.sleep(1.0)  # DHT joins settle; nothing is fetched yet
        before, cpu_before = seeder.counters(), _cpu_times()
        started = time.time()
        (directory / "go.tmp").write_text(repr(started))
        (directory / "go.tmp").rename(directory / "go")
        done = [directory / f"done-{role}-{host.index}.json" for host in clients]
        _wait_files(done, processes, timeout, f"every {role} client to hold the bundle")
        after, cpu_after = seeder.counters(), _cpu_times()
        ended = time.time()
    finally:
        netns.stop(processes)
    results = [json.loads((directory / f"result-{role}-{host.index}.json").read_text()) for host in clients]
    return Phase(
        route=route,
        peers=len(clients),
        seeder_sent=after[1] - before[1],
        seeder_payload=None,  # the seeder's own count, read when it stops
        holds=[r["held"] - r["began"] for r in results if not r["error"]],
        errors=[f"{role} {host.index}: {r['error']}" for host, r in zip(clients, results, strict=True) if r["error"]],
        overshoot_up=overshoot(results, 2, conditions.max_up if route == "swarm" else None),
        overshoot_down=overshoot(results, 1, conditions.max_down if route == "swarm" else None),
        cpu_busy=(cpu_after[0] - cpu_before[0]) / max(1, cpu_after[1] - cpu_before[1]),
        peer_cpu=sum(r.get("cpu", 0.0) for r in results)
        / max(max((r["held"] - r["began"] for r in results), default=1), 1e-9),
        started=started,
        ended=ended,
        first_bytes=[
            t for r in results if (t := first_byte(r["samples"], float(r["began"]))) is not None and not r["error"]
        ],
        fetched=[r["fetched"] - r["began"] for r in results if r.get("fetched") is not None and not r["error"]],
    )


def process_cpu(samples: Sequence[Sequence[float]], since: float, until: float) -> float | None:
    """Cores a process used between `since` and `until`, from its (time, rx, tx, cpu) samples."""
    inside = [s for s in samples if since <= s[0] <= until and len(s) > 3]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return (inside[-1][3] - inside[0][3]) / (inside[-1][0] - inside[0][0])


def run(
    peers: int, built: bundle.BuiltBundle, conditions: Conditions, directory: Path, *, http: bool = True
) -> tuple[Phase, Phase | None]:
    """The swarm for `peers` peers, then (if `http`) the HTTP anchor, on fresh namespaces."""
    directory.mkdir(parents=True)
    bundle_dir = directory / "bundle"
    bundle_dir.mkdir()
    for path in (built.archive_path, built.manifest_path, built.torrent_path):
        (bundle_dir / path.name).symlink_to(path)
    signed = built.signed
    assert signed.info_hash is not None
    timeout = max(120.0, 20 * conditions.one_download)
    with netns.hosts(peers + 1) as hosts:
        for host in hosts:
            host.shape(rate_kbit=conditions.rate_kbit, down_kbit=conditions.rate_kbit)
        seeder_host, clients = hosts[0], hosts[1:]
        seed_args = ["--seed-rate", str(conditions.seed_rate)] if conditions.seed_rate else []
        seed_args += [] if conditions.super_seed else ["--no-super-seed"]
        seed_args += ["--own-origin"] if conditions.origin == "own" else []
        seeder = _start(seeder_host, "seeder", directory, *seed_args)
        try:
            _wait_files([directory / "seeder.json"], [seeder], START_TIMEOUT, "the seeder")
            port = json.loads((directory / "seeder.json").read_text())["port"]
            job = {
                "name": signed.manifest.name,
                "version": signed.manifest.version,
                "info_hash": signed.info_hash.hex(),
                "manifest": bundle.encode(signed).hex(),
                "archive_sha256": signed.archive_sha256.hex(),
                "seed_host": seeder_host.ipv4,
                "seed_port": port,
                "dht_port": DHT_PORT,
            }
            (directory / "job.json").write_text(json.dumps(job))
            swarm = _phase("swarm", seeder_host, clients, directory, conditions, timeout)
            anchor = None
            if http:
                http_timeout = 4 * peers * conditions.one_download + 120
                anchor = _phase("http", seeder_host, clients, directory, conditions, http_timeout)
        finally:
            netns.stop([seeder])
        seeded = json.loads((directory / "result-seeder.json").read_text())
    seeder_cpu = process_cpu(seeded["samples"], swarm.started, swarm.ended)
    return dataclasses.replace(swarm, seeder_payload=seeded["payload_up"], seeder_cpu=seeder_cpu), anchor


# ---- the table ----------------------------------------------------------------------------


def _times(value: float) -> str:
    return f"{value:.2f}x" if value != float("inf") else "failed"


def _cores(value: float | None) -> str:
    return f"{value:4.2f}" if value is not None else "   -"


def _overshoot(phase: Phase) -> str:
    parts = []
    for name, worst in (("up", phase.overshoot_up), ("down", phase.overshoot_down)):
        if worst:
            parts.append(f"{name} " + " / ".join(f"{worst[w]:.2f}" for w in WINDOWS))
    return ", ".join(parts) or "no budget"


def seeder_kind(conditions: Conditions) -> str:
    if conditions.origin == "own":
        return "own"
    return "super" if conditions.super_seed else "plain"


def row(phase: Phase, conditions: Conditions) -> str:
    size, one = conditions.size, conditions.one_download
    payload = f" ({phase.seeder_payload / size:.2f}x payload)" if phase.seeder_payload is not None else ""
    holds = sorted(phase.holds)
    median = f"{statistics.median(holds):6.1f}" if holds else "     -"
    return (
        f"{phase.peers:>3} | {seeder_kind(conditions) if phase.route == 'swarm' else '':<5} | {phase.route:<5} | {_times(phase.upload_ratio(size)):>6}{payload:<17} | "
        f"{median} | {phase.all_hold:6.1f} | {_times(phase.all_hold / one):>7} | {phase.cpu_busy:4.0%} {phase.peer_cpu:4.2f} {_cores(phase.seeder_cpu)} | "
        f"{_spread(phase.first_bytes)} | {_spread(phase.fetched)} | {_spread(holds)} | {_overshoot(phase)}"
    )


def _spread(values: list[float]) -> str:
    """min / median / max, one decimal."""
    if not values:
        return "       -        "
    ordered = sorted(values)
    return f"{ordered[0]:4.1f} / {statistics.median(ordered):4.1f} / {ordered[-1]:4.1f}"


HEADER = (
    "  N | seed  | route | seeder sent / bundle            | p50 s  | all s  | all/one | CPU, peers', seeder's cores | "
    "first byte s, min/p50/max | last piece s | held s | "
    f"worst peer rate / budget ({' / '.join(f'{w:g} s' for w in WINDOWS)})"
)


def _rate(text: str) -> int:
    units = {"KB": 1000, "MB": 1000**2, "KIB": 1024, "MIB": 1024**2}
    cleaned = text.upper().removesuffix("/S")
    for suffix, factor in units.items():
        if cleaned.endswith(suffix):
            return int(float(cleaned[: -len(suffix)]) * factor)
    return int(cleaned)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--size-mb", type=float, default=20)
    parser.add_argument("--rate-mbit", type=float, default=20, help="every link's rate, both ways")
    parser.add_argument("--max-up", type=_rate, default=None, help="each peer's upload budget, e.g. 1MB/s")
    parser.add_argument("--max-down", type=_rate, default=None, help="each peer's download budget")
    parser.add_argument(
        "--bundle-upload-rate",
        type=_rate,
        default=None,
        help=f"each peer's own seeding limit (default: the peer's, {DEFAULT_BUNDLE_UPLOAD_RATE / 1e6:g} MB/s)",
    )
    parser.add_argument("--seed-rate", type=_rate, default=None, help="the coordinator's bundle upload limit")
    parser.add_argument(
        "--no-super-seed",
        dest="super_seed",
        action="store_false",
        help="seed with libtorrent, never super-seeding (the same as --seeders plain)",
    )
    parser.add_argument(
        "--seeders",
        nargs="+",
        choices=["super", "plain", "own"],
        default=None,
        help="run each of these seeders in turn, same conditions (default: own, overlay.origin, as `coordinator "
        "serve` seeds; super and plain: libtorrent's seeder with and without super-seeding)",
    )
    parser.add_argument("--no-http", action="store_true", help="leave out the HTTP anchor")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, samples)")
    args = parser.parse_args(argv)
    reason = netns.netns_reason()
    if reason:
        print(f"bench.net_swarm skipped: {reason}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="osaas-net-swarm-"))
    work.chmod(0o755)
    built = build_bundle(work / "built", int(args.size_mb * 1_000_000), Identity.generate())
    conditions = Conditions(
        size=built.archive_path.stat().st_size,
        rate_kbit=int(args.rate_mbit * 1000),
        max_up=args.max_up,
        max_down=args.max_down,
        bundle_upload_rate=args.bundle_upload_rate,
        seed_rate=args.seed_rate,
        super_seed=args.super_seed,
    )
    kinds = args.seeders or (["own"] if args.super_seed else ["plain"])
    print(
        f"bundle {conditions.size / 1e6:.1f} MB; links {args.rate_mbit:g} Mbit/s both ways; one download "
        f"{conditions.one_download:.1f} s; peer budget up {args.max_up or 'none'} B/s, down "
        f"{args.max_down or 'none'} B/s, seeding limit {args.bundle_upload_rate or DEFAULT_BUNDLE_UPLOAD_RATE} B/s; coordinator upload limit {args.seed_rate or 'none'} B/s, "
        f"seeders {', '.join(kinds)}"
    )
    print(HEADER, flush=True)
    failed = False
    for n in args.peers:
        for i, kind in enumerate(kinds):
            these = dataclasses.replace(
                conditions, super_seed=kind == "super", origin="own" if kind == "own" else "libtorrent"
            )
            http = not args.no_http and i == len(kinds) - 1
            swarm, anchor = run(n, built, these, work / f"n{n}-{kind}", http=http)
            for phase in (swarm, anchor):
                if phase is not None:
                    print(row(phase, these), flush=True)
                    for error in phase.errors[:5]:
                        print(f"    {error}")
            failed |= bool(swarm.errors)
    print(f"targets: seeder sent <= {UPLOAD_TARGET}x the bundle, all-hold <= {ALL_HOLD_TARGET}x one download")
    if args.keep or failed:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
