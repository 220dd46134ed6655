"""How a Python bundle starts: this file's source is the program the peer's interpreter runs
(`python -I -c SOURCE ROOT GUARDED TARGET...`, see peer/ready.py), in the sandbox and out.

It puts the bundle's directory (ROOT) first on sys.path, and lets the packages of the osaas
distribution (GUARDED, comma-separated top-level names) be imported only from the bundle: a
bundle that lacks one of them, or a module of one, fails with ModuleNotFoundError instead of
running the copy installed beside the peer. Then it runs TARGET as the interpreter would:
`-m MODULE ARGS...`, `-c CODE ARGS...` or `SCRIPT ARGS...`.

The standard library only: nothing of ours is importable here, by design.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec, PathFinder


class BundleOnly:
    """A meta path finder, asked first: a guarded package's module from the bundle, or an
    import error; None (ask the others) for every other module."""

    def __init__(self, root: str, guarded: frozenset[str]) -> None:
        self.root = root
        self.guarded = guarded

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: object = None) -> ModuleSpec | None:
        if name.partition(".")[0] not in self.guarded:
            return None
        # A submodule is looked for where its parent, found in the bundle, says.
        spec = PathFinder.find_spec(name, [self.root] if path is None else path)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} in the bundle", name=name)
        return spec


def main(argv: list[str]) -> None:
    root, guarded, kind, *rest = argv
    names = frozenset(guarded.split(","))
    for name in [name for name in sys.modules if name.partition(".")[0] in names]:
        del sys.modules[name]  # imported before this ran (a site hook): forgotten
    sys.path.insert(0, root)
    sys.meta_path.insert(0, BundleOnly(root, names))
    if kind == "-m":
        module, *args = rest
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    elif kind == "-c":
        code, *args = rest
        sys.argv = ["-c", *args]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    else:
        sys.argv = [kind, *rest]
        runpy.run_path(kind, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
