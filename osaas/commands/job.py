"""`osaas job submit | list | status | results | cancel`: a project owner's jobs, each request
signed with the owner's key (`--key`, default in the owner's config dir)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from osaas import owner
from osaas.check import CheckError, validate_url, write_report
from osaas.commands._shared import (
    EXIT_OK,
    UsageError,
    _add_key_argument,
    _bundle_spec,
    _coordinator_url,
    _load_key,
    _non_negative,
    _positive,
    _with_session,
)
from overlay.wire import JobStatus
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
    _add_key_argument(submit)
    submit.set_defaults(run=_cmd_job_submit)

    listing = job.add_parser("list", help="your jobs (every job for an operator or a viewer)")
    listing.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    listing.add_argument("--json", action="store_true")
    _add_key_argument(listing)
    listing.set_defaults(run=_cmd_job_list)

    status = job.add_parser("status", help="show a job's progress")
    status.add_argument("job_id", type=_positive, metavar="ID")
    status.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    status.add_argument("--json", action="store_true")
    _add_key_argument(status)
    status.set_defaults(run=_cmd_job_status)

    results = job.add_parser("results", help="download a job's report")
    results.add_argument("job_id", type=_positive, metavar="ID")
    results.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    results.add_argument("--format", choices=report.FORMATS, default="text", dest="fmt")
    results.add_argument("--output", type=Path)
    _add_key_argument(results)
    results.set_defaults(run=_cmd_job_results)

    cancel = job.add_parser("cancel", help="stop a running job (what it checked so far stays)")
    cancel.add_argument("job_id", type=_positive, metavar="ID")
    cancel.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    _add_key_argument(cancel)
    cancel.set_defaults(run=_cmd_job_cancel)


def _cmd_job_submit(args: argparse.Namespace) -> int:
    try:
        urls = [validate_url(u) for u in args.urls]
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    job_input = {"urls": urls, "depth": args.depth}
    name, version = args.bundle
    key = _load_key(args.key)
    job_id = asyncio.run(_with_session(lambda s: owner.submit(s, args.coordinator, key, name, job_input, version)))
    print(job_id)
    return EXIT_OK


def _cmd_job_list(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    jobs = asyncio.run(_with_session(lambda s: owner.jobs(s, args.coordinator, key)))
    for status in jobs:
        print(json.dumps(_as_json(status)) if args.json else _describe(status))
    return EXIT_OK


def _cmd_job_status(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    status = asyncio.run(_with_session(lambda s: owner.status(s, args.coordinator, key, args.job_id)))
    print(json.dumps(_as_json(status)) if args.json else _describe(status))
    return EXIT_OK


def _cmd_job_cancel(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    status = asyncio.run(_with_session(lambda s: owner.cancel(s, args.coordinator, key, args.job_id)))
    print(_describe(status))
    return EXIT_OK


def _as_json(status: JobStatus) -> dict[str, Any]:
    return {f: getattr(status, f) for f in status.__slots__}


def _describe(status: JobStatus) -> str:
    """One line: the job's id, bundle, state, progress, results so far, and when it was
    created and finished (or cancelled)."""
    counts = ", ".join(f"{n} {r}" for r, n in sorted(status.counts.items()))
    line = (
        f"job {status.job_id} ({status.workload}) {status.state}: {status.items_done}/{status.items_total} URLs checked, "
        f"{status.units_done}/{status.units_total} units" + (f"; {counts}" if counts else "")
    )
    line += f"; created {_when(status.created_at)}"
    if status.finished_at is not None:
        line += f", {'cancelled' if status.state == 'cancelled' else 'finished'} {_when(status.finished_at)}"
    return line + (f" ({status.limited})" if status.limited else "")


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _cmd_job_results(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    items = asyncio.run(_with_session(lambda s: owner.results(s, args.coordinator, key, args.job_id)))
    try:
        write_report(items, args.fmt, args.output)
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    return EXIT_OK
