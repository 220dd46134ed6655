"""`osaas job submit | status | results`: a project owner's jobs."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from osaas import owner
from osaas.check import CheckError, validate_url, write_report
from osaas.commands._shared import (
    EXIT_OK,
    UsageError,
    _bundle_spec,
    _coordinator_url,
    _non_negative,
    _positive,
    _with_session,
)
from workloads import linkcheck_report as report


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    job = commands.add_parser("job", help="submit and follow jobs").add_subparsers(metavar="ACTION")
    submit = job.add_parser("submit", help="submit a link-check job; prints its id")
    submit.add_argument("urls", nargs="+", metavar="URL")
    submit.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    submit.add_argument(
        "--bundle",
        type=_bundle_spec,
        default=("linkcheck", None),
        metavar="NAME[@VERSION]",
        help="the bundle that runs the job (default linkcheck, following its rollout)",
    )
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


def _cmd_job_submit(args: argparse.Namespace) -> int:
    try:
        urls = [validate_url(u) for u in args.urls]
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    job_input = {"urls": urls, "depth": args.depth}
    name, version = args.bundle
    job_id = asyncio.run(_with_session(lambda s: owner.submit(s, args.coordinator, name, job_input, version)))
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
