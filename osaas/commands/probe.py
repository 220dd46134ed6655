"""`osaas probe URL...`: reachability and latency of URLs from K vantage points."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from rich.console import Console

from coordinator.url_jobs import DEFAULT_VANTAGE
from osaas.commands._shared import (
    EXIT_OK,
    EXIT_PROBLEMS,
    UsageError,
    _add_key_argument,
    _coordinator_url,
    _load_key,
    _positive,
    _setup_logging,
)
from osaas.probe import ProbeOptions, run_probe, unreachable
from workloads import renderers
from workloads.builtin import PROBE


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    probe = commands.add_parser(
        "probe", help="fetch URLs from many vantage points: status, DNS/connect/TLS/first-byte times, certificate"
    )
    probe.add_argument("urls", nargs="+", metavar="URL")
    probe.add_argument(
        "--vantage",
        type=_positive,
        default=None,
        metavar="K",
        help=f"peers in K different networks fetch each URL (default {DEFAULT_VANTAGE}; 1 without --coordinator)",
    )
    probe.add_argument(
        "--coordinator",
        type=_coordinator_url,
        default=None,
        metavar="URL",
        help="submit to this network's coordinator and wait (default: a network on this machine, one vantage point)",
    )
    _add_key_argument(probe, "with --coordinator: the owner's key, which signs the job")
    probe.add_argument("--format", choices=("text", "jsonl", "csv"), default="text", dest="fmt")
    probe.add_argument("--output", type=Path, help="write the results here instead of standard output")
    probe.add_argument("--allow-private", action="store_true", help="allow private, loopback and link-local targets")
    probe.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    probe.set_defaults(run=_cmd_probe)


def _cmd_probe(args: argparse.Namespace) -> int:
    _setup_logging(logging.WARNING)
    console = Console(stderr=True)
    if args.coordinator is None:
        if args.vantage is not None and args.vantage > 1:
            raise UsageError(
                f"--vantage {args.vantage} needs --coordinator: a network on this machine is one vantage point"
            )
        if args.key is not None:
            raise UsageError("--key signs a job on a real network: give --coordinator too")
    elif args.allow_private:
        raise UsageError("--allow-private is for a network on this machine: the volunteers' peers decide for theirs")
    options = ProbeOptions(
        urls=tuple(args.urls),
        vantage=args.vantage or (DEFAULT_VANTAGE if args.coordinator else 1),
        coordinator=args.coordinator,
        key=_load_key(args.key) if args.coordinator else None,
        allow_private=args.allow_private,
        progress=not args.no_progress,
    )
    probed = asyncio.run(run_probe(options, console))
    text = renderers.render(PROBE, probed.columns, probed.rows, args.fmt)
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    return EXIT_PROBLEMS if unreachable(probed.rows) else EXIT_OK
