"""The `osaas` command: check, demo, coordinator serve/dashboard/owner add, peer run/status/page,
screensaver (install), dht serve/lookup, network keygen/admit/show, bundle keygen/build/publish/rollout/status, job
submit/status/results. Each group lives in osaas/commands/; this module puts them together and
is the one place a command's error becomes `osaas: error: ...` and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from osaas.commands import bundle, check, coordinator, dht, job, network, peer, probe, screensaver
from osaas.commands._shared import EXIT_ERROR, UsageError
from overlay.errors import OsaasError

__all__ = ["UsageError", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.run(args)
    except OsaasError as exc:  # every kind of bad input or unreachable other side: one line
        print(f"osaas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("osaas: interrupted", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osaas", description="Open source as a service: volunteer-run link checking.")
    commands = parser.add_subparsers(metavar="COMMAND")
    for group in (check, probe, coordinator, peer, screensaver, dht, network, bundle, job):
        group.add_commands(commands)
    return parser
