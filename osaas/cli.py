"""The `osaas` command: check, demo, coordinator serve, peer run, job submit/status/results."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
from rich.console import Console

from coordinator.store import DEFAULT_UNIT_SIZE, StoreError
from osaas import owner, report
from osaas.check import CheckError, CheckOptions, run_check, validate_url, write_report
from overlay import http
from overlay.identity import IdentityError

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
log = logging.getLogger("osaas")


class UsageError(Exception):
    """A command line that cannot work: one line for the user, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.run(args)
    except (UsageError, CheckError, http.Rejected, http.Unavailable) as exc:
        print(f"osaas: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("osaas: interrupted", file=sys.stderr)
        return EXIT_ERROR


# ---- argument types ------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8700)")
    return host.strip("[]"), int(port)


def _coordinator_url(text: str) -> str:
    try:
        return validate_url(text).rstrip("/")
    except CheckError as exc:
        raise argparse.ArgumentTypeError(f"--coordinator: {exc}") from None


# ---- the parser ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osaas", description="Open source as a service: volunteer-run link checking.")
    commands = parser.add_subparsers(metavar="COMMAND")

    check = commands.add_parser("check", help="check the links of a site with an embedded network")
    check.add_argument("urls", nargs="+", metavar="URL")
    check.add_argument("--peers", type=_positive, default=2, help="peer processes to start (default 2)")
    check.add_argument("--depth", type=_non_negative, default=None, help="crawl pages up to N links away from the start URLs (0: the start pages only); links on the last pages crawled are still checked (default: no limit)")
    check.add_argument("--format", choices=report.FORMATS, default="text", dest="fmt")
    check.add_argument("--output", type=Path, help="write the report here instead of standard output")
    check.add_argument("--allow-private", action="store_true", help="allow private, loopback and link-local targets")
    check.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    check.set_defaults(run=_cmd_check)

    demo = commands.add_parser("demo", help="check the sample site shipped with osaas")
    demo.add_argument("--peers", type=_positive, default=3)
    demo.set_defaults(run=_cmd_demo)

    coordinator = commands.add_parser("coordinator", help="run a coordinator").add_subparsers(metavar="ACTION")
    serve = coordinator.add_parser("serve", help="serve the coordinator API")
    serve.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT")
    serve.add_argument("--db", type=Path, required=True, help="SQLite database file (created if missing)")
    serve.add_argument("--lease-seconds", type=float, default=60.0)
    serve.add_argument("--unit-size", type=_positive, default=DEFAULT_UNIT_SIZE, help=f"URLs per work unit (default {DEFAULT_UNIT_SIZE})")
    serve.set_defaults(run=_cmd_coordinator_serve)

    peer = commands.add_parser("peer", help="run a volunteer peer").add_subparsers(metavar="ACTION")
    run = peer.add_parser("run", help="lease and run work units")
    run.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--name", default=None, help="how the coordinator lists this peer")
    run.add_argument("--slots", type=_positive, default=4, help="units run at once (default 4)")
    run.add_argument("--allow-private", action="store_true", help="allow private, loopback and link-local targets")
    run.add_argument("--stop-grace", type=float, default=10.0, metavar="SECONDS",
                     help="on SIGTERM, how long running units may finish before their leases are released")
    run.set_defaults(run=_cmd_peer_run)

    job = commands.add_parser("job", help="submit and follow jobs").add_subparsers(metavar="ACTION")
    submit = job.add_parser("submit", help="submit a job; prints its id")
    submit.add_argument("workload", choices=["linkcheck"])
    submit.add_argument("urls", nargs="+", metavar="URL")
    submit.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    submit.add_argument("--depth", type=_non_negative, default=None)
    submit.set_defaults(run=_cmd_job_submit)

    status = job.add_parser("status", help="show a job's progress")
    status.add_argument("job_id", type=_positive, metavar="ID")
    status.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_cmd_job_status)

    results = job.add_parser("results", help="download a job's report")
    results.add_argument("job_id", type=_positive, metavar="ID")
    results.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    results.add_argument("--format", choices=report.FORMATS, default="text", dest="fmt")
    results.add_argument("--output", type=Path)
    results.set_defaults(run=_cmd_job_results)
    return parser


def _setup_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _run_until_signal(main_coro: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main_coro(stop)`; SIGTERM and SIGINT set `stop`."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # Windows has no add_signal_handler
                loop.add_signal_handler(sig, stop.set)
        await main_coro(stop)

    asyncio.run(runner())


# ---- commands ------------------------------------------------------------------------


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


def _cmd_coordinator_serve(args: argparse.Namespace) -> int:
    from coordinator.api import serve

    _setup_logging(logging.INFO)
    host, port = args.listen

    async def main_coro(stop: asyncio.Event) -> None:
        task = asyncio.create_task(
            serve(host, port, args.db, lease_seconds=args.lease_seconds, unit_size=args.unit_size)
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        _run_until_signal(main_coro)
    except StoreError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
    return EXIT_OK


def _cmd_peer_run(args: argparse.Namespace) -> int:
    from peer.agent import Agent, PeerSettings
    from peer.egress import EgressConfig

    _setup_logging(logging.INFO)
    settings = PeerSettings(
        coordinator=args.coordinator,
        data_dir=args.data_dir,
        slots=args.slots,
        drain_grace=max(args.stop_grace, 0.0),
        egress=EgressConfig(allow_private=args.allow_private),
        **({"name": args.name} if args.name else {}),
    )
    try:
        agent = Agent(settings)
    except OSError as exc:
        raise UsageError(f"cannot use data dir {args.data_dir}: {exc.strerror or exc}") from exc
    except IdentityError as exc:
        raise UsageError(str(exc)) from exc
    _run_until_signal(agent.run)
    return EXIT_OK


async def _with_session(fn: Callable[[aiohttp.ClientSession], Awaitable[object]]) -> object:
    async with aiohttp.ClientSession() as session:
        return await fn(session)


def _cmd_job_submit(args: argparse.Namespace) -> int:
    try:
        urls = [validate_url(u) for u in args.urls]
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    job_input = {"urls": urls, "depth": args.depth}
    job_id = asyncio.run(_with_session(lambda s: owner.submit(s, args.coordinator, args.workload, job_input)))
    print(job_id)
    return EXIT_OK


def _cmd_job_status(args: argparse.Namespace) -> int:
    status = asyncio.run(_with_session(lambda s: owner.status(s, args.coordinator, args.job_id)))
    if args.json:
        print(json.dumps({f: getattr(status, f) for f in status.__slots__}))
    else:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(status.counts.items()))
        print(
            f"job {status.job_id} ({status.workload}) {status.state}: {status.items_done}/{status.items_total} URLs checked, "
            f"{status.units_done}/{status.units_total} units" + (f"; {counts}" if counts else "")
        )
    return EXIT_OK


def _cmd_job_results(args: argparse.Namespace) -> int:
    items = asyncio.run(_with_session(lambda s: owner.results(s, args.coordinator, args.job_id)))
    try:
        write_report(items, args.fmt, args.output)
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    return EXIT_OK
