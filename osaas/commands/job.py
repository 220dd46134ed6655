"""`osaas job submit | list | status | results | logs | cancel`: a project owner's jobs, each
request signed with the owner's key (`--key`, default in the owner's config dir)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from osaas import job_files, owner
from osaas.check import CheckError, validate_url
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
from overlay import wire
from overlay.wire import JobStatus
from workloads import records, renderers

RESULT_FORMATS = ("jsonl", "csv", "text", "html")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    job = commands.add_parser("job", help="submit and follow jobs").add_subparsers(metavar="ACTION")
    submit = job.add_parser(
        "submit",
        help="submit a job of seed URLs (a link check by default), or of a file of items or records; prints its id",
    )
    submit.add_argument("urls", nargs="*", metavar="URL")
    files = submit.add_mutually_exclusive_group()
    files.add_argument(
        "--items-file",
        type=Path,
        metavar="FILE",
        help='for a bundle whose jobs take items (input = "items"): one item per line',
    )
    files.add_argument(
        "--records-file",
        type=Path,
        metavar="FILE",
        help='for a bundle whose jobs take records (input = "records"): JSON Lines, one object per line',
    )
    submit.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    submit.add_argument(
        "--bundle",
        type=_bundle_spec,
        default=("linkcheck", None),
        metavar="NAME[@VERSION]",
        help="the bundle that runs the job (default linkcheck, following its rollout)",
    )
    submit.add_argument("--depth", type=_non_negative, default=None)
    submit.add_argument(
        "--vantage",
        type=_positive,
        default=None,
        metavar="K",
        help="for a bundle with vantage points (probe): peers in K networks do each URL (default: the coordinator's, 5)",
    )
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

    results = job.add_parser(
        "results", help="download a job's results: JSON Lines or CSV for any workload, text or HTML where it has them"
    )
    results.add_argument("job_id", type=_positive, metavar="ID")
    results.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    results.add_argument(
        "--format", choices=(*RESULT_FORMATS, "json"), default=None, dest="fmt", help="json: the same as jsonl"
    )
    results.add_argument("--output", type=Path)
    _add_key_argument(results)
    results.set_defaults(run=_cmd_job_results)

    logs = job.add_parser("logs", help="the stderr tails of a job's failed units, as the peers captured them")
    logs.add_argument("job_id", type=_positive, metavar="ID")
    logs.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    _add_key_argument(logs)
    logs.set_defaults(run=_cmd_job_logs)

    cancel = job.add_parser("cancel", help="stop a running job (what it checked so far stays)")
    cancel.add_argument("job_id", type=_positive, metavar="ID")
    cancel.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    _add_key_argument(cancel)
    cancel.set_defaults(run=_cmd_job_cancel)

    export = job.add_parser(
        "export",
        help="everything the coordinator keeps of a job, as JSON Lines: its status, then every results row, then"
        " its failed units' logs (each line a map with its kind: job, result or log)",
    )
    export.add_argument("job_id", type=_positive, metavar="ID")
    export.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    export.add_argument("--output", type=Path, help="write it here instead of standard output")
    _add_key_argument(export)
    export.set_defaults(run=_cmd_job_export)

    delete = job.add_parser(
        "delete",
        help="delete a job's results and logs now (a running job is cancelled first); its status stays, as deleted."
        " Export it first to keep a copy. Coordinators delete finished jobs' results by themselves after a while"
        " (coordinator serve --keep-results)",
    )
    delete.add_argument("job_id", type=_positive, metavar="ID")
    delete.add_argument("--coordinator", type=_coordinator_url, required=True, metavar="URL")
    _add_key_argument(delete)
    delete.set_defaults(run=_cmd_job_delete)


def _cmd_job_submit(args: argparse.Namespace) -> int:
    job_input = _job_input(args)
    name, version = args.bundle
    key = _load_key(args.key)
    job_id = asyncio.run(_with_session(lambda s: owner.submit(s, args.coordinator, key, name, job_input, version)))
    print(job_id)
    return EXIT_OK


def _job_input(args: argparse.Namespace) -> dict[str, Any]:
    """The job's input from the command line: seed URLs, or the items or records of a file."""
    from_file = args.items_file or args.records_file
    if from_file is not None:
        if args.urls:
            raise UsageError("give either URLs or a file of items or records, not both")
        if args.depth is not None or args.vantage is not None:
            raise UsageError("--depth and --vantage are for jobs of URLs, not of items or records")
        if args.items_file is not None:
            job_input: dict[str, Any] = {"items": job_files.read_items(args.items_file)}
        else:
            job_input = {"records": job_files.read_records(args.records_file)}
        if len(wire.encode(job_input)) > wire.MAX_BODY - 64 * 1024:  # numbers grow as msgpack
            raise UsageError(f"{from_file} is too large to send in one request; split it into several jobs")
        return job_input
    if not args.urls:
        raise UsageError("give the job's seed URLs, or --items-file or --records-file")
    try:
        urls = [validate_url(u) for u in args.urls]
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    job_input = {"urls": urls, "depth": args.depth}
    if args.vantage is not None:
        job_input["vantage"] = args.vantage
    return job_input


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


