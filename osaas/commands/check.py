"""`osaas check` and `osaas demo`: a whole network on this machine for one link check."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from rich.console import Console

from osaas.check import CheckOptions, run_check, write_report
from osaas.commands._shared import (
    EXIT_OK,
    EXIT_PROBLEMS,
    _non_negative,
    _positive,
    _setup_logging,
)
from workloads.linkcheck import report


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("check", help="check the links of a site with an embedded network")
    check.add_argument("urls", nargs="+", metavar="URL")
    check.add_argument("--peers", type=_positive, default=2, help="peer processes to start (default 2)")
    check.add_argument(
        "--depth",
        type=_non_negative,
        default=None,
        help="crawl pages up to N links away from the start URLs (0: the start pages only); links on the last pages crawled are still checked (default: no limit)",
    )
    check.add_argument("--format", choices=report.FORMATS, default="text", dest="fmt")
    check.add_argument("--output", type=Path, help="write the report here instead of standard output")
    check.add_argument("--allow-private", action="store_true", help="allow private, loopback and link-local targets")
    check.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    check.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="leave the embedded coordinator's database and the peers' logs in DIR (a new directory), to look into",
    )
    check.set_defaults(run=_cmd_check)

    demo = commands.add_parser("demo", help="check the sample site shipped with osaas")
    demo.add_argument("--peers", type=_positive, default=3)
    demo.set_defaults(run=_cmd_demo)


def _cmd_check(args: argparse.Namespace) -> int:
    _setup_logging(logging.WARNING)
    options = CheckOptions(
        urls=tuple(args.urls),
        peers=args.peers,
        depth=args.depth,
        allow_private=args.allow_private,
        fmt=args.fmt,
        output=args.output,
        progress=not args.no_progress,
        keep=args.keep,
    )
    items = asyncio.run(run_check(options, Console(stderr=True)))
    write_report(items, options.fmt, options.output)
    if options.output is not None:
        print(report.summary(items), file=sys.stderr)
    return EXIT_PROBLEMS if report.has_problems(items) else EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from osaas.demo import serve_site

    _setup_logging(logging.WARNING)
    console = Console(stderr=True)

    async def demo() -> list[dict]:
        async with serve_site() as base_url:
            console.print(f"Serving the sample site at {base_url}; checking it with {args.peers} peers.")
            options = CheckOptions(urls=(base_url,), peers=args.peers, allow_private=True)
            return await run_check(options, console)

    items = asyncio.run(demo())
    write_report(items, "text", None)
    return EXIT_OK  # the sample site's broken links are the point of the demo
