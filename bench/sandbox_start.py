"""What the sandbox costs per unit: a workload started bare vs confined in bubblewrap.

    python -m bench.sandbox_start [--units 40]

Each unit is a real run through `peer.runner.run_workload` of the smallest Python workload that
speaks the process API (read the unit, answer a result, exit), the way the peer runs a Python
bundle: once as a bare subprocess (the anchor, as the peer ran workloads before the sandbox) and
once confined (peer.sandbox: namespaces, read-only binds, tmpfs, prlimit and, as root, setpriv).
The two kinds alternate, so both see the same machine. Printed: the median and p90 wall time
per unit of each, and the sandbox's extra cost. Target: at most 50 ms extra per unit.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from peer.platform import ResourceLimits
from peer.runner import Sandboxed, run_workload
from peer.sandbox import BUNDLE_DIR, Confinement, detect, python_runtime
from workloads.process_api import ExitCode, Unit

_MINIMAL = """import os, sys
from workloads.process_api import FrameDecoder, Result, Unit, encode_frame

decoder = FrameDecoder()
while not (frames := decoder.feed(os.read(0, 65536))):
    pass
unit = Unit.from_frame(frames[0])
sys.stdout.buffer.write(encode_frame(Result(status=0, payload={"unit_id": unit.unit_id}).to_frame()))
sys.stdout.buffer.flush()
"""

TARGET_EXTRA_MS = 50.0


def _stage(root: Path) -> Path:
    package = Path(__file__).resolve().parents[1] / "workloads"
    (root / "workloads").mkdir(parents=True)
    for name in ("__init__.py", "process_api.py"):
        (root / "workloads" / name).write_bytes((package / name).read_bytes())
    (root / "minimal.py").write_text(_MINIMAL)
    return root


async def _run_once(unit_id: int, bundle: Path, sandbox: Sandboxed | None) -> float:
    started = time.perf_counter()
    outcome = await run_workload(
        [sys.executable, "-m", "minimal"],
        Unit(unit_id=unit_id, payload={}),
        None,
        limits=ResourceLimits(),
        env={"PYTHONPATH": BUNDLE_DIR if sandbox else str(bundle)},
        workdir_parent=bundle.parent,
        sandbox=sandbox,
    )
    elapsed = time.perf_counter() - started
    if outcome.exit_code is not ExitCode.OK:
        raise SystemExit(
            f"unit {unit_id} failed ({'sandboxed' if sandbox else 'bare'}): {outcome.error}; {outcome.stderr_tail}"
        )
    return elapsed


def _describe(name: str, times: list[float]) -> str:
    times = sorted(times)
    p90 = times[int(0.9 * (len(times) - 1))]
    return f"{name:<10} median {statistics.median(times) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


async def main(units: int) -> int:
    box = detect()
    with tempfile.TemporaryDirectory(prefix="osaas-bench-sandbox-") as tmp:
        bundle = _stage(Path(tmp) / "bundle")
        confined = Sandboxed(box, Confinement(bundle, python_runtime()))
        bare: list[float] = []
        sandboxed: list[float] = []
        await _run_once(0, bundle, None)  # warm the page cache for both
        await _run_once(0, bundle, confined)
        for unit_id in range(1, units + 1):
            bare.append(await _run_once(unit_id, bundle, None))
            sandboxed.append(await _run_once(unit_id, bundle, confined))
    extra = (statistics.median(sandboxed) - statistics.median(bare)) * 1000
    print(
        f"sandbox start cost, {units} units each, alternating (bubblewrap {box.bwrap}"
        f"{', per-unit uid via setpriv' if box.setpriv else ''})"
    )
    print(_describe("bare", bare))
    print(_describe("sandboxed", sandboxed))
    verdict = "ok" if extra <= TARGET_EXTRA_MS else "OVER TARGET"
    print(f"extra per unit (median): {extra:.1f} ms (target <= {TARGET_EXTRA_MS:.0f} ms): {verdict}")
    return 0 if extra <= TARGET_EXTRA_MS else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=40)
    raise SystemExit(asyncio.run(main(parser.parse_args().units)))