def _cmd_job_delete(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    status = asyncio.run(_with_session(lambda s: owner.delete(s, args.coordinator, key, args.job_id)))
    print(_describe(status))
    return EXIT_OK


def _cmd_job_export(args: argparse.Namespace) -> int:
    key = _load_key(args.key)

    async def fetch(session: Any) -> tuple[JobStatus, list[str], list[dict[str, Any]], list[wire.UnitLog]]:
        status = await owner.status(session, args.coordinator, key, args.job_id)
        columns, rows = await owner.results_with_columns(session, args.coordinator, key, args.job_id)
        return status, columns, rows, await owner.logs(session, args.coordinator, key, args.job_id)

    status, columns, rows, logs = asyncio.run(_with_session(fetch))
    lines = [{"kind": "job", "status": _as_json(status), "columns": columns}]
    lines += [{"kind": "result", "row": row} for row in rows]
    lines += [{"kind": "log", "log": {f: getattr(entry, f) for f in entry.__slots__}} for entry in logs]
    text = "".join(json.dumps(line, ensure_ascii=False, default=_bytes_as_hex) + "\n" for line in lines)
    _write_out(text, args.output)
    return EXIT_OK


def _write_out(text: str, output: Path | None) -> None:
    """`text` to `output`, or to standard output without one."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from exc


def _bytes_as_hex(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _as_json(status: JobStatus) -> dict[str, Any]:
    return {f: getattr(status, f) for f in status.__slots__}


def _describe(status: JobStatus) -> str:
    """One line: the job's id, bundle, state, progress, results so far, and when it was
    created and finished (or cancelled)."""
    counts = ", ".join(f"{n} {r}" for r, n in sorted(status.counts.items()))
    line = (
        f"job {status.job_id} ({status.workload}) {status.state}: {status.progress} done, "
        f"{status.units_done}/{status.units_total} units" + (f"; {counts}" if counts else "")
    )
    line += f"; created {_when(status.created_at)}"
    if status.finished_at is not None:
        line += f", {'cancelled' if status.state == 'cancelled' else 'finished'} {_when(status.finished_at)}"
    if status.state == "deleted":
        line += "; its results and logs were deleted"
    return line + (f" ({status.limited})" if status.limited else "")


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _cmd_job_results(args: argparse.Namespace) -> int:
    key = _load_key(args.key)

    async def fetch(session: Any) -> tuple[JobStatus, list[str], list[dict[str, Any]]]:
        status = await owner.status(session, args.coordinator, key, args.job_id)
        columns, rows = await owner.results_with_columns(session, args.coordinator, key, args.job_id)
        return status, columns, rows

    status, columns, rows = asyncio.run(_with_session(fetch))
    # Without --format: the workload's text where it has one, else JSON Lines.
    fmt = {"json": "jsonl", None: "text" if "text" in renderers.formats(status.workload, columns) else "jsonl"}.get(
        args.fmt, args.fmt
    )
    try:
        text = renderers.render(status.workload, columns, rows, fmt)
    except renderers.UnknownFormat as exc:
        raise UsageError(str(exc)) from exc
    _write_out(text, args.output)
    return EXIT_OK


def _cmd_job_logs(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    entries = asyncio.run(_with_session(lambda s: owner.logs(s, args.coordinator, key, args.job_id)))
    if not entries:
        print(f"job {args.job_id}: no failed unit sent a log")
    for entry in entries:
        print(
            f"== unit {entry.unit_id}, exit {entry.exit_code}, peer {entry.peer_id[:12]}, {_when(entry.at)}:"
            f" {records.plain(entry.error or '')}"
        )
        print("\n".join(records.plain(line) for line in entry.log.splitlines()))
    return EXIT_OK
