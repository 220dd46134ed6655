"""The built-in workloads as bundles, so that they reach peers like any other: the link
checker and the probe.

`stage_builtin` copies a workload's source (its package and the process API it speaks) into a
directory with a `bundle.toml`; `build_builtin` builds and signs it with the key of whoever
serves it (a coordinator, or `osaas check` for its embedded network). The version carries a
digest of the source, so changed code is always a new version and unchanged code the same
bytes and info-hash.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from overlay.identity import Identity
from workloads import bundle
from workloads.linkcheck.check import MAX_LINKS_PER_PAGE

LINKCHECK = "linkcheck"
PROBE = "probe"
_PACKAGE_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Builtin:
    name: str
    package: str  # under workloads/: its code, stdlib and the process API only
    api_version: int
    limits: dict[str, int]
    job_model: str  # its manifest's [job] and [results.fields] tables

    @property
    def sources(self) -> tuple[str, ...]:
        return ("__init__.py", "process_api.py", f"{self.package}/*.py")


# Its job model (docs/workload-api.md): seed URLs crawled by website, one record per URL; two
# answers of a URL agree when their results do, and a problem is checked again by another peer.
# Generous limits: a unit waits for robots.txt, crawl delays and slow hosts; the CPU limit is
# what stops a runaway.
_LINKCHECK = Builtin(
    LINKCHECK,
    "linkcheck",
    2,  # for its item frames: each page's record reaches the owner as soon as it is checked
    {"cpu_seconds": 120, "memory_mb": 1024, "open_files": 64, "timeout_seconds": 600},
    f"""
[job]
input = "urls"
crawl = true
count = "result"
links_at = "final_url"
max_links = {MAX_LINKS_PER_PAGE}
agree = ["result"]
problems = ["broken", "timeout", "error"]
unreached = ["timeout", "error"]

[results.fields]
url = "str"
result = "str"
status = "int?"
final_url = "str?"
redirects = "list[str]"
error = "str?"
links = "list[str]"
""",
)

# Each URL from K vantage points (peers in different networks), one record per vantage point
# (workloads/probe/measure.py). Times are seconds; cert_expires is Unix seconds.
_PROBE = Builtin(
    PROBE,
    "probe",
    2,
    {"cpu_seconds": 60, "memory_mb": 512, "open_files": 64, "timeout_seconds": 600},
    """
[job]
input = "urls"
vantage = true

[results.fields]
url = "str"
status = "int?"
error = "str?"
address = "str?"
dns = "float?"
connect = "float?"
tls = "float?"
first_byte = "float?"
total = "float?"
tls_version = "str?"
cert_issuer = "str?"
cert_expires = "int?"
location = "str?"
body_sha256 = "str?"
body_bytes = "int?"
truncated = "bool"
""",
)

BUILTINS = {b.name: b for b in (_LINKCHECK, _PROBE)}


def _source_files(builtin: Builtin) -> list[Path]:
    files = sorted({path for pattern in builtin.sources for path in _PACKAGE_ROOT.glob(pattern)})
    if not any(path.name == "__main__.py" for path in files):
        raise RuntimeError(f"{_PACKAGE_ROOT}/{builtin.package}/__main__.py is missing: broken install")
    return files


def builtin_version(name: str) -> str:
    builtin = BUILTINS[name]
    digest = hashlib.sha256()
    for path in _source_files(builtin):
        digest.update(path.relative_to(_PACKAGE_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(builtin.job_model.encode())
    try:
        release = metadata.version("osaas")
    except metadata.PackageNotFoundError:
        release = "0"
    return f"{release}+{digest.hexdigest()[:12]}"


def stage_builtin(name: str, dest: Path) -> Path:
    """Write the built-in bundle `name`'s source tree into `dest` (replaced if it exists)."""
    builtin = BUILTINS[name]
    if dest.exists():
        shutil.rmtree(dest)
    package = dest / "workloads"
    for path in _source_files(builtin):
        target = package / path.relative_to(_PACKAGE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    limits = "\n".join(f"{key} = {value}" for key, value in builtin.limits.items())
    api = f"api_version = {builtin.api_version}\n" if builtin.api_version != 1 else ""
    (dest / bundle.MANIFEST_FILE).write_text(
        f'name = "{builtin.name}"\n'
        f'version = "{builtin_version(name)}"\n'
        f'entrypoint = ["python3", "-m", "workloads.{builtin.package}"]\n'
        'capabilities = ["fetch"]\n'
        f"{api}[limits]\n{limits}\n" + builtin.job_model,
        encoding="utf-8",
    )
    return dest


def build_builtin(name: str, identity: Identity, work_dir: Path) -> bundle.BuiltBundle:
    """Stage and build the built-in bundle `name` under `work_dir`, signed by `identity`."""
    source = stage_builtin(name, work_dir / f"{name}-source")
    return bundle.build(source, identity, work_dir / f"{name}-{builtin_version(name)}")


def linkcheck_version() -> str:
    return builtin_version(LINKCHECK)


def stage_linkcheck(dest: Path) -> Path:
    return stage_builtin(LINKCHECK, dest)


def build_linkcheck(identity: Identity, work_dir: Path) -> bundle.BuiltBundle:
    return build_builtin(LINKCHECK, identity, work_dir)
