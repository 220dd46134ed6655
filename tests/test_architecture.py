"""The arrows of docs/architecture.md, checked on every import of the source tree: a package
imports only itself and the packages below it; peer and coordinator never import each other;
the screensaver reads only the peer's local status API; the workload the sandbox runs imports
only the process API."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"osaas": 3, "screensaver": 2, "peer": 2, "coordinator": 2, "workloads": 1, "overlay": 0}
# Same layer, but one may lean on the other's documented surface.
ALLOWED_ACROSS = {"screensaver": {"peer.status"}}
SANDBOXED = ("workloads.linkcheck", "workloads.probe")
SANDBOXED_MAY_IMPORT = {"workloads.process_api", "workloads"}


def ours(name: str) -> bool:
    return name.split(".")[0] in LAYERS


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of our packages in the file at `path`."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if ours(name)]


def sources(root: Path) -> list[Path]:
    return sorted(path for package in LAYERS for path in (root / package).rglob("*.py"))


def broken_arrows(path: Path, root: Path) -> list[str]:
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module.split(".")[0]
    wrong = []
    for line, target in imports_of(path, root):
        other = target.split(".")[0]
        if module.startswith(SANDBOXED):
            own = next(name for name in SANDBOXED if module.startswith(name))
            allowed = target.startswith(own) or any(
                target == name or target.startswith(name + ".") for name in SANDBOXED_MAY_IMPORT
            )
            allowed = allowed and not target.startswith("workloads.bundle")
        elif other == package or LAYERS[other] < LAYERS[package]:
            allowed = True
        else:
            allowed = any(target.startswith(surface) for surface in ALLOWED_ACROSS.get(package, ()))
        if not allowed:
            wrong.append(f"{path.relative_to(root)}:{line} imports {target}")
    return wrong


def test_every_import_follows_the_arrows() -> None:
    assert len(sources(ROOT)) > 50  # the tree was found
    wrong = [problem for path in sources(ROOT) for problem in broken_arrows(path, ROOT)]
    assert wrong == []


def test_the_check_catches_an_import_against_the_arrows(tmp_path: Path) -> None:
    for name, text in {
        "overlay/up.py": "from peer import agent\n",
        "peer/across.py": "import coordinator.api\n",
        "coordinator/down.py": "from overlay.wire import parse\nfrom . import leases\n",
        "workloads/linkcheck/escape.py": "from workloads.bundle import unpack\nfrom ..process_api import Unit\n",
        "screensaver/look.py": "from peer.status import to_json\nfrom peer.agent import Agent\n",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    wrong = sorted(problem for path in sources(tmp_path) for problem in broken_arrows(path, tmp_path))
    assert wrong == [
        "overlay/up.py:1 imports peer.agent",
        "peer/across.py:1 imports coordinator.api",
        "screensaver/look.py:2 imports peer.agent.Agent",
        "workloads/linkcheck/escape.py:1 imports workloads.bundle.unpack",
    ]


# The scheduling rules every store applies: pure, so a second store (PostgreSQL) reuses them.
PURE_RULES = [
    "coordinator/assignment.py",
    "coordinator/host_planning.py",
    "coordinator/host_leasing.py",
    "coordinator/leases.py",
    "coordinator/host_pacing.py",
    "coordinator/unit_sizing.py",
    "coordinator/rollout.py",
    "coordinator/url_jobs.py",
]
IMPURE = ("sqlite3", "psycopg", "aiohttp", "asyncio", "time", "coordinator.sql", "coordinator.api")


def impure_imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return sorted({name for name in names if any(name == bad or name.startswith(bad + ".") for bad in IMPURE)})


def test_the_scheduling_rules_touch_no_database_network_or_clock() -> None:
    assert {path: impure_imports(ROOT / path) for path in PURE_RULES} == dict.fromkeys(PURE_RULES, [])


def test_the_purity_check_catches_a_database_in_the_rules(tmp_path: Path) -> None:
    rule = tmp_path / "rule.py"
    rule.write_text("import time\nfrom coordinator.sql import leasing\nfrom coordinator import leases\n")
    assert impure_imports(rule) == ["coordinator.sql", "coordinator.sql.leasing", "time"]
