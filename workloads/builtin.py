"""The built-in link-check workload as a bundle, so that it reaches peers like any other.

`stage_linkcheck` copies the workload's source (workloads/linkcheck and the process API it
speaks) into a directory with a `bundle.toml`; `build_linkcheck` builds and signs it with the
key of whoever serves it (a coordinator, or `osaas check` for its embedded network). The
version carries a digest of the source, so changed code is always a new version and unchanged
code the same bytes and info-hash.
"""

from __future__ import annotations

import hashlib
import shutil
from importlib import metadata
from pathlib import Path

from overlay.identity import Identity
from workloads import bundle

LINKCHECK = "linkcheck"
_PACKAGE_ROOT = Path(__file__).resolve().parent
_SOURCES = ("__init__.py", "process_api.py", "linkcheck/*.py")  # its report module too: stdlib only
# Generous: a unit waits for robots.txt, crawl delays and slow hosts; the CPU limit is what
# stops a runaway.
_LIMITS = {"cpu_seconds": 120, "memory_mb": 1024, "open_files": 64, "timeout_seconds": 600}


# Its job model (docs/workload-api.md): seed URLs crawled by website, one record per URL.
_JOB_MODEL = """
[job]
input = "urls"
crawl = true
count = "result"
links_at = "final_url"

[results.fields]
url = "str"
result = "str"
status = "int?"
final_url = "str?"
redirects = "list[str]"
error = "str?"
links = "list[str]"
"""


def _source_files() -> list[Path]:
    files = sorted({path for pattern in _SOURCES for path in _PACKAGE_ROOT.glob(pattern)})
    if not any(path.name == "__main__.py" for path in files):
        raise RuntimeError(f"{_PACKAGE_ROOT}/linkcheck/__main__.py is missing: broken install")
    return files


def linkcheck_version() -> str:
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(path.relative_to(_PACKAGE_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    try:
        release = metadata.version("osaas")
    except metadata.PackageNotFoundError:
        release = "0"
    return f"{release}+{digest.hexdigest()[:12]}"


def stage_linkcheck(dest: Path) -> Path:
    """Write the link-check bundle's source tree into `dest` (replaced if it exists)."""
    if dest.exists():
        shutil.rmtree(dest)
    package = dest / "workloads"
    for path in _source_files():
        target = package / path.relative_to(_PACKAGE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    limits = "\n".join(f"{key} = {value}" for key, value in _LIMITS.items())
    (dest / bundle.MANIFEST_FILE).write_text(
        f'name = "{LINKCHECK}"\n'
        f'version = "{linkcheck_version()}"\n'
        'entrypoint = ["python3", "-m", "workloads.linkcheck"]\n'
        'capabilities = ["fetch"]\n'
        f"[limits]\n{limits}\n" + _JOB_MODEL,
        encoding="utf-8",
    )
    return dest


def build_linkcheck(identity: Identity, work_dir: Path) -> bundle.BuiltBundle:
    """Stage and build the link-check bundle under `work_dir`, signed by `identity`."""
    source = stage_linkcheck(work_dir / "linkcheck-source")
    return bundle.build(source, identity, work_dir / f"linkcheck-{linkcheck_version()}")
